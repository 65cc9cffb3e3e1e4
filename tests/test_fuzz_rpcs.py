"""Property-based fuzzing of every RPC of the Models, Inference, health and reflection services (issue 12).

Each RPC gets hypothesis-generated wire bytes (raw, and messages of the right type with random
fields, nested and repeated ones included) on the real daemon stack (interceptors included) over
its Unix socket; reflection's bidi stream gets sequences of them. The contract: every answer is OK
or a documented client error naming what was wrong, never UNKNOWN or INTERNAL; health answers
within its deadline throughout (a watcher thread checks it every ~0.5 s); the daemon keeps serving
and no request slot is left taken. Bounded: a fixed number of examples per RPC, derandomised.
The Agent service is fuzzed in test_fuzz_agent.py, a daemon process in test_fuzz_process.py.
"""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from agentd.client import Client
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import inference_pb2, models_pb2
from tests._attack_fixtures import Answer, Kind, call, fuzz, health_watch, rpcs
from tests._daemon_fixtures import socket_dir, tiny_bert, tiny_llama
from tests._deploy_fixtures import in_process_daemon

pytestmark = pytest.mark.slow

EXAMPLES = 40
#: Values worth trying besides random ones: with a served model's name a request gets past the lookup.
HINTS = {"model": ["llama", "bert"], "role": ["system", "user", "assistant"], "service": ["agentd.v1.Inference", "agentd.model.llama"]}
RPCS = rpcs(models_pb2, inference_pb2, health_pb2, reflection_pb2)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    table = ModelTable.load([ModelSource("llama", tiny_llama(root)), ModelSource("bert", tiny_bert(root))])
    with socket_dir() as directory, in_process_daemon(table, directory / "f.sock") as running:
        with grpc.insecure_channel(running.targets[0]) as channel:
            yield running, table, channel


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.method for rpc in RPCS])
def test_every_rpc_answers_garbage_with_a_documented_status(daemon, rpc) -> None:
    running, table, channel = daemon
    answers: list[Answer] = []
    with health_watch(running.targets[0]) as health:
        fuzz(channel, rpc, HINTS, EXAMPLES, lambda answer, payload: answers.append(answer))
    print(rpc.method, dict(Counter(answer.code.name for answer in answers)))
    assert health.checks >= 1 and health.failures == [], health
    assert len(answers) >= EXAMPLES // 2  # the examples really ran (hypothesis may stop early on duplicates)
    with Client(running.targets[0], timeout=5) as client:
        assert client.health() == "SERVING"
        assert {"llama", "bert"} <= {m.name for m in client.list_models()}
    for served in table:  # no request left holding a model or an engine slot
        assert served.in_use == 0, served.name
        if served.engine is not None:
            assert served.engine.wait_idle(timeout=30), served.name
            assert (served.engine.active_count(), served.engine.queued_count()) == (0, 0), served.name


def test_reflection_answers_garbage_bytes_with_invalid_argument(daemon) -> None:
    """Bytes that are no ServerReflectionRequest were grpc's UNKNOWN ("Unexpected DecodeError")."""
    running, _, channel = daemon
    (reflection,) = [rpc for rpc in RPCS if rpc.kind is Kind.BIDI]
    answer = call(channel, reflection, [b"\xff\xff"])
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer
    assert "ServerReflectionRequest" in answer.details
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    assert call(channel, reflection, [good, good]).code == grpc.StatusCode.OK  # and it still serves


def test_health_list_and_an_unknown_service_have_answers(daemon) -> None:
    """List was INTERNAL (grpcio-health-checking's servicer does not implement it); Check of an
    unknown service was a NOT_FOUND without a word of why."""
    running, _, channel = daemon
    stub = health_pb2_grpc.HealthStub(channel)
    statuses = stub.List(health_pb2.HealthListRequest(), timeout=10).statuses
    assert statuses[""].status == health_pb2.HealthCheckResponse.SERVING
    assert "agentd.v1.Inference" in statuses
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in caught.value.details()
