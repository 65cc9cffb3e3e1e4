"""Text too large for the model's context is refused before it is tokenised (issue 12, break 1).

A 3 MiB prompt was tokenised in full (8-9 s holding the GIL, health checks
failing meanwhile) only to be refused as too long. No tokenizer puts more than
``MAX_CHARS_PER_TOKEN`` characters in one token, so text beyond that many per
token of context is OUT_OF_RANGE at once; encoders, which keep only their first
``context`` tokens, get their texts cut there instead, which changes nothing
they compute.
"""

from __future__ import annotations

import numpy as np
import pytest

from _serving_fixtures import ServingHarness
from agentd.client import Client, SamplingOptions
from agentd.errors import OutOfRange
from agentd.server.inference import MAX_CHARS_PER_TOKEN
from agentd.server.served import ModelSource, ModelTable
from tests._daemon_fixtures import socket_dir, tiny_bert, tiny_llama


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    table = ModelTable.load([ModelSource("llama", tiny_llama(root)), ModelSource("bert", tiny_bert(root))])
    with socket_dir() as directory, ServingHarness(table, directory / "s.sock") as harness:
        with Client(harness.target, timeout=60) as client:
            yield table, client


def _count_encodes(table: ModelTable, name: str, monkeypatch) -> list[int]:
    tokenizer = table.get(name).model.tokenizer
    calls: list[int] = []
    original = tokenizer.encode

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode", counted)
    return calls


def test_an_oversized_prompt_is_refused_untokenised(served, monkeypatch) -> None:
    table, client = served
    limit = table.get("llama").model.info.context_length * MAX_CHARS_PER_TOKEN
    calls = _count_encodes(table, "llama", monkeypatch)
    for call in (
        lambda: client.generate("a" * (limit + 1), model="llama", sampling=SamplingOptions(max_tokens=2)).text(),
        lambda: client.tokenize("a" * (limit + 1), model="llama"),
    ):
        with pytest.raises(OutOfRange, match=f"has {limit + 1} characters, more than the model's"):
            call()
    with pytest.raises(OutOfRange, match="messages has"):
        client.chat([{"role": "user", "content": "a" * limit}], model="llama", sampling=SamplingOptions(max_tokens=2)).text()
    assert calls == []
    # Text within the bound is tokenised and judged by its tokens, as before.
    with pytest.raises(OutOfRange, match="tokens; the model's context"):
        client.generate("a b " * 200, model="llama", sampling=SamplingOptions(max_tokens=2)).text()
    assert client.health() == "SERVING"


def test_an_encoder_reads_long_texts_exactly_as_before(served) -> None:
    table, client = served
    readable = table.get("bert").model.info.context_length * MAX_CHARS_PER_TOKEN
    words = " ".join(f"word{i}" for i in range(readable // 4))  # longer than readable
    assert len(words) > readable
    long, cut = client.embed([words, words[:readable]], model="bert")
    np.testing.assert_array_equal(long, cut)  # the encoder keeps its first tokens either way
