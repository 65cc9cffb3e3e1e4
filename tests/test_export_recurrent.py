"""ONNX export of Mamba-2, RWKV-4 and RWKV-7: fp32 parity with the reference implementations
(transformers; the ``rwkv`` package) and agentd's torch backends (prefill, a second chunk, decode),
batched decode and exact state round trip, quantised greedy agreement, manifest state layout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend, prefix_agreement, teacher_forced_agreement  # noqa: E402
from _llama_fixtures import greedy  # noqa: E402

from agentd.formats import open_checkpoint  # noqa: E402
from agentd.errors import InvalidArgument  # noqa: E402
from agentd.registry import spec_for  # noqa: E402

ATOL = 1e-3
PROMPT = [5, 17, 99, 3, 42, 7, 100]
CHUNK = [11, 64]  # shorter than Mamba-2's conv window: the conv state must carry across chunks
DECODED = [9, 33, 0]
VARIANTS = ("mamba2", "mamba2-tied", "rwkv4", "rwkv7")


def _reference_logits(name: str, source: object, ids: list[int]) -> np.ndarray:
    """``(T, V)`` logits of one full forward by the implementation nobody here wrote."""
    if name == "rwkv7":
        logits, _ = source.forward(ids, None, full_output=True)  # the rwkv package's RWKV_x070
        return logits.numpy()
    with torch.no_grad():
        return source(torch.tensor([ids]), use_cache=False).logits[0].float().numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """Variant -> (checkpoint dir, reference model), built lazily and shared."""
    from _rwkv_fixtures import make_hf_rwkv4, make_rwkv7_pth, rwkv7_reference
    from _ssm_fixtures import make_hf_mamba2

    from agentd.plugins.linear.convert import convert_rwkv7_pth

    def build(name: str) -> tuple[Path, object]:
        directory = tmp_path_factory.mktemp(name)
        if name == "mamba2":
            return directory, make_hf_mamba2(directory)
        if name == "mamba2-tied":
            return directory, make_hf_mamba2(directory, tie_word_embeddings=True, time_step_limit=(0.01, 2.0))
        if name == "rwkv4":
            return directory, make_hf_rwkv4(directory)  # rescale_every=2: the ×½ blocks are exercised
        pth = make_rwkv7_pth(directory / "tiny.pth", hidden=64, layers=2, head_size=32)
        return convert_rwkv7_pth(pth, directory / "converted"), rwkv7_reference(pth)

    class Lazy(dict):
        def __missing__(self, name: str) -> tuple[Path, object]:
            self[name] = build(name)
            return self[name]

    return Lazy()


def torch_backend(directory: Path):
    checkpoint = open_checkpoint(directory)
    spec = spec_for(checkpoint.architecture)
    return spec.load(checkpoint, spec.choose_quant(checkpoint))


@pytest.mark.parametrize("variant", VARIANTS)
def test_fp32_matches_reference_and_torch_backend(models, tmp_path, variant: str) -> None:
    directory, reference_model = models[variant]
    ours, theirs = onnx_backend(export(directory, tmp_path / "bundle")), torch_backend(directory)
    full = PROMPT + CHUNK + DECODED
    reference = _reference_logits(variant.split("-")[0], reference_model, full)

    state, torch_state = ours.new_state(), theirs.new_state()
    got = [ours.prefill(np.array(PROMPT), state, all_logits=True)]
    np.testing.assert_allclose(got[0], theirs.prefill(np.array(PROMPT), torch_state, all_logits=True), atol=ATOL, rtol=0)
    got.append(ours.prefill(np.array(CHUNK), state, all_logits=True))
    np.testing.assert_allclose(got[-1], theirs.prefill(np.array(CHUNK), torch_state, all_logits=True), atol=ATOL, rtol=0)
    for token in DECODED:
        step = ours.decode(np.array([token]), [state])
        np.testing.assert_allclose(step, theirs.decode(np.array([token]), [torch_state]), atol=ATOL, rtol=0)
        got.append(step)
    np.testing.assert_allclose(np.concatenate(got), reference, atol=ATOL, rtol=0)
    assert state.tokens == len(full)
    assert ours.prefill(np.array(PROMPT), ours.new_state()).shape == (1, ours.info.vocab_size)


@pytest.mark.parametrize("variant", ["mamba2", "rwkv4", "rwkv7"])
def test_batched_decode_state_round_trip_and_fixed_size(models, tmp_path, variant: str) -> None:
    directory, _ = models[variant]
    ours = onnx_backend(export(directory, tmp_path / "bundle"))
    short, long = ours.new_state(), ours.new_state()
    ours.prefill(np.array(PROMPT[:2]), short)
    ours.prefill(np.array(PROMPT), long)
    restored = ours.load_state(ours.save_state(long))
    assert ours.state_bytes(long) == ours.state_bytes(short) == ours.info.state_bytes_per_sequence > 0
    batched = ours.decode(np.array([8, 9]), [short, long])
    alone = ours.decode(np.array([9]), [restored])
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5, rtol=0)
    assert (short.tokens, long.tokens, restored.tokens) == (3, len(PROMPT) + 1, len(PROMPT) + 1)
    with pytest.raises(InvalidArgument):
        ours.load_state(ours.save_state(long)[:-4])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["mamba2", "rwkv4", "rwkv7"])
@pytest.mark.parametrize("quant", ["fp16", "int8", "int4"])
def test_quantised_greedy_agreement_with_fp32(models, tmp_path, variant: str, quant: str, capsys) -> None:
    import onnx

    directory, _ = models[variant]
    fp32 = onnx_backend(export(directory, tmp_path / "fp32"))
    bundle = export(directory, tmp_path / quant, quant=quant, block_size=16)
    quantised = onnx_backend(bundle)
    prompt = PROMPT[:4]
    reference = greedy(fp32, prompt, 64)
    forced = teacher_forced_agreement(fp32, quantised, prompt, reference)
    with capsys.disabled():
        print(f"\n[{quant}] random tiny {variant}, 64 greedy tokens: prefix agreement "
              f"{prefix_agreement(reference, greedy(quantised, prompt, 64))}/64, teacher-forced top-1 agreement {forced:.2f}")
    assert forced >= {"fp16": 0.95, "int8": 0.5, "int4": 0.3}[quant]  # catches a broken graph (chance is ~1/100), not a lossy one
    if quant == "fp16":
        return
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    float_params = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    kept = {  # decay / SSM parameters stay float32
        "mamba2": {"backbone.layers.0.mixer.A", "backbone.layers.0.mixer.D", "backbone.layers.0.mixer.dt_bias"},
        "rwkv4": {"rwkv.blocks.0.attention.decay", "rwkv.blocks.0.attention.time_first"},
        "rwkv7": {"blocks.0.att.w0", "blocks.0.att.w1", "blocks.0.att.w2"},
    }[variant]
    assert kept <= float_params
    assert {node.op_type for node in graph.node} & {"MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul"}


@pytest.mark.parametrize(
    ("variant", "first", "shape"),
    [
        ("mamba2", ["past_conv.0", "past_ssm.0"], ["batch_size", 4, 16, 8]),  # (H, P, N)
        ("rwkv4", ["past_att_x.0", "past_wkv_num.0", "past_wkv_den.0", "past_wkv_max.0", "past_ffn_x.0"], ["batch_size", 32]),
        ("rwkv7", ["past_att_x.0", "past_wkv.0", "past_ffn_x.0"], ["batch_size", 64]),
    ],
)
def test_manifest_lists_the_state_and_checker_passes(models, tmp_path, variant: str, first: list[str], shape: list) -> None:
    import onnx

    directory, _ = models[variant]
    bundle = export(directory, tmp_path / "bundle")
    manifest = open_checkpoint(bundle).manifest
    section = manifest["onnx"]
    assert (section["kind"], section["cache"]) == ("decoder", "recurrent")
    assert [entry["input"] for entry in section["state"]][: len(first)] == first
    checked = section["state"][1 if variant == "mamba2" else 0]  # Mamba-2's ssm state; RWKV's token shift
    assert checked["shape"] == shape
    if variant == "rwkv4":  # the running maximum of an empty WKV starts at -1e38, not 0
        assert [entry.get("initial", 0.0) for entry in section["state"][:5]] == [0.0, 0.0, 0.0, -1e38, 0.0]
    assert "genai_config.json" not in manifest["files"]
    onnx.checker.check_model(str(bundle / "model.onnx"))
