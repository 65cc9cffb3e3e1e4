"""Token classification on the torch BERT backend against Hugging Face transformers'
BertForTokenClassification: logits, offsets, labels, and the adapter composing to the same model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))

from _token_classifier_fixtures import LABELS, MINILM_DIR, TEXTS, build_token_classifier  # noqa: E402

import agentd  # noqa: E402
from agentd.errors import FailedPrecondition, ModelLoadError, OutOfRange  # noqa: E402
from agentd.plugins.adapter import write_adapter  # noqa: E402

ATOL = 1e-5


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return build_token_classifier(tmp_path_factory.mktemp("token_classifier"))


@pytest.fixture(scope="module")
def hf_tokenizer(dirs):
    return transformers.AutoTokenizer.from_pretrained(dirs.full)


def _reference_logits(model, hf_tokenizer, texts: list[str]) -> list[np.ndarray]:
    """transformers' logits for each text, run as one right-padded batch (so masking matters)."""
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    lengths = batch["attention_mask"].sum(dim=1)
    return [logits[row, : int(lengths[row])].numpy() for row in range(len(texts))]


def test_backend_logits_match_transformers(dirs, hf_tokenizer) -> None:
    model = agentd.load_model(dirs.full)
    assert model.info.labels == LABELS
    assert model.info.kind == "encoder" and model.info.architecture == "BertForTokenClassification"
    ids = [hf_tokenizer(text)["input_ids"] for text in TEXTS]
    ours = model.backend.classify(ids)
    reference = _reference_logits(dirs.reference, hf_tokenizer, TEXTS)
    for mine, theirs, tokens in zip(ours, reference, ids):
        assert mine.dtype == np.float32 and mine.shape == (len(tokens), len(LABELS))
        assert np.abs(mine - theirs).max() < ATOL


def test_classify_gives_offsets_labels_and_scores(dirs, hf_tokenizer) -> None:
    model = agentd.load_model(dirs.full)
    results = model.classify(TEXTS)
    reference = _reference_logits(dirs.reference, hf_tokenizer, TEXTS)
    for text, result, logits in zip(TEXTS, results, reference):
        encoded = hf_tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        real = [i for i, special in enumerate(encoded["special_tokens_mask"]) if not special]
        assert result.text == text
        assert [(t.start, t.end) for t in result.tokens] == [tuple(encoded["offset_mapping"][i]) for i in real]
        probabilities = torch.softmax(torch.from_numpy(logits[real]).double(), dim=-1).numpy()
        for token, row, p in zip(result.tokens, logits[real], probabilities):
            assert token.label_id == int(row.argmax()) and token.label == LABELS[token.label_id]
            assert token.score == pytest.approx(p.max(), abs=1e-5)
            assert np.abs(token.logits - row).max() < ATOL
    # Offsets index the Python string (code points): accented letters and the euro sign map back exactly.
    words = [TEXTS[1][t.start : t.end] for t in results[1].tokens]
    assert words[:3] == ["Zoë", "paid", "€"] and "José" in words and "naïve" in words


def test_embed_still_works_on_a_token_classifier(dirs, hf_tokenizer) -> None:
    model = agentd.load_model(dirs.full)
    batch = hf_tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = dirs.reference.bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert np.abs(model.embed(TEXTS) - expected).max() < ATOL


def test_adapter_over_the_base_gives_the_full_models_logits(dirs, tmp_path) -> None:
    adapter = write_adapter(tmp_path / "adapter", dirs.base, dirs.config, dirs.adapter_tensors)
    composed, full = agentd.load_model(adapter), agentd.load_model(dirs.full)
    assert composed.info.labels == LABELS
    assert composed.info.weight_note.startswith("adapter over ")
    for mine, theirs in zip(composed.classify(TEXTS), full.classify(TEXTS)):
        assert [(t.start, t.end, t.label) for t in mine.tokens] == [(t.start, t.end, t.label) for t in theirs.tokens]
        assert np.abs(np.stack([t.logits for t in mine.tokens]) - np.stack([t.logits for t in theirs.tokens])).max() < ATOL
    # The base alone is a plain encoder: no labels, and classify says so.
    base = agentd.load_model(dirs.base)
    assert base.info.labels == ()
    with pytest.raises(FailedPrecondition, match="not a token classifier"):
        base.classify(["hello"])
    with pytest.raises(NotImplementedError, match="does not classify tokens"):
        base.backend.classify([[101, 102]])


def test_adapter_over_minilm_matches_transformers(tmp_path) -> None:
    """The real MiniLM as base (by its default-model name), a random head and top layer."""
    reference = transformers.BertForTokenClassification.from_pretrained(
        MINILM_DIR, num_labels=3, id2label={0: "O", 1: "B-x", 2: "I-x"}, label2id={"O": 0, "B-x": 1, "I-x": 2}
    ).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in [*reference.classifier.parameters(), *reference.bert.encoder.layer[5].output.parameters()]:
            parameter.normal_(0.0, 0.3)
    tensors = {
        name: tensor for name, tensor in reference.state_dict().items()
        if name.startswith(("classifier.", "bert.encoder.layer.5.output."))
    }
    config = {**json.loads((MINILM_DIR / "config.json").read_text()), "architectures": ["BertForTokenClassification"],
              "id2label": {"0": "O", "1": "B-x", "2": "I-x"}}
    model = agentd.load_model(write_adapter(tmp_path / "a", "all-minilm-l6-v2", config, tensors))
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM_DIR)
    for mine, theirs in zip(model.backend.classify([hf_tokenizer(t)["input_ids"] for t in TEXTS]), _reference_logits(reference, hf_tokenizer, TEXTS)):
        assert np.abs(mine - theirs).max() < ATOL


@pytest.mark.parametrize(
    ("id2label", "message"),
    [
        ({"0": "O", "2": "B-x"}, r"ids must be 0\.\.1 without gaps"),
        ({"0": "O", "1": 7}, r"'id2label' '1' must be a non-empty string"),
        ({"zero": "O"}, r"key 'zero' is not an integer id"),
        ({}, r"needs a non-empty 'id2label' object"),
    ],
)
def test_bad_labels_are_refused(dirs, tmp_path, id2label, message) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(dirs.full, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "id2label": id2label}))
    with pytest.raises(ModelLoadError, match=message):
        agentd.load_model(broken)


def test_head_shape_must_match_the_labels(dirs, tmp_path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(dirs.full, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "id2label": {"0": "O", "1": "B"}}))
    with pytest.raises(ModelLoadError, match=r"'classifier.weight' has shape \(5, 32\), config.json implies \(2, 32\)"):
        agentd.load_model(broken)


def test_a_text_longer_than_the_context_is_refused(dirs) -> None:
    model = agentd.load_model(dirs.full)
    with pytest.raises(OutOfRange, match="text 1 has 202 tokens; the model's context is 128"):
        model.classify(["fine", "word " * 200])
    assert model.classify([""])[0].tokens == []  # only [CLS] [SEP]: nothing to label
