"""Shared pieces of the fuzzing tests: the contract, raw calls, message strategies, a health watch, RSS.

* :data:`DOCUMENTED`: the status codes a client may be told (UNKNOWN and INTERNAL are bugs).
* :func:`call`: one RPC with raw wire bytes, below the generated stubs, so bytes that are not a
  message reach the daemon as they are.
* :func:`rpcs` and :func:`wire`: every method of a service module, and hypothesis strategies for
  messages of a type with random fields (scalars, nested messages and repeated fields alike).
* :func:`health_watch`: a background thread asking grpc.health.v1 Health/Check with a 5 s deadline
  every ~0.5 s while a test attacks the daemon; the test asserts no check failed.
* :func:`rss_bytes`: a process's resident memory, for "RSS stays bounded".
"""

from __future__ import annotations

import contextlib
import enum
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Mapping, Sequence

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import strategies as st

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
#: Deadline of every fuzzing call: far above any honest answer, so a hang fails as DEADLINE_EXCEEDED.
CALL_TIMEOUT = 60.0
#: Bounds on generated messages: short strings and lists, two levels of nesting.
MAX_TEXT, MAX_ITEMS, MAX_DEPTH = 40, 4, 2


class Kind(enum.Enum):
    UNARY = "unary"
    SERVER_STREAM = "server streaming"
    BIDI = "bidi streaming"


@dataclass(frozen=True)
class Rpc:
    method: str  # /package.Service/Method
    request: type[Message]
    kind: Kind


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    responses: tuple[bytes, ...] = ()


def rpcs(*modules: ModuleType) -> list[Rpc]:
    """Every method of every service in the given ``*_pb2`` modules (client streaming counts as bidi)."""
    found = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.client_streaming:
                    kind = Kind.BIDI
                else:
                    kind = Kind.SERVER_STREAM if method.server_streaming else Kind.UNARY
                found.append(Rpc(f"/{service.full_name}/{method.name}", GetMessageClass(method.input_type), kind))
    return found


def call(
    channel: grpc.Channel, rpc: Rpc, payload: bytes | Sequence[bytes], *,
    until: Callable[[bytes], bool] | None = None, timeout: float = CALL_TIMEOUT, metadata: Sequence[tuple[str, str]] = (),
) -> Answer:
    """Call ``rpc`` with raw ``payload`` (a list of messages for a bidi RPC).

    A stream is read to its end, or until ``until(response)`` says the rest does not matter (a run
    waiting for approval, a health watch that never ends): the call is then cancelled and counts as OK.
    """
    identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if rpc.kind is Kind.UNARY:
            return Answer(grpc.StatusCode.OK, "", (channel.unary_unary(rpc.method, **identity)(payload, timeout=timeout, metadata=metadata),))
        if rpc.kind is Kind.SERVER_STREAM:
            stream = channel.unary_stream(rpc.method, **identity)(payload, timeout=timeout, metadata=metadata)
        else:
            messages = [payload] if isinstance(payload, bytes) else list(payload)
            stream = channel.stream_stream(rpc.method, **identity)(iter(messages), timeout=timeout, metadata=metadata)
        responses = []
        for response in stream:
            responses.append(response)
            if until is not None and until(response):
                stream.cancel()
                break
        return Answer(grpc.StatusCode.OK, "", tuple(responses))
    except grpc.RpcError as exc:
        return Answer(exc.code(), exc.details() or "")


