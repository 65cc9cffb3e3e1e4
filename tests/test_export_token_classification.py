"""ONNX export of BERT token classifiers (a full checkpoint and an adapter over MiniLM):
``token_logits`` against the torch backend at fp32, argmax agreement at int8, and serving
the bundle with torch unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend, register_onnx_plugins  # noqa: E402
from _token_classifier_fixtures import LABELS, MINILM_DIR, TEXTS, build_token_classifier  # noqa: E402

import agentd  # noqa: E402
from agentd.formats import open_checkpoint  # noqa: E402
from agentd.plugins.adapter import write_adapter  # noqa: E402

#: Varied requests for the int8 agreement count (MiniLM's real tokenizer and encoder).
REQUESTS = TEXTS + [
    "book a hotel in Denver for three nights from next Friday",
    "order two large pepperoni pizzas and a coke from Luigi's",
    "pay the electricity bill of $84.20 from checking",
    "remind me to call mom at 6:30 pm on Sunday",
    "find flights from Boston to Lisbon on March 3rd for 2 passengers under $900",
    "what did I spend on groceries since February?",
    "text Priya that I'm running ten minutes late",
    "search the web for the best hiking trails near Boulder",
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return build_token_classifier(tmp_path_factory.mktemp("token_classifier"))


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def _ids(model, texts: list[str]) -> list[list[int]]:
    return [model.tokenizer.encode(text) for text in texts]


def test_fp32_token_logits_match_the_torch_backend(dirs, tmp_path) -> None:
    torch_model = agentd.load_model(dirs.full)
    bundle = export(dirs.full, tmp_path / "onnx")
    section = open_checkpoint(bundle).manifest["onnx"]
    assert section["labels"] == list(LABELS) and section["kind"] == "encoder"
    assert [o["name"] for o in section["graphs"]["model"]["outputs"]] == ["sentence_embedding", "token_logits"]
    backend = onnx_backend(bundle)
    assert backend.info.labels == LABELS and backend.info.architecture == "BertForTokenClassification"
    ids = _ids(torch_model, TEXTS)
    assert _max_diff(backend.classify(ids), torch_model.backend.classify(ids)) < 1e-4
    assert np.abs(backend.embed(ids) - torch_model.backend.embed(ids)).max() < 1e-4
    # Through load_model: the same tokens, labels and offsets as the torch model.
    onnx_model = agentd.load_model(bundle)
    for mine, theirs in zip(onnx_model.classify(TEXTS), torch_model.classify(TEXTS)):
        assert [(t.start, t.end, t.label) for t in mine.tokens] == [(t.start, t.end, t.label) for t in theirs.tokens]


def test_a_plain_encoder_bundle_does_not_classify(tmp_path) -> None:
    from _daemon_fixtures import tiny_bert

    backend = onnx_backend(export(tiny_bert(tmp_path), tmp_path / "onnx"))
    assert backend.info.labels == ()
    with pytest.raises(NotImplementedError, match="does not classify tokens"):
        backend.classify([[101, 102]])


@pytest.fixture(scope="module")
def minilm_adapter(tmp_path_factory) -> Path:
    """An adapter over the real MiniLM (by its default-model name): a random head and top layer."""
    reference = transformers.BertForTokenClassification.from_pretrained(MINILM_DIR, num_labels=len(LABELS)).eval()
    torch.manual_seed(2)
    with torch.no_grad():
        for parameter in [*reference.classifier.parameters(), *reference.bert.encoder.layer[5].output.parameters()]:
            parameter.normal_(0.0, 0.2)
        reference.bert.encoder.layer[5].output.LayerNorm.weight.add_(1.0)
    tensors = {
        name: tensor for name, tensor in reference.state_dict().items()
        if name.startswith(("classifier.", "bert.encoder.layer.5.output."))
    }
    config = {**json.loads((MINILM_DIR / "config.json").read_text()), "architectures": ["BertForTokenClassification"],
              "id2label": {str(i): label for i, label in enumerate(LABELS)}}
    return write_adapter(tmp_path_factory.mktemp("adapter") / "planner", "all-minilm-l6-v2", config, tensors)


def test_adapter_exports_through_the_cli_at_int8(minilm_adapter, tmp_path, monkeypatch, capsys) -> None:
    from agentd.cli import main

    register_onnx_plugins()
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    for out, quant in ((fp32, "fp32"), (int8, "int8")):
        monkeypatch.setattr(sys, "argv", ["agentd", "export", str(minilm_adapter), "-o", str(out), "--quant", quant])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 0, capsys.readouterr().err
    torch_model = agentd.load_model(minilm_adapter)
    ids = _ids(torch_model, REQUESTS)
    reference = torch_model.backend.classify(ids)

    assert _max_diff(onnx_backend(fp32).classify(ids), reference) < 1e-4

    manifest = open_checkpoint(int8).manifest
    assert manifest["onnx"]["quantization"] == "int8" and manifest["onnx"]["labels"] == list(LABELS)
    quantised = onnx_backend(int8).classify(ids)
    agree = np.concatenate([q.argmax(-1) == r.argmax(-1) for q, r in zip(quantised, reference)])
    print(f"\nint8 token-label argmax agreement with torch fp32: {agree.mean():.4f} ({agree.sum()}/{agree.size} tokens)")
    assert agree.mean() >= 0.95


TORCH_FREE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import agentd
    model = agentd.load_model(sys.argv[1])
    result = model.classify(json.loads(sys.argv[2]))
    print(json.dumps([[[t.start, t.end, t.label] for t in r.tokens] for r in result]))
    print("torch" in sys.modules and sys.modules["torch"] is not None)
    """
)


def test_the_bundle_classifies_with_torch_unimportable(dirs, tmp_path) -> None:
    bundle = export(dirs.full, tmp_path / "onnx")
    run = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_SCRIPT, str(bundle), json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    tokens, torch_loaded = run.stdout.splitlines()
    expected = [[[t.start, t.end, t.label] for t in r.tokens] for r in agentd.load_model(dirs.full).classify(TEXTS)]
    assert json.loads(tokens) == expected and torch_loaded == "False"
