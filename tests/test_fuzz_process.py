"""One fuzzing pass over every RPC of ``agentd serve`` as a real process, watching its memory (issue 12).

The in-process fuzzers (test_fuzz_rpcs.py, test_fuzz_agent.py) share the test's interpreter; here
the daemon is the process a user runs (its own CLI, plugins, built-in planner and tool packs, the
Agent service included), reached with raw wire bytes below the generated stubs. Contracts: every
answer is OK or a documented status with a reason; health answers within its 5 s deadline
throughout; the process is alive and serving afterwards; and its resident memory after the pass is
within :data:`RSS_SLACK` of before it: a leak per call, or a payload that makes the daemon allocate
gigabytes, fails it. The bound is generous on purpose: allocators keep freed memory, models warm up.
"""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from agentd.client import Client
from agentd.v1 import agent_pb2, inference_pb2, inference_pb2_grpc, models_pb2
from tests._attack_fixtures import fuzz, health_watch, rss_bytes, rpcs
from tests._daemon_fixtures import socket_dir, tiny_bert, tiny_llama
from tests._deploy_fixtures import DaemonProcess

pytestmark = pytest.mark.slow

EXAMPLES = 30
RSS_SLACK = 300 * 1024 * 1024
RPCS = rpcs(models_pb2, inference_pb2, agent_pb2, health_pb2, reflection_pb2)
HINTS = {"model": ["llama", "bert"], "role": ["system", "user", "assistant"], "user": ["default"], "request": ["pay Maria 5"]}


def test_a_fuzzing_pass_leaves_the_daemon_process_serving_within_its_memory(tmp_path) -> None:
    llama, bert = tiny_llama(tmp_path), tiny_bert(tmp_path)
    with socket_dir() as directory:
        daemon = DaemonProcess(["--no-defaults", "--model", f"llama={llama}", "--model", f"bert={bert}"], tmp_path / "home", directory / "p.sock")
        try:
            daemon.wait_serving()
            target = daemon.unix_target
            with grpc.insecure_channel(target) as channel:  # warm up what a first call allocates
                inference = inference_pb2_grpc.InferenceStub(channel)
                list(inference.Generate(inference_pb2.GenerateRequest(model="llama", prompt="hello", max_tokens=8), timeout=60))
                inference.Embed(inference_pb2.EmbedRequest(model="bert", texts=["hello"]), timeout=60)
            before = rss_bytes(daemon.process.pid)
            codes: Counter[str] = Counter()
            with grpc.insecure_channel(target) as channel, health_watch(target) as health:
                for rpc in RPCS:
                    fuzz(channel, rpc, HINTS, EXAMPLES, lambda answer, payload: codes.update([answer.code.name]))
            after = rss_bytes(daemon.process.pid)
            print(f"{len(RPCS)} RPCs, {sum(codes.values())} calls: {dict(codes)}; RSS {before >> 20} -> {after >> 20} MiB")
            assert health.checks >= 1 and health.failures == [], health
            assert daemon.process.poll() is None, daemon.stderr()
            assert after <= before + RSS_SLACK, (before >> 20, after >> 20)
            with Client(target, timeout=10) as client:
                assert client.health() == "SERVING"
                assert {"llama", "bert"} <= {m.name for m in client.list_models()}
            assert "Traceback" not in daemon.stderr(), daemon.stderr()[-4000:]
        finally:
            daemon.stop()
