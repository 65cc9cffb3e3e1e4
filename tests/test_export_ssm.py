"""ONNX export of Mamba: fp32 parity with transformers and agentd's torch backend (prefill,
chunked prefill, decode), batched decode and exact state round trip, quantised agreement."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend, prefix_agreement, teacher_forced_agreement  # noqa: E402
from _llama_fixtures import greedy  # noqa: E402
from _ssm_fixtures import make_hf_mamba  # noqa: E402

from agentd.formats import open_checkpoint  # noqa: E402
from agentd.errors import InvalidArgument  # noqa: E402

ATOL = 1e-3
PROMPT = [5, 17, 99, 3, 42, 7, 100]
CHUNK = [11, 64]  # shorter than the conv kernel's window: the conv state must carry across chunks


def torch_backend(directory: Path):
    from agentd.plugins.ssm.mamba import load

    return load(open_checkpoint(directory))


@pytest.fixture(scope="module")
def mamba(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    variants = {"tied": {}, "untied-bias": {"tie_word_embeddings": False, "use_bias": True}}
    out = {}
    for name, overrides in variants.items():
        directory = tmp_path_factory.mktemp(f"mamba-{name}")
        out[name] = (directory, make_hf_mamba(directory, **overrides))
    return out


@pytest.mark.parametrize("variant", ["tied", "untied-bias"])
def test_fp32_mamba_matches_transformers_and_torch_backend(mamba, tmp_path, variant: str) -> None:
    directory, hf = mamba[variant]
    ours, theirs = onnx_backend(export(directory, tmp_path / "bundle")), torch_backend(directory)
    full = PROMPT + CHUNK + [9, 33, 0]
    with torch.no_grad():
        reference = hf(torch.tensor([full])).logits[0].numpy()  # (T, V) from transformers

    state, torch_state = ours.new_state(), theirs.new_state()
    got = [ours.prefill(np.array(PROMPT), state, all_logits=True)]
    np.testing.assert_allclose(got[0], theirs.prefill(np.array(PROMPT), torch_state, all_logits=True), atol=ATOL, rtol=0)
    got.append(ours.prefill(np.array(CHUNK), state, all_logits=True))
    theirs.prefill(np.array(CHUNK), torch_state)
    for token in full[len(PROMPT) + len(CHUNK) :]:
        step = ours.decode(np.array([token]), [state])
        np.testing.assert_allclose(step, theirs.decode(np.array([token]), [torch_state]), atol=ATOL, rtol=0)
        got.append(step)
    np.testing.assert_allclose(np.concatenate(got), reference, atol=ATOL, rtol=0)
    assert state.tokens == len(full)
    # Prefill without all_logits returns the last position only.
    assert ours.prefill(np.array(PROMPT), ours.new_state()).shape == (1, ours.info.vocab_size)


def test_batched_decode_state_round_trip_and_fixed_size(mamba, tmp_path) -> None:
    directory, _ = mamba["tied"]
    ours = onnx_backend(export(directory, tmp_path / "bundle"))
    short, long = ours.new_state(), ours.new_state()
    ours.prefill(np.array(PROMPT[:2]), short)
    ours.prefill(np.array(PROMPT), long)
    restored = ours.load_state(ours.save_state(long))
    assert ours.state_bytes(long) == ours.state_bytes(short) == ours.info.state_bytes_per_sequence > 0
    assert ours.info.state_bytes_per_token == 0
    batched = ours.decode(np.array([8, 9]), [short, long])
    alone = ours.decode(np.array([9]), [restored])
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5, rtol=0)
    assert (short.tokens, long.tokens, restored.tokens) == (3, len(PROMPT) + 1, len(PROMPT) + 1)
    with pytest.raises(InvalidArgument):
        ours.load_state(b"garbage")
    with pytest.raises(InvalidArgument):
        ours.load_state(ours.save_state(long)[:-4])


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantised_mamba_greedy_agreement_with_fp32(mamba, tmp_path, quant: str, capsys) -> None:
    import onnx

    directory, _ = mamba["tied"]
    fp32 = onnx_backend(export(directory, tmp_path / "fp32"))
    bundle = export(directory, tmp_path / quant, quant=quant, block_size=16)
    quantised = onnx_backend(bundle)
    prompt = PROMPT[:4]
    reference = greedy(fp32, prompt, 64)
    forced = teacher_forced_agreement(fp32, quantised, prompt, reference)
    with capsys.disabled():
        print(f"\n[{quant}] random tiny Mamba, 64 greedy tokens: prefix agreement "
              f"{prefix_agreement(reference, greedy(quantised, prompt, 64))}/64, teacher-forced top-1 agreement {forced:.2f}")
    assert forced >= {"int8": 0.5, "int4": 0.3}[quant]  # catches a broken graph (chance is 1/128), not a lossy one
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    # dt_proj and the SSM parameters stay float32.
    assert any(node.op_type == "MatMul" and "dt_proj" in node.name for node in graph.node)
    float_params = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    assert {"backbone.layers.0.mixer.A", "backbone.layers.0.mixer.D"} <= float_params


def test_mamba_bundle_manifest_and_checker(mamba, tmp_path) -> None:
    import onnx

    directory, _ = mamba["tied"]
    bundle = export(directory, tmp_path / "bundle")
    manifest = open_checkpoint(bundle).manifest
    section = manifest["onnx"]
    assert (section["kind"], section["cache"]) == ("decoder", "recurrent")
    assert [entry["input"] for entry in section["state"]][:2] == ["past_conv.0", "past_ssm.0"]
    assert section["state"][1]["shape"] == ["batch_size", 8, 64]  # (N, D = 2·hidden)
    assert "genai_config.json" not in manifest["files"]
    onnx.checker.check_model(str(bundle / "model.onnx"))
