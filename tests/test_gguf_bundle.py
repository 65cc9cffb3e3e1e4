"""``agentd import x.gguf`` and ``agentd export x.gguf``: the bundles compute what the GGUF computes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import agentd

from _bundle_fixtures import run_agentd
from _export_fixtures import onnx_backend
from _gguf_fixtures import TOKENIZER_TEXT, spm_vocabulary, uniform, write_gguf
from _llama_fixtures import make_hf_model


@pytest.fixture(scope="module")
def q4_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spm = spm_vocabulary()
    model = make_hf_model("llama", vocab_size=len(spm[0]), tie_word_embeddings=True)
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q4_0.gguf", model, uniform("Q4_0"), spm=spm)


def test_import_then_load_gives_the_same_logits_and_tokenizer(q4_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = run_agentd("import", str(q4_gguf), str(out))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == q4_gguf.name and manifest["dtype"] == "float32"
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(manifest["files"])

    source, bundle = agentd.load_model(q4_gguf, quant="fp32"), agentd.load_model(out)
    ids = source.tokenizer.encode(TOKENIZER_TEXT)
    assert bundle.tokenizer.encode(TOKENIZER_TEXT) == ids
    np.testing.assert_array_equal(bundle.logits(ids), source.logits(ids))
    chat = [{"role": "user", "content": "hi"}]
    assert bundle.tokenizer.render_chat(chat) == source.tokenizer.render_chat(chat)


def test_export_fp32_runs_on_onnxruntime_and_matches(q4_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    result = run_agentd("export", str(q4_gguf), "-o", str(out), "--quant", "fp32")
    assert result.returncode == 0, result.stderr
    source = agentd.load_model(q4_gguf, quant="fp32")
    ids = np.asarray(source.tokenizer.encode(TOKENIZER_TEXT), dtype=np.int64)
    backend = onnx_backend(out)
    got = backend.prefill(ids, backend.new_state(), all_logits=True)
    diff = float(np.abs(got - source.logits(ids)).max())
    print(f"ONNX fp32 from GGUF Q4_0: max |dlogit| {diff:.3g}")
    assert diff <= 1e-4


def test_export_int4_keeps_a_4_bit_files_grid(q4_gguf: Path, tmp_path: Path) -> None:
    """Q4_0 weights are stored on their own symmetric blocks, exactly: no offset path, no second rounding."""
    import onnx

    out = tmp_path / "int4"
    result = run_agentd("export", str(q4_gguf), "-o", str(out), "--quant", "int4", "--block-size", "32")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["onnx"]["int4_blocks"] == "symmetric"
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    assert sum(node.op_type == "MatMulNBits" for node in graph.node) > 0
    source = agentd.load_model(q4_gguf, quant="fp32")
    ids = np.asarray(source.tokenizer.encode(TOKENIZER_TEXT), dtype=np.int64)
    backend = onnx_backend(out)
    got = backend.prefill(ids, backend.new_state(), all_logits=True)
    want = source.logits(ids)
    # Only the int8 activations and the 8-bit head differ from the file's own weights.
    error = float(np.abs(got - want).mean()) / float(np.abs(want).mean())
    print(f"int4 bundle of a Q4_0 file: mean |dlogit| {error:.3g} of the mean |logit|")
    assert error < 0.05  # a re-quantised Q4_0 file: 0.27 here


def test_export_int4_keeps_a_q4_1_files_offsets(tmp_path: Path) -> None:
    spm = spm_vocabulary()
    model = make_hf_model("llama", vocab_size=len(spm[0]), tie_word_embeddings=True)
    path = write_gguf(tmp_path / "tiny.Q4_1.gguf", model, uniform("Q4_1"), spm=spm)
    out = tmp_path / "int4"
    result = run_agentd("export", str(path), "-o", str(out), "--quant", "int4", "--block-size", "32")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["onnx"]["int4_blocks"] == "offset"
    source = agentd.load_model(path, quant="fp32")
    ids = np.asarray(source.tokenizer.encode(TOKENIZER_TEXT), dtype=np.int64)
    backend = onnx_backend(out)
    got, want = backend.prefill(ids, backend.new_state(), all_logits=True), source.logits(ids)
    error = float(np.abs(got - want).mean()) / float(np.abs(want).mean())
    print(f"int4 bundle of a Q4_1 file: mean |dlogit| {error:.3g} of the mean |logit|")
    assert error < 0.05  # on symmetric blocks instead: 0.33 here
