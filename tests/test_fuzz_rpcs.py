"""Property-based fuzzing of every unary-request RPC of the Models and Inference services (issue 12).

Each RPC gets hypothesis-generated wire bytes (raw, and messages of the right type with random
fields) on the real daemon stack (interceptors included) over its Unix socket. The contract: every
answer is OK or a documented client error naming what was wrong, never UNKNOWN or INTERNAL; the
daemon keeps serving and health answers within its deadline after each batch; no request slot is
left taken. Bounded: a fixed number of examples per RPC, no deadline per example.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.client import Client
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import inference_pb2, models_pb2
from tests._daemon_fixtures import socket_dir, tiny_bert, tiny_llama
from tests._deploy_fixtures import in_process_daemon

pytestmark = pytest.mark.slow

#: What a client may be told; anything else (UNKNOWN, INTERNAL, UNIMPLEMENTED ...) is a break.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
}
EXAMPLES = 40


def _rpcs() -> list[tuple[str, type, bool]]:
    """``(method path, request type, server streaming)`` of every unary-request RPC of both services."""
    found = []
    for module in (models_pb2, inference_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.client_streaming:
                    continue
                request = getattr(module, method.input_type.name, None) or getattr(models_pb2, method.input_type.name)
                found.append((f"/{service.full_name}/{method.name}", request, method.server_streaming))
    return found


RPCS = _rpcs()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    table = ModelTable.load([ModelSource("llama", tiny_llama(root)), ModelSource("bert", tiny_bert(root))])
    with socket_dir() as directory, in_process_daemon(table, directory / "f.sock") as running:
        with grpc.insecure_channel(running.targets[0]) as channel:
            yield running, table, channel


def _call(channel: grpc.Channel, method: str, streaming: bool, payload: bytes) -> tuple[grpc.StatusCode, str]:
    kind = channel.unary_stream if streaming else channel.unary_unary
    call = kind(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        result = call(payload, timeout=60)
        if streaming:
            for _ in result:
                pass
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _fields(request_type: type) -> st.SearchStrategy[bytes]:
    """Messages of ``request_type`` with random scalar fields, serialised (valid wire format)."""
    strategies = {}
    for field in request_type.DESCRIPTOR.fields:
        if field.is_repeated or field.message_type is not None:
            continue
        if field.type == field.TYPE_STRING:
            strategies[field.name] = st.text(max_size=40)
        elif field.type == field.TYPE_BOOL:
            strategies[field.name] = st.booleans()
        elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            strategies[field.name] = st.floats(allow_nan=True, allow_infinity=True, width=32)
        elif field.type == field.TYPE_ENUM:
            strategies[field.name] = st.sampled_from([v.number for v in field.enum_type.values])
        elif field.type in (field.TYPE_INT32, field.TYPE_SINT32, field.TYPE_SFIXED32):
            strategies[field.name] = st.integers(-(2**31), 2**31 - 1)
        elif field.type in (field.TYPE_UINT32, field.TYPE_FIXED32):
            strategies[field.name] = st.integers(0, 2**32 - 1)
        elif field.type in (field.TYPE_INT64, field.TYPE_SINT64, field.TYPE_SFIXED64):
            strategies[field.name] = st.integers(-(2**63), 2**63 - 1)
        elif field.type in (field.TYPE_UINT64, field.TYPE_FIXED64):
            strategies[field.name] = st.integers(0, 2**64 - 1)
    chosen = st.fixed_dictionaries({}, optional=strategies)
    return chosen.map(lambda values: request_type(**values).SerializeToString())


@pytest.mark.parametrize(("method", "request_type", "streaming"), RPCS, ids=[m for m, _, _ in RPCS])
def test_every_rpc_answers_garbage_with_a_documented_status(daemon, method, request_type, streaming) -> None:
    running, table, channel = daemon
    answers: list[tuple[grpc.StatusCode, str]] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(payload=st.one_of(st.binary(max_size=64), _fields(request_type)))
    def probe(payload: bytes) -> None:
        code, details = _call(channel, method, streaming, payload)
        answers.append((code, details))
        assert code in DOCUMENTED, (code, details, payload)
        if code != grpc.StatusCode.OK:
            assert details, (code, payload)  # every refusal says why

    probe()
    with Client(running.targets[0], timeout=5) as client:
        assert client.health() == "SERVING"
        assert {"llama", "bert"} <= {m.name for m in client.list_models()}
    for served in table:  # no request left holding a model or an engine slot
        assert served.in_use == 0, served.name
        if served.engine is not None:
            assert served.engine.wait_idle(timeout=30), served.name
            assert (served.engine.active_count(), served.engine.queued_count()) == (0, 0), served.name