# -- messages ----------------------------------------------------------------------------------
def _integers(kind: int) -> st.SearchStrategy[int]:
    d = _descriptor.FieldDescriptor
    if kind in (d.TYPE_INT32, d.TYPE_SINT32, d.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if kind in (d.TYPE_UINT32, d.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if kind in (d.TYPE_UINT64, d.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    return st.integers(-(2**63), 2**63 - 1)


def _value(fd: _descriptor.FieldDescriptor, hints: Mapping[str, Sequence], depth: int) -> st.SearchStrategy:
    """One value of field ``fd`` (one element, for a repeated field)."""
    d = _descriptor.FieldDescriptor
    if fd.message_type is not None:
        return messages(GetMessageClass(fd.message_type), hints, depth + 1)
    if fd.type == d.TYPE_STRING:
        base: st.SearchStrategy = st.text(max_size=MAX_TEXT)
    elif fd.type == d.TYPE_BYTES:
        base = st.binary(max_size=MAX_TEXT)
    elif fd.type == d.TYPE_BOOL:
        base = st.booleans()
    elif fd.type in (d.TYPE_FLOAT, d.TYPE_DOUBLE):
        base = st.floats(allow_nan=True, allow_infinity=True, width=32)
    elif fd.type == d.TYPE_ENUM:
        # Numbers the enum does not define are legal on the wire (open enums): the daemon must cope.
        base = st.one_of(st.sampled_from([v.number for v in fd.enum_type.values]), st.integers(-(2**31), 2**31 - 1))
    else:
        base = _integers(fd.type)
    if fd.name in hints:  # values that get past the first check, so the fuzzing reaches deeper code
        return st.one_of(base, st.sampled_from(list(hints[fd.name])))
    return base


def messages(
    request_type: type[Message], hints: Mapping[str, Sequence] = {}, depth: int = 0, *, max_fields: int | None = None
) -> st.SearchStrategy[Message]:
    """Messages of ``request_type`` with any subset of its fields (at most ``max_fields``) set to random values.

    Nested messages recurse (up to :data:`MAX_DEPTH`), repeated fields get up to :data:`MAX_ITEMS`
    elements, maps random entries. ``hints`` maps a field name to values worth trying besides random
    ones (a served model's name, a run id that exists).
    """
    fields = {}
    for fd in request_type.DESCRIPTOR.fields:
        if fd.message_type is not None and depth >= MAX_DEPTH:
            continue
        entry = fd.message_type.GetOptions().map_entry if fd.message_type is not None else False
        if entry:
            key, value = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            fields[fd.name] = st.dictionaries(_value(key, hints, depth), _value(value, hints, depth), max_size=MAX_ITEMS)
        elif fd.is_repeated:
            fields[fd.name] = st.lists(_value(fd, hints, depth), max_size=MAX_ITEMS)
        else:
            fields[fd.name] = _value(fd, hints, depth)
    if max_fields is None:
        chosen = st.fixed_dictionaries({}, optional=fields)
    else:
        names = st.sets(st.sampled_from(sorted(fields)), max_size=max_fields) if fields else st.just(set())
        chosen = names.flatmap(lambda picked: st.fixed_dictionaries({name: fields[name] for name in sorted(picked)}))
    return chosen.map(lambda values: _build(request_type, values))


def _build(request_type: type[Message], values: dict) -> Message:
    """The message with ``values`` set one by one (for a oneof, the last one set wins, as on the wire)."""
    message = request_type()
    for name, value in values.items():
        fd = request_type.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif fd.is_repeated:
            target.extend(value)
        elif fd.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def wire(request_type: type[Message], hints: Mapping[str, Sequence] = {}) -> st.SearchStrategy[bytes]:
    """What a fuzzing call sends: random bytes, or a random message of ``request_type`` serialised,
    with any of its fields set or with only one or two (so some get past validation to the work)."""
    typed = st.one_of(messages(request_type, hints), messages(request_type, hints, max_fields=2))
    return st.one_of(st.binary(max_size=64), typed.map(lambda m: m.SerializeToString()))


def fuzz(channel: grpc.Channel, rpc: Rpc, hints: Mapping[str, Sequence], examples: int,
         seen: Callable[[Answer, object], None] = lambda answer, payload: None) -> None:
    """Call ``rpc`` with ``examples`` hypothesis-generated payloads (:func:`wire`; lists of them for a
    bidi RPC), derandomised; each answer must keep :func:`check_answer`'s contract, and is passed to
    ``seen`` first. Streams that may never end stop at their first answer that says enough (a health
    watch's first, a run's request for approval)."""
    from hypothesis import HealthCheck, given, settings

    payloads = wire(rpc.request, hints)
    if rpc.kind is Kind.BIDI:
        payloads = st.lists(payloads, min_size=1, max_size=3)

    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(payload=payloads)
    def probe(payload: object) -> None:
        answer = call(channel, rpc, payload, until=open_ended(rpc.method))
        seen(answer, payload)
        check_answer(answer, (rpc.method, payload))

    probe()


def open_ended(method: str) -> Callable[[bytes], bool] | None:
    """Where to stop reading a stream that may never end on its own (nobody decides an approval)."""
    if method.endswith("/Watch"):
        return lambda _: True
    if method.endswith("/RunTask"):
        from agentd.v1 import agent_pb2

        return lambda response: agent_pb2.RunEvent.FromString(response).WhichOneof("event") == "approval_needed"
    return None


def check_answer(answer: Answer, payload: object) -> None:
    """The contract: a documented status, and a refusal that says why."""
    assert answer.code in DOCUMENTED, (answer.code, answer.details, payload)
    if answer.code != grpc.StatusCode.OK:
        assert answer.details, (answer.code, payload)


# -- health and memory -------------------------------------------------------------------------
@dataclass
class HealthRecord:
    """What :func:`health_watch` saw: how many checks, and every one that failed (and why)."""

    checks: int = 0
    failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def health_watch(target: str, *, interval: float = 0.5, deadline: float = 5.0) -> Iterator[HealthRecord]:
    """Health/Check of the whole server with a ``deadline`` every ``interval`` s, in a thread, while the
    ``with`` block runs. A check fails if it errs (a missed deadline included) or answers not SERVING.
    At least one check is made, however short the block."""
    record = HealthRecord()
    stop = threading.Event()

    def watch() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline).status
                    if status != health_pb2.HealthCheckResponse.SERVING:
                        record.failures.append(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
                except grpc.RpcError as exc:
                    record.failures.append(f"{exc.code().name}: {exc.details()}")
                record.checks += 1
                if stop.wait(interval):
                    return

    thread = threading.Thread(target=watch, name="health-watch", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        stop.set()
        thread.join(timeout=deadline + 10)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
