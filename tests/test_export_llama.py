"""ONNX export of Llama-family decoders: parity with transformers and agentd's torch backend,
quantised greedy agreement, onnxruntime-genai interoperability and the bundle's guarantees."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend, prefix_agreement, register_onnx_plugins, teacher_forced_agreement  # noqa: E402
from _llama_fixtures import greedy, hf_logits, load_backend, save_variant  # noqa: E402

from agentd.formats import open_checkpoint  # noqa: E402
from agentd.errors import InvalidArgument, UnsupportedArchitecture  # noqa: E402

ATOL = 1e-3
PROMPT = [5, 17, 99, 3, 42, 7, 200]
CHUNK = [11, 64, 128]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """Variant name -> (checkpoint dir, HF model), built lazily and shared."""
    cache: dict[str, tuple[Path, object]] = {}

    class Lazy(dict):
        def __missing__(self, name: str):
            directory = tmp_path_factory.mktemp(name)
            cache[name] = (directory, save_variant(name, directory))
            return cache[name]

    return Lazy()


@pytest.mark.parametrize("variant", ["llama", "llama-tied", "llama3-rope", "llama3-rope-tied-headdim", "qwen2", "qwen2-tied"])
def test_fp32_logits_match_transformers_and_torch_backend(checkpoints, tmp_path, variant: str) -> None:
    directory, hf = checkpoints[variant]
    bundle = export(directory, tmp_path / "bundle")
    ours, torch_backend = onnx_backend(bundle), load_backend(directory)
    full = PROMPT + CHUNK + [9, 33]
    reference = hf_logits(hf, full)  # (T, V) from transformers

    state, torch_state = ours.new_state(), torch_backend.new_state()
    got = [ours.prefill(np.array(PROMPT), state, all_logits=True)]
    torch_prefill = torch_backend.prefill(np.array(PROMPT), torch_state, all_logits=True)
    np.testing.assert_allclose(got[0], torch_prefill, atol=ATOL, rtol=0)
    # A second prefill chunk over a non-empty cache, then single-token decode steps.
    got.append(ours.prefill(np.array(CHUNK), state, all_logits=True))
    torch_backend.prefill(np.array(CHUNK), torch_state)
    for token in full[len(PROMPT) + len(CHUNK) :]:
        step = ours.decode(np.array([token]), [state])
        np.testing.assert_allclose(step, torch_backend.decode(np.array([token]), [torch_state]), atol=ATOL, rtol=0)
        got.append(step)
    np.testing.assert_allclose(np.concatenate(got), reference, atol=ATOL, rtol=0)
    assert state.length == len(full)


def test_decode_steps_match_torch_backend(checkpoints, tmp_path) -> None:
    directory, _ = checkpoints["qwen2"]
    ours, theirs = onnx_backend(export(directory, tmp_path / "bundle")), load_backend(directory)
    a, b = ours.new_state(), theirs.new_state()
    ours.prefill(np.array(PROMPT), a)
    theirs.prefill(np.array(PROMPT), b)
    for token in (3, 250, 17, 0):
        np.testing.assert_allclose(ours.decode(np.array([token]), [a]), theirs.decode(np.array([token]), [b]), atol=ATOL, rtol=0)


def test_batched_decode_over_different_lengths_and_state_round_trip(checkpoints, tmp_path) -> None:
    directory, _ = checkpoints["llama"]
    ours = onnx_backend(export(directory, tmp_path / "bundle"))
    short, long = ours.new_state(), ours.new_state()
    ours.prefill(np.array(PROMPT[:2]), short)
    ours.prefill(np.array(PROMPT), long)
    restored = ours.load_state(ours.save_state(long))
    # state_bytes is what is allocated: whole chunks of capacity, at least the tokens held.
    assert ours.state_bytes(long) == ours.info.state_bytes_per_token * long.capacity >= ours.info.state_bytes_per_token * len(PROMPT)
    batched = ours.decode(np.array([8, 9]), [short, long])
    alone = ours.decode(np.array([9]), [restored])
    np.testing.assert_array_equal(batched[1], alone[0])
    assert (short.length, long.length) == (3, len(PROMPT) + 1)
    with pytest.raises(InvalidArgument):
        ours.load_state(b"garbage")


def test_decode_after_1000_tokens_matches_torch_and_updates_the_cache_in_place(tmp_path) -> None:
    from _llama_fixtures import make_hf_model

    directory = tmp_path / "long"
    make_hf_model("llama", max_position_embeddings=2048).save_pretrained(directory, safe_serialization=True)
    ours, theirs = onnx_backend(export(directory, tmp_path / "bundle")), load_backend(directory)
    prompt = np.random.default_rng(0).integers(0, 256, size=1000)
    a, b = ours.new_state(), theirs.new_state()
    ours.prefill(prompt[:600], a)
    ours.prefill(prompt[600:], a)  # a second chunk over a cache that must grow
    theirs.prefill(prompt, b)
    buffers = (a.keys.ctypes.data, a.values.ctypes.data)
    for token in (3, 250, 17, 0, 99):
        np.testing.assert_allclose(ours.decode(np.array([token]), [a]), theirs.decode(np.array([token]), [b]), atol=ATOL, rtol=0)
    # Decoding wrote into the same buffers: no cache copy per token.
    assert (a.keys.ctypes.data, a.values.ctypes.data) == buffers and a.length == 1005
    restored = ours.load_state(ours.save_state(a))
    np.testing.assert_array_equal(ours.decode(np.array([7]), [restored]), ours.decode(np.array([7]), [a]))


@pytest.mark.parametrize("quant", ["fp16", "int8", "int4"])
def test_quantised_greedy_agreement_with_fp32(checkpoints, tmp_path, quant: str, capsys) -> None:
    directory, _ = checkpoints["llama"]
    fp32 = onnx_backend(export(directory, tmp_path / "fp32"))
    quantised = onnx_backend(export(directory, tmp_path / quant, quant=quant, block_size=32))
    prompt = PROMPT[:4]
    reference = greedy(fp32, prompt, 64)
    output = greedy(quantised, prompt, 64)
    forced = teacher_forced_agreement(fp32, quantised, prompt, reference)
    with capsys.disabled():
        print(f"\n[{quant}] random tiny Llama, 64 greedy tokens: prefix agreement {prefix_agreement(reference, output)}/64, "
              f"teacher-forced top-1 agreement {forced:.2f}")
    # Random weights give near-tied logits, so quantisation flips many argmaxes;
    # these floors catch a broken graph (chance level is 1/256), not a lossy one.
    assert forced >= {"fp16": 0.95, "int8": 0.5, "int4": 0.3}[quant]


def test_onnxruntime_genai_generates_the_same_greedy_tokens(checkpoints, tmp_path) -> None:
    og = pytest.importorskip("onnxruntime_genai")
    directory, _ = checkpoints["llama"]
    bundle = export(directory, tmp_path / "bundle")
    model = og.Model(str(bundle))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(PROMPT) + 24)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([PROMPT], dtype=np.int32))
    tokens: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert tokens == greedy(onnx_backend(bundle), PROMPT, 24) == greedy(load_backend(directory), PROMPT, 24)


def test_bundle_layout_manifest_and_checker(checkpoints, tmp_path) -> None:
    import onnx

    directory, _ = checkpoints["qwen2"]
    bundle = export(directory, tmp_path / "bundle", quant="int4", block_size=16)
    manifest = open_checkpoint(bundle).manifest  # opening verifies every sha256
    assert manifest is not None and manifest["dtype"] == "int4"
    section = manifest["onnx"]
    assert (section["kind"], section["quantization"], section["block_size"]) == ("decoder", "int4", 16)
    assert section["int4_blocks"] == "zero_point"  # a float source: integer zero points, MatMulNBits' fast path
    names = {value["name"] for value in section["graphs"]["model"]["inputs"]}
    assert {"input_ids", "attention_mask", "position_ids", "past_key_values.0.key", "past_key_values.1.value"} <= names
    assert {value["name"] for value in section["graphs"]["model"]["outputs"]} >= {"logits", "present.1.key"}
    assert [entry["input"] for entry in section["state"]][:2] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "config.json"} <= set(manifest["files"])
    onnx.checker.check_model(str(bundle / "model.onnx"))
    ops = {node.op_type for node in onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph.node}
    assert {"GroupQueryAttention", "MatMulNBits", "GatherBlockQuantized", "SkipSimplifiedLayerNormalization"} <= ops
    genai = json.loads((bundle / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert (bundle / "model.onnx.data").stat().st_size < 0.35 * export(directory, tmp_path / "fp32").joinpath("model.onnx.data").stat().st_size


def test_existing_output_is_refused_without_force(checkpoints, tmp_path) -> None:
    directory, _ = checkpoints["llama"]
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidArgument, match="already exists"):
        export(directory, out)
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces a bundle, never a directory of the user's (issue 12).
    with pytest.raises(InvalidArgument, match="is not a bundle"):
        export(directory, out, quant="fp16", force=True)
    assert (out / "keep.txt").read_text() == "mine"
    bundle = export(directory, tmp_path / "bundle2")
    export(directory, bundle, quant="fp16", force=True)
    assert open_checkpoint(bundle).manifest["dtype"] == "float16"


def test_interrupted_export_leaves_nothing(checkpoints, tmp_path, monkeypatch) -> None:
    from agentd.exporters.onnx import quantize

    directory, _ = checkpoints["llama"]

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, "quantize_model", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export(directory, tmp_path / "bundle", quant="int8")
    assert list(tmp_path.iterdir()) == []


def test_user_errors_are_one_clear_error(checkpoints, tmp_path) -> None:
    from agentd.exporter_registry import ExportOptions, check_options, exporter_for

    register_onnx_plugins()
    directory, _ = checkpoints["llama"]
    spec = exporter_for("onnx", "LlamaForCausalLM")
    with pytest.raises(InvalidArgument, match="quant"):
        check_options(spec, ExportOptions(quant="int3"))
    with pytest.raises(InvalidArgument, match="block-size"):
        check_options(spec, ExportOptions(quant="int4", block_size=24))
    with pytest.raises(UnsupportedArchitecture, match="cannot be exported to onnx"):
        exporter_for("onnx", "GPT2LMHeadModel")
    with pytest.raises(InvalidArgument, match="target"):
        exporter_for("tflite", "LlamaForCausalLM")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InvalidArgument, match="not a directory|not writable"):
        export(directory, blocker / "bundle")


def test_cli_export_and_exit_codes(checkpoints, tmp_path, monkeypatch, capsys) -> None:
    from agentd.cli import main

    register_onnx_plugins()
    directory, _ = checkpoints["llama"]

    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["agentd", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return exit_info.value.code

    assert run("export", str(directory), "-o", str(tmp_path / "b"), "--quant", "int8") == 0
    captured = capsys.readouterr()
    assert "int8" in captured.out and "quantising" in captured.err
    assert open_checkpoint(tmp_path / "b").manifest["onnx"]["quantization"] == "int8"
    assert run("export", str(directory), "-o", str(tmp_path / "b")) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    assert run("export", str(directory), "-o", str(tmp_path / "c"), "--quant", "int3") == 2
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    assert run("export", str(tmp_path / "gpt2"), "-o", str(tmp_path / "d")) == 4
    assert "cannot be exported" in capsys.readouterr().err


def test_tied_int4_embedding_reads_the_lm_head_blocks(checkpoints, tmp_path, monkeypatch) -> None:
    """As onnxruntime-genai's builder: one table for a tied model, the LM head's 8-bit blocks."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    from agentd.exporters.onnx import quantize

    directory, _ = checkpoints["llama-tied"]
    shared = export(directory, tmp_path / "shared", quant="int4", block_size=16)
    monkeypatch.setattr(quantize, "share_tied_embedding", lambda *_args: None)
    separate = export(directory, tmp_path / "separate", quant="int4", block_size=16)
    model = onnx.load(str(shared / "model.onnx"))
    graph = model.graph
    assert not [init.name for init in graph.initializer if init.name.startswith("model.embed_tokens")]
    (gather,) = [node for node in graph.node if node.op_type == "GatherBlockQuantized"]
    assert gather.input[2] == "lm_head.MatMul.weight_scales"
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute}["bits"] == 8
    assert (shared / "model.onnx.data").stat().st_size < (separate / "model.onnx.data").stat().st_size
    # The table the gather reads is the embedding, to a quantisation step per block.
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    codes, scales = inits["lm_head.MatMul.weight_Q8"], inits["lm_head.MatMul.weight_scales"]
    vocab, blocks = scales.shape[0], codes.shape[1]
    table = ((codes.astype(np.float32) - 128) * scales.reshape(vocab, blocks, 1)).reshape(vocab, -1)
    embedding = load_file(str(directory / "model.safetensors"))["model.embed_tokens.weight"]
    step = np.repeat(scales.reshape(vocab, blocks), codes.shape[2], axis=1)
    # Within one step: the quantiser stores scales negated and clips the far end of [-128, 127].
    assert np.all(np.abs(table - embedding) <= np.abs(step) + 1e-6)
    # And the model still computes what the float32-embedding graph does, up to that rounding.
    ids = np.array(PROMPT + CHUNK)
    ours, reference = onnx_backend(shared), onnx_backend(separate)
    got = ours.prefill(ids, ours.new_state(), all_logits=True)
    want = reference.prefill(ids, reference.new_state(), all_logits=True)
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_prefill_after_decode_rebinds_and_matches_torch(checkpoints, tmp_path) -> None:
    """Decode steps reuse their binding; a prefill in between (a new turn of a session) must not see stale inputs."""
    directory, _ = checkpoints["qwen2"]
    ours, theirs = onnx_backend(export(directory, tmp_path / "bundle")), load_backend(directory)
    a, b = ours.new_state(), theirs.new_state()
    ours.prefill(np.array(PROMPT), a)
    theirs.prefill(np.array(PROMPT), b)
    for chunk in ([3], [250, 17], [0], CHUNK, [99]):
        if len(chunk) == 1:
            got, want = ours.decode(np.array(chunk), [a]), theirs.decode(np.array(chunk), [b])
        else:
            got, want = ours.prefill(np.array(chunk), a, all_logits=True), theirs.prefill(np.array(chunk), b, all_logits=True)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert a.length == len(PROMPT) + 8
