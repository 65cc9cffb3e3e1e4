"""Every RPC but health, refused on TCP without the right token, whatever the token looks like and the payload (issue 12).

A daemon with TLS and a bearer token on TCP hosts every service (Models,
Inference, Agent, reflection, health). Each RPC is called with eleven kinds of
wrong credentials (none, wrong, truncated, one character longer, case changed,
another scheme, the token without a scheme, an empty bearer, another header,
a wrong entry before the right one, the token of another daemon) and three
payloads (empty, bytes that are no protobuf, a well-formed request naming the
served model): every call is UNAUTHENTICATED, and nothing ran (no run in the
journal, no model loaded, no token generated). The same calls with the right
token are never UNAUTHENTICATED, so the sweep can fail; health answers without
one. The daemon's log never holds the token.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from agentd.config import ServeConfig
from agentd.server.auth import Security
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import agent_pb2, inference_pb2, models_pb2
from tests._attack_fixtures import Kind, Rpc, call, rpcs
from tests._daemon_fixtures import InProcessDaemon, socket_dir, tiny_llama
from tests._deploy_fixtures import TOKEN, make_pki, write_token

pytestmark = pytest.mark.slow

OPEN = {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
RPCS = [rpc for rpc in rpcs(models_pb2, inference_pb2, agent_pb2, health_pb2, reflection_pb2) if rpc.method not in OPEN]

#: Credentials that must all be refused; the right one is ``("authorization", f"Bearer {TOKEN}")``.
WRONG = {
    "none": (),
    "wrong": (("authorization", "Bearer " + "x" * len(TOKEN)),),
    "truncated": (("authorization", f"Bearer {TOKEN[:-1]}"),),
    "one longer": (("authorization", f"Bearer {TOKEN}x"),),
    "case changed": (("authorization", f"Bearer {TOKEN.swapcase()}"),),
    "other scheme": (("authorization", f"Basic {TOKEN}"),),
    "no scheme": (("authorization", TOKEN),),
    "empty bearer": (("authorization", "Bearer "),),
    "other header": (("x-authorization", f"Bearer {TOKEN}"),),
    "wrong entry first": (("authorization", "Bearer " + "y" * len(TOKEN)), ("authorization", f"Bearer {TOKEN}")),
    "another daemon's": (("authorization", "Bearer " + "0123456789abcdef" * 3),),
}
RIGHT = (("authorization", f"Bearer {TOKEN}"),)


def payloads(rpc: Rpc) -> dict[str, bytes]:
    """Empty, not protobuf, and a well-formed request whose string fields name the served model."""
    request = rpc.request()
    for fd in request.DESCRIPTOR.fields:
        if fd.type == fd.TYPE_STRING and not fd.is_repeated and fd.containing_oneof is None:
            setattr(request, fd.name, "llama" if fd.name in ("model", "name") else "pay Maria 5")
    return {"empty": b"", "garbage": b"\xff\xff\xff\xff", "well-formed": request.SerializeToString()}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "pki").mkdir()
    pki = make_pki(root / "pki")
    security = Security.from_config(
        ServeConfig(tcp=("127.0.0.1", 0), tls_cert=pki.server_cert, tls_key=pki.server_key, auth_token_file=write_token(root))
    )
    table = ModelTable.load([ModelSource("llama", tiny_llama(root))])
    with socket_dir() as directory:
        running = InProcessDaemon(table, directory / "s.sock", tcp=("127.0.0.1", 0), security=security, agent_home=root / "agent")
        with running:
            credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
            with grpc.secure_channel(running.targets[1], credentials) as channel:
                yield running, table, channel, root / "agent" / "journal.sqlite"


def _generated_tokens() -> float:
    from agentd.server.metrics import GENERATED_TOKENS

    return sum(sample.value for family in GENERATED_TOKENS.collect() for sample in family.samples if sample.name.endswith("_total"))


def _runs(journal) -> int:
    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def test_every_rpc_refuses_every_wrong_credential_whatever_the_payload(daemon, caplog) -> None:
    running, table, channel, journal = daemon
    runs_before, models_before, tokens_before = _runs(journal), [m.name for m in table], _generated_tokens()
    seen: Counter[str] = Counter()
    with caplog.at_level(logging.DEBUG):
        for rpc in RPCS:
            for payload_name, payload in payloads(rpc).items():
                for credential_name, metadata in WRONG.items():
                    answer = call(channel, rpc, [payload] if rpc.kind is Kind.BIDI else payload, metadata=metadata, timeout=30)
                    assert answer.code == grpc.StatusCode.UNAUTHENTICATED, (rpc.method, payload_name, credential_name, answer)
                    assert "bearer token" in answer.details
                    seen[answer.code.name] += 1
    print(f"{len(RPCS)} RPCs x {len(WRONG)} credentials x 3 payloads: {dict(seen)}")
    assert sum(seen.values()) == len(RPCS) * len(WRONG) * 3
    # Nothing ran behind the refusals.
    assert _runs(journal) == runs_before and [m.name for m in table] == models_before and _generated_tokens() == tokens_before
    assert TOKEN not in caplog.text


def test_the_right_token_gets_past_the_check_on_every_rpc(daemon) -> None:
    """The sweep's control: with the token, no RPC is UNAUTHENTICATED (model admin is still local only)."""
    _, _, channel, _ = daemon
    codes = {}
    for rpc in RPCS:
        until = (lambda _: True) if rpc.kind is not Kind.UNARY else None  # the first answer is enough
        payload = payloads(rpc)["well-formed"]
        answer = call(channel, rpc, [payload] if rpc.kind is Kind.BIDI else payload, metadata=RIGHT, until=until, timeout=60)
        codes[rpc.method] = answer.code
        assert answer.code != grpc.StatusCode.UNAUTHENTICATED, (rpc.method, answer)
    assert codes["/agentd.v1.Models/ListModels"] == grpc.StatusCode.OK
    assert codes["/agentd.v1.Models/LoadModel"] == grpc.StatusCode.PERMISSION_DENIED


def test_health_needs_no_token(daemon) -> None:
    _, _, channel, _ = daemon
    (check,) = [rpc for rpc in rpcs(health_pb2) if rpc.method.endswith("/Check")]
    answer = call(channel, check, health_pb2.HealthCheckRequest().SerializeToString(), timeout=30)
    assert answer.code == grpc.StatusCode.OK
    assert health_pb2.HealthCheckResponse.FromString(answer.responses[0]).status == health_pb2.HealthCheckResponse.SERVING
