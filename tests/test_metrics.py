"""Prometheus metrics: scraped over HTTP from an in-process metrics server while the harness serves.

Counters live in the process-wide registry, so the test compares scrapes
before and after its own requests; the gauges it reads belong to a model
name no other test uses.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from _serving_fixtures import ServingHarness, collect, ids_request
from agentd.server.metrics import start_metrics_server
from agentd.server.served import ModelSource, ModelTable, ServingSettings
from tests._daemon_fixtures import socket_dir, tiny_llama

MODEL = "metered"
GENERATE = "agentd.v1.Inference/Generate"


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def metrics_port():
    server = start_metrics_server(0)
    yield server.server_port
    server.shutdown()


def test_metrics_endpoint_reports_requests_latency_tokens_and_state(metrics_port, tmp_path) -> None:
    table = ModelTable.load([ModelSource(MODEL, tiny_llama(tmp_path))], ServingSettings(max_batch=1))
    before = _scrape(metrics_port)
    with socket_dir() as directory, ServingHarness(table, directory / "m.sock") as harness:
        stub = harness.inference
        tokens = 0
        for prompt in ([1, 2, 3], [4, 5, 6, 7]):
            ids, last = collect(stub.Generate(ids_request(MODEL, prompt, 5), timeout=60))
            tokens += last.usage.completion_tokens
        ids, last = collect(stub.Generate(ids_request(MODEL, [8, 9], 4, session_id="metered-chat"), timeout=60))
        tokens += last.usage.completion_tokens
        with pytest.raises(grpc.RpcError):
            list(stub.Generate(ids_request("no-such-model", [1], 2), timeout=60))

        # Hold one stream mid-decode and queue another behind it (max_batch=1).
        gate = threading.Event()
        backend = table.get(MODEL).engine.backend
        original = backend.decode
        backend.decode = lambda ids, states: (gate.wait(timeout=60), original(ids, states))[1]
        running = stub.Generate(ids_request(MODEL, [1, 2], 3), timeout=60)
        next(running)
        queued = stub.Generate(ids_request(MODEL, [3, 4], 3), timeout=60)
        engine = table.get(MODEL).engine
        deadline = time.monotonic() + 60
        while engine.queued_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = _scrape(metrics_port)
        gate.set()
        tokens += collect(running)[1].usage.completion_tokens
        tokens += collect(queued)[1].usage.completion_tokens
        after = _scrape(metrics_port)

    assert _value(busy, "agentd_active_sequences", model=MODEL) == 1
    assert _value(busy, "agentd_queue_depth", model=MODEL) == 1
    assert _value(after, "agentd_active_sequences", model=MODEL) == 0

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("agentd_requests_total", rpc=GENERATE, code="OK") == 5
    assert delta("agentd_requests_total", rpc=GENERATE, code="NOT_FOUND") == 1
    assert delta("agentd_generated_tokens_total", model=MODEL) == tokens
    assert delta("agentd_time_to_first_token_seconds_count", model=MODEL) == 5
    assert delta("agentd_inter_token_latency_seconds_count", model=MODEL) == tokens - 5
    assert delta("agentd_prompt_tokens_total", model=MODEL, source="prefilled") == 3 + 4 + 2 + 2 + 2
    assert _value(after, "agentd_active_sessions", model=MODEL) == 1
    served = table.get(MODEL)
    assert _value(after, "agentd_model_memory_bytes", model=MODEL, kind="weights") == served.weight_bytes > 0
    # The session's KV cache is state the model holds.
    session_bytes = table.sessions.total_bytes(MODEL)
    assert session_bytes > 0
    assert _value(after, "agentd_model_memory_bytes", model=MODEL, kind="states") >= session_bytes
    assert _value(after, "agentd_model_loaded", model=MODEL) == 1
