"""Generate through the batching engine, over the socket: concurrency, cancellation, backpressure.

A tiny random Llama (agentd's builder, with tokenizer) is served by the
in-process harness. Concurrency is forced, not hoped for: the first decode
step waits until every stream has been submitted, so they must share steps.
Transformers is the reference for the greedy tokens.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import transformers

from _serving_fixtures import ServingHarness, assert_greedy_under, collect, ids_request
from agentd.server.served import ModelSource, ModelTable, ServingSettings
from agentd.v1 import inference_pb2 as pb
from tests._daemon_fixtures import socket_dir, tiny_llama

LLAMA = "tiny-llama"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def hf_llama(llama_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(llama_dir, attn_implementation="eager").eval()


@pytest.fixture
def serve(llama_dir):
    """Builds a table over the tiny Llama with the given settings and a harness on a fresh socket."""
    with socket_dir() as directory:

        def make(**settings) -> tuple[ModelTable, ServingHarness]:
            table = ModelTable.load([ModelSource(LLAMA, llama_dir)], ServingSettings(**settings))
            return table, ServingHarness(table, directory / "e.sock")

        yield make


def _wrap_decode(table: ModelTable, before) -> list[int]:
    """Call ``before(states)`` ahead of every decode; returns the list of batch sizes seen."""
    backend = table.get(LLAMA).engine.backend
    original = backend.decode
    sizes: list[int] = []

    def decode(token_ids, states):
        before(states)
        sizes.append(len(states))
        return original(token_ids, states)

    backend.decode = decode
    return sizes


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_eight_concurrent_streams_equal_each_alone(serve, hf_llama) -> None:
    table, harness = serve(max_batch=8)
    engine = table.get(LLAMA).engine
    all_in = threading.Event()

    def hold_first_step(states) -> None:
        all_in.wait(timeout=60)  # every stream is submitted before the first decode runs

    sizes = _wrap_decode(table, hold_first_step)
    prompts = [[(7 * i + j) % 250 + 3 for j in range(3 + 5 * i)] for i in range(8)]
    budgets = [16, 9, 20, 5, 12, 18, 7, 14]
    with harness:
        stub = harness.inference
        with ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(lambda p=p, m=m: collect(stub.Generate(ids_request(LLAMA, p, m), timeout=120)))
                for p, m in zip(prompts, budgets)
            ]
            _wait_until(lambda: engine.active_count() + engine.queued_count() == 8)
            all_in.set()
            results = [f.result() for f in futures]
    assert max(sizes) > 1, "the streams never shared a decode step"
    model = table.get(LLAMA).model
    for prompt, budget, (ids, last) in zip(prompts, budgets, results):
        assert ids == model.generate(prompt, max_new_tokens=budget)  # alone, in-process
        assert_greedy_under(hf_llama, prompt, ids)
        assert last.usage.completion_tokens == len(ids) and last.usage.prompt_tokens == len(prompt)


def test_cancelling_200_streams_leaves_no_active_sequence(serve) -> None:
    table, harness = serve(max_batch=32, max_queue=256)
    engine = table.get(LLAMA).engine
    # Slow steps keep every stream in flight (running or queued) until the cancel.
    _wrap_decode(table, lambda states: time.sleep(0.01))
    with harness:
        stub = harness.inference
        calls = [stub.Generate(ids_request(LLAMA, [5 + i % 200, 9, 11], 80), timeout=120) for i in range(200)]
        _wait_until(lambda: engine.active_count() == 32 and engine.queued_count() == 168)
        for call in calls:
            call.cancel()
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
            assert caught.value.code() == grpc.StatusCode.CANCELLED
        assert engine.wait_idle(60.0)
        assert engine.active_count() == 0 and engine.queued_count() == 0
        # ...and the engine still serves.
        ids, last = collect(stub.Generate(ids_request(LLAMA, [1, 2, 3], 4), timeout=60))
        assert last.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP) and ids


def test_full_queue_is_resource_exhausted_at_once_and_deadlines_free_slots(serve) -> None:
    table, harness = serve(max_batch=1, max_queue=1)
    engine = table.get(LLAMA).engine
    gate = threading.Event()
    _wrap_decode(table, lambda states: gate.wait(timeout=60))
    with harness:
        stub = harness.inference
        running = stub.Generate(ids_request(LLAMA, [1, 2, 3], 5), timeout=120)
        next(running)  # prefilled and holding the only slot; its first decode waits on the gate
        queued = stub.Generate(ids_request(LLAMA, [4, 5, 6], 5), timeout=120)
        _wait_until(lambda: engine.queued_count() == 1)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(ids_request(LLAMA, [7, 8], 5), timeout=120))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_queue" in caught.value.details()

        # A deadline that passes while queued frees its place without running.
        queued.cancel()
        late = stub.Generate(ids_request(LLAMA, [9, 10], 5), timeout=0.3)
        with pytest.raises(grpc.RpcError) as caught:
            list(late)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        gate.set()
        ids, last = collect(running)
        assert last.usage.completion_tokens == len(ids) + 1  # the first token came with next()
        assert engine.wait_idle(60.0)
        assert engine.active_count() == engine.queued_count() == 0
