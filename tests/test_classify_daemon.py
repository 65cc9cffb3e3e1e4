"""Inference.Classify through a real ``agentd serve`` process: an adapter token classifier next to a
plain encoder and a decoder, the default resolution, the error statuses, both clients and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))

from _daemon_fixtures import AGENTD, serve_process, tiny_bert, tiny_llama  # noqa: E402
from _token_classifier_fixtures import LABELS, TEXTS, build_token_classifier  # noqa: E402

from agentd.aio_client import AsyncClient  # noqa: E402
from agentd.client import Client  # noqa: E402
from agentd.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange  # noqa: E402
from agentd.plugins.adapter import write_adapter  # noqa: E402

pytestmark = pytest.mark.slow
ATOL = 1e-5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify_daemon")
    dirs = build_token_classifier(root)
    adapter = write_adapter(root / "tagger", dirs.base, dirs.config, dirs.adapter_tensors)
    # Served order matters: the plain encoder first stays Embed's default; the tagger is Classify's.
    models = {"encoder": tiny_bert(root), "tagger": adapter, "llama": tiny_llama(root)}
    with serve_process(models, root / "home") as target:
        yield target, dirs


@pytest.fixture(scope="module")
def client(served):
    with Client(served[0], timeout=60) as connection:
        yield connection


def _reference_logits(dirs, text: str) -> np.ndarray:
    """transformers' logits of ``text``'s real tokens ([CLS]/[SEP] dropped)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(dirs.full)
    encoded = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        logits = dirs.reference(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[0]
    return logits[encoded["special_tokens_mask"][0] == 0].numpy()


def test_classify_with_the_default_token_classifier(client, served) -> None:
    _, dirs = served
    result = client.classify(TEXTS)
    assert result.labels == LABELS
    assert len(result.results) == len(TEXTS)
    for text, tokens in zip(TEXTS, result.results):
        reference = _reference_logits(dirs, text)
        logits = np.stack([t.logits for t in tokens])
        assert logits.dtype == np.float32 and np.abs(logits - reference).max() < ATOL
        assert [t.label for t in tokens] == [LABELS[i] for i in reference.argmax(axis=-1)]
        assert all(0 < t.score <= 1 for t in tokens)
    assert [TEXTS[1][t.start : t.end] for t in result.results[1]][:3] == ["Zoë", "paid", "€"]
    assert client.classify(["book"], model="tagger").results[0][0].label == result.results[2][0].label


def test_models_list_reports_labels_and_defaults(client) -> None:
    infos = {info.name: info for info in client.list_models()}
    assert list(infos["tagger"].labels) == list(LABELS) and infos["tagger"].default
    assert infos["tagger"].weight_note.startswith("adapter over ")
    assert list(infos["encoder"].labels) == [] and infos["encoder"].default  # still Embed's default
    assert infos["encoder"].embedding_dim == infos["tagger"].embedding_dim == 32
    # Embed with no model goes to the plain encoder, not the tagger (whose layer 1 differs).
    assert not np.allclose(client.embed(["hello there"]), client.embed(["hello there"], model="tagger"))
    np.testing.assert_array_equal(client.embed(["hello there"]), client.embed(["hello there"], model="encoder"))


def test_error_statuses(client) -> None:
    with pytest.raises(FailedPrecondition, match="model 'encoder' is not a token classifier"):
        client.classify(["hi"], model="encoder")
    with pytest.raises(FailedPrecondition, match="model 'llama' is not a token classifier"):
        client.classify(["hi"], model="llama")
    with pytest.raises(InvalidArgument, match="texts: is empty"):
        client.classify([])
    with pytest.raises(InvalidArgument, match="holds 257 texts; at most 256"):
        client.classify(["x"] * 257)
    with pytest.raises(NotFound, match="model 'nope' is not served"):
        client.classify(["hi"], model="nope")
    with pytest.raises(OutOfRange, match="text 0 has 302 tokens; the model's context is 128"):
        client.classify(["word " * 300])
    # Counted over the whole request, also when the daemon ran it in pieces (here the third).
    with pytest.raises(OutOfRange, match="text 40 has 302 tokens"):
        client.classify(["word " * 120] * 40 + ["word " * 300])


def test_async_client(served) -> None:
    async def run():
        async with AsyncClient(served[0], timeout=60) as connection:
            return await connection.classify(["send Maria 45"])

    result = asyncio.run(run())
    assert result.labels == LABELS and [(t.start, t.end) for t in result.results[0]] == [(0, 4), (5, 10), (11, 13)]


def _cli(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTD_SOCKET": target.removeprefix("unix://")}
    return subprocess.run([*AGENTD, *args], env=env, capture_output=True, text=True, encoding="utf-8", timeout=120)


def test_cli_classify_and_models_list(client, served) -> None:
    target = served[0]
    expected = client.classify(["send Maria 45"]).results[0]
    shown = _cli(target, "classify", "send Maria 45")
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert rows == [[f"{t.start}-{t.end}", word, t.label, f"{t.score:.3f}"] for t, word in zip(expected, ["send", "Maria", "45"])]
    as_json = _cli(target, "classify", "send Maria 45", "hi", "--format", "json")
    parsed = json.loads(as_json.stdout)
    assert [token["text"] for token in parsed[0]["tokens"]] == ["send", "Maria", "45"] and parsed[1]["text"] == "hi"
    refused = _cli(target, "classify", "hi", "--model", "encoder")
    assert refused.returncode == 4 and "is not a token classifier" in refused.stderr
    listed = _cli(target, "models", "list").stdout.splitlines()
    header = listed[0].split()
    assert "LABELS" in header
    tagger = next(line for line in listed if line.startswith("tagger"))
    assert tagger.split()[header.index("LABELS")] == str(len(LABELS))


def test_no_token_classifier_served_means_no_default() -> None:
    from agentd.backend import ModelInfo
    from agentd.server.served import ModelTable, ServedModel

    info = ModelInfo("BertModel", "encoder", parameters=1, context_length=8, vocab_size=8, dtype="float32")
    encoder = ServedModel("encoder", Path("/nowhere"), "", status="ready", info=info)
    table = ModelTable([encoder])
    with pytest.raises(InvalidArgument, match="no token-classification model .* is served to default to"):
        table.default_classifier()
    assert table.is_default(encoder)  # still the default encoder
