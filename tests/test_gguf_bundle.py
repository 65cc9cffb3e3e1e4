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
