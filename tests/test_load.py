"""More clients than the daemon admits, on the daemon as a real process (issue 12, load).

``--max-batch 2 --max-queue 3``: two streams decode, three wait, and every
client beyond those five is refused RESOURCE_EXHAUSTED at once, before any
admitted stream has finished, while health keeps answering within its
deadline. Then the five admitted streams complete in full and nothing stays
queued. (That a short request is not starved behind a long one is shown where
the order of the work can be watched: tests/test_engine.py for prefill,
tests/test_fair_turns.py for Embed.)
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from agentd.client import Client
from agentd.v1 import inference_pb2, inference_pb2_grpc
from tests._daemon_fixtures import socket_dir
from tests._deploy_fixtures import DaemonProcess, long_llama

pytestmark = pytest.mark.slow

MAX_BATCH, MAX_QUEUE = 2, 3
EXCESS = 25
LONG = 1500  # tokens per admitted stream: long enough to outlast the excess clients' attempts


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    checkpoint = long_llama(tmp_path_factory.mktemp("models"))
    with socket_dir() as directory:
        process = DaemonProcess(
            ["--no-defaults", "--model", f"long={checkpoint}", "--max-batch", str(MAX_BATCH),
             "--max-queue", str(MAX_QUEUE), "--metrics-port", "0"],
            tmp_path_factory.mktemp("home"),
            directory / "load.sock",
        )
        try:
            process.wait_serving()
            yield process
        finally:
            process.stop()


def _queue_depth(process: DaemonProcess) -> float:
    url = re.search(r"metrics on (http://\S+)", process.stdout())
    assert url, process.stdout()
    with urllib.request.urlopen(url.group(1), timeout=10) as response:
        text = response.read().decode()
    match = re.search(r'^agentd_queue_depth\{model="long"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _stream(stub: inference_pb2_grpc.InferenceStub, first_message: threading.Event | None = None) -> list:
    request = inference_pb2.GenerateRequest(model="long", prompt_token_ids=inference_pb2.TokenIds(ids=[1, 2, 3]),
                                            max_tokens=LONG, temperature=0)
    messages = []
    for message in stub.Generate(request, timeout=300):
        messages.append(message)
        if first_message is not None:
            first_message.set()
    return messages


def test_the_excess_is_refused_at_once_and_the_admitted_complete(daemon) -> None:
    with grpc.insecure_channel(daemon.unix_target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        with ThreadPoolExecutor(MAX_BATCH + MAX_QUEUE + EXCESS) as pool:
            started = [threading.Event() for _ in range(MAX_BATCH)]
            admitted = [pool.submit(_stream, stub, event) for event in started]
            for event in started:
                assert event.wait(120), "a running stream produced nothing"
            admitted += [pool.submit(_stream, stub) for _ in range(MAX_QUEUE)]
            while _queue_depth(daemon) < MAX_QUEUE:
                time.sleep(0.05)
            excess = [pool.submit(_stream, stub) for _ in range(EXCESS)]
            refusals = []
            for future in excess:
                with pytest.raises(grpc.RpcError) as refused:
                    future.result(timeout=120)
                refusals.append((refused.value.code(), refused.value.details()))
            # Refused while all five admitted streams were still going.
            assert not any(future.done() for future in admitted)
            with Client(daemon.unix_target, timeout=5) as client:
                assert client.health() == "SERVING"
            results = [future.result(timeout=300) for future in admitted]
    assert {code for code, _ in refusals} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all("already queued (max_queue); retry later" in details for _, details in refusals)
    for messages in results:
        final = messages[-1]
        assert final.finish_reason in (inference_pb2.FINISH_REASON_LENGTH, inference_pb2.FINISH_REASON_STOP)
        assert final.usage.completion_tokens == sum(len(m.token_ids) for m in messages)
    assert _queue_depth(daemon) == 0
