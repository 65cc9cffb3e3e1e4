"""Encoder work is shared fairly between concurrent requests and its queue is bounded (issue 12, break 1).

An ``Embed`` of 256 long texts held the model for its whole run (105 s), and a
one-text ``Embed`` sent meanwhile waited behind all of it (23 s). The daemon
now runs encoder work in pieces of about ``TURN_TOKENS`` tokens and takes the
model's lock per piece; an asyncio lock hands itself to its waiters in order,
so concurrent requests take turns piece by piece. These tests watch the order
of the pieces the model really ran, not the clock.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from _serving_fixtures import ServingHarness
from agentd.client import Client
from agentd.errors import ResourceExhausted
from agentd.server.served import ModelSource, ModelTable, ServingSettings
from agentd.server.streaming import TURN_TOKENS, pieces
from tests._daemon_fixtures import socket_dir, tiny_bert


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    table = ModelTable.load([ModelSource("bert", tiny_bert(tmp_path_factory.mktemp("models")))])
    with socket_dir() as directory, ServingHarness(table, directory / "t.sock") as harness:
        yield table, harness


def _waiters(lock: asyncio.Lock) -> int:
    """Requests waiting for the model (asyncio keeps them in a private deque)."""
    return len(getattr(lock, "_waiters", None) or ())


def test_a_small_embed_runs_between_the_pieces_of_a_large_one(served, monkeypatch) -> None:
    table, harness = served
    model = table.get("bert").model
    context = model.info.context_length
    big = [f"long text {i} " + "word " * (context * 2) for i in range(200)]  # every text fills the context
    assert len(pieces(big, context)) > 4
    ran: list[tuple[str, int]] = []  # (which request, texts) of every call the model ran
    first_piece = threading.Event()
    small_waiting = threading.Event()
    original = model.embed

    def embed(texts):  # noqa: ANN001, ANN202
        ran.append(("small" if texts == ["small"] else "big", len(texts)))
        if len(ran) == 1:
            first_piece.set()
            assert small_waiting.wait(60), "the small request never queued for the model"
        return original(texts)

    monkeypatch.setattr(model, "embed", embed)
    served_model = table.get("bert")
    with Client(harness.target, timeout=120) as big_client, Client(harness.target, timeout=120) as small_client:
        with ThreadPoolExecutor(2) as pool:
            large = pool.submit(big_client.embed, big, model="bert")
            assert first_piece.wait(60)
            small = pool.submit(small_client.embed, ["small"], model="bert")
            while _waiters(served_model.lock) < 1 and not small.done():
                threading.Event().wait(0.01)
            small_waiting.set()
            small_vector, large_vectors = small.result(), large.result()
    # Before: the small request ran after all of the large one's 200 texts; now after one piece.
    assert ran[1] == ("small", 1), ran
    assert ran[0] == ("big", len(pieces(big, context)[0][1])) and ran[0][1] < len(big)
    assert sum(n for which, n in ran if which == "big") == len(big)
    # Pieces change nothing the model computes.
    np.testing.assert_allclose(large_vectors, original(big), rtol=0, atol=1e-5)
    np.testing.assert_allclose(small_vector, original(["small"]), rtol=0, atol=1e-6)


def test_pieces_cover_every_text_in_order_within_the_turn_budget() -> None:
    texts = ["x" * n for n in (10, 9000, 3, 3, 40000, 1, 8190, 8190)]
    found = pieces(texts, context_length=4096)  # estimated costs 3, 2251, 1, 1, 4096, 1, 2048, 2048
    assert [t for _, piece in found for t in piece] == texts
    assert [start for start, _ in found] == [0, 1, 2, 4, 5, 6, 7]
    for _, piece in found:
        cost = sum(min(len(t) // 4 + 1, 4096) for t in piece)
        assert len(piece) == 1 or cost <= TURN_TOKENS


def test_encoder_requests_beyond_the_queue_are_refused_at_once(tmp_path, monkeypatch) -> None:
    settings = ServingSettings(max_queue=1)
    table = ModelTable.load([ModelSource("bert", tiny_bert(tmp_path))], settings)
    model = table.get("bert").model
    running, release = threading.Event(), threading.Event()
    original = model.embed

    def embed(texts):  # noqa: ANN001, ANN202
        running.set()
        assert release.wait(60)
        return original(texts)

    monkeypatch.setattr(model, "embed", embed)
    with socket_dir() as directory, ServingHarness(table, directory / "q.sock") as harness:
        with Client(harness.target, timeout=60) as client, ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.embed, ["one"], model="bert")
            assert running.wait(60)
            second = pool.submit(client.embed, ["two"], model="bert")
            while _waiters(table.get("bert").lock) < 1:
                threading.Event().wait(0.01)
            # One runs, one waits (max_queue=1): a third is refused while both are still in progress.
            with pytest.raises(ResourceExhausted, match="1 requests are already waiting"):
                client.embed(["three"], model="bert")
            assert not first.done() and not second.done()
            release.set()
            assert first.result().shape[0] == second.result().shape[0] == 1
            assert table.get("bert").encoder_requests == 0
            assert client.embed(["four"], model="bert").shape[0] == 1  # served again once there is room
