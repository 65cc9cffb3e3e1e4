"""Who may talk to the daemon: TLS + bearer token, mutual TLS, health without auth, plain TCP refused.

Daemons run in-process over a tiny random Llama, with a throwaway PKI made
by ``cryptography``. Status codes are checked with raw gRPC stubs (what any
client in any language sees); the SDK is checked to turn them into one-line
agentd errors.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentd.client import Client, Credentials, SamplingOptions
from agentd.config import ServeConfig, load_serve_config
from agentd.errors import AgentdError, InvalidArgument, Unauthenticated, Unavailable
from agentd.server.auth import Security, load_token, server_credentials
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import models_pb2, models_pb2_grpc
from tests._daemon_fixtures import socket_dir, tiny_llama
from tests._deploy_fixtures import AGENTD, TOKEN, environment, in_process_daemon, make_pki, write_token

LIST_MODELS = "/agentd.v1.Models/ListModels"
LOAD_MODEL = "/agentd.v1.Models/LoadModel"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    return write_token(tmp_path_factory.mktemp("token"))


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> ModelTable:
    root = tmp_path_factory.mktemp("models")
    return ModelTable.load([ModelSource("tiny-llama", tiny_llama(root))])


@pytest.fixture(scope="module")
def token_daemon(table, pki, token_file):
    """TLS + token on TCP; the Unix socket needs nothing but its file mode."""
    security = Security.from_config(
        ServeConfig(tcp=("127.0.0.1", 0), tls_cert=pki.server_cert, tls_key=pki.server_key, auth_token_file=token_file)
    )
    with socket_dir() as directory:
        with in_process_daemon(table, directory / "a.sock", tcp=("127.0.0.1", 0), security=security) as running:
            yield running


@pytest.fixture(scope="module")
def mtls_daemon(table, pki):
    """Mutual TLS only (no token) on TCP."""
    security = Security.from_config(
        ServeConfig(tcp=("127.0.0.1", 0), tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca)
    )
    with socket_dir() as directory:
        with in_process_daemon(table, directory / "m.sock", tcp=("127.0.0.1", 0), security=security) as running:
            yield running


def tls_channel(target: str, pki, *, client_cert: bool = False) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes() if client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(target, credentials)


def call_status(channel: grpc.Channel, method: str, metadata=()) -> tuple[grpc.StatusCode, str]:
    """Status code and details of a raw unary call with an empty request."""
    call = channel.unary_unary(method, request_serializer=lambda m: m, response_deserializer=lambda b: b)
    try:
        call(b"", metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# -- TLS + token ----------------------------------------------------------------------------
def test_tls_and_token_serve_generation(token_daemon, pki, token_file) -> None:
    tcp = token_daemon.targets[1]
    credentials = Credentials(ca_file=pki.ca, token_file=token_file)
    with Client(tcp, credentials=credentials, timeout=60) as client:
        assert [m.name for m in client.list_models()] == ["tiny-llama"]
        remote = client.generate("hello", sampling=SamplingOptions(max_tokens=5, temperature=0))
        remote_ids = [i for chunk in remote for i in chunk.token_ids]
    # The same request over the Unix socket (no token there) gives the same greedy tokens.
    with Client(token_daemon.targets[0], timeout=60) as local:
        local_ids = [i for chunk in local.generate("hello", sampling=SamplingOptions(max_tokens=5, temperature=0)) for i in chunk.token_ids]
    assert remote_ids == local_ids and len(remote_ids) == 5
    assert remote.finish_reason == "length"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing bearer token"),
        (bearer("not-the-token-at-all-0000"), "invalid bearer token"),
        (bearer(TOKEN[:-1]), "invalid bearer token"),
        ((("authorization", f"Basic {TOKEN}"),), "invalid bearer token"),
    ],
    ids=["missing", "wrong", "prefix", "wrong-scheme"],
)
def test_missing_or_wrong_token_is_unauthenticated(token_daemon, pki, metadata, message) -> None:
    with tls_channel(token_daemon.targets[1], pki) as channel:
        code, details = call_status(channel, LIST_MODELS, metadata)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert details.startswith(message)
        # Streaming RPCs are denied the same way.
        stream = channel.unary_stream("/agentd.v1.Inference/Generate", request_serializer=lambda m: m, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as denied:
            list(stream(b"", metadata=metadata, timeout=30))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_sdk_reports_a_rejected_token_in_one_line(token_daemon, pki) -> None:
    with Client(token_daemon.targets[1], credentials=Credentials(ca_file=pki.ca, token="x" * 20), timeout=30) as client:
        with pytest.raises(Unauthenticated) as rejected:
            client.list_models()
    assert str(rejected.value) == f"agentd at {token_daemon.targets[1]} refused the call (UNAUTHENTICATED): invalid bearer token"


def test_health_needs_no_token_but_reflection_does(token_daemon, pki) -> None:
    with tls_channel(token_daemon.targets[1], pki) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as denied:
            list(reflection.ServerReflectionInfo(iter([request]), timeout=30))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        allowed = list(reflection.ServerReflectionInfo(iter([request]), metadata=bearer(TOKEN), timeout=30))
        assert "agentd.v1.Inference" in {s.name for s in allowed[0].list_services_response.service}


MALFORMED = {
    "corrupt wire format": b"\xff\xff\xff\xff",
    "invalid UTF-8 in a string field": b"\x0a\x02\xff\xfe",  # GetModelInfoRequest.name
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_protobuf_is_refused_after_auth_and_logs_no_traceback(token_daemon, pki, payload, caplog) -> None:
    """Issue 12, break 3: it was UNKNOWN ("Unexpected DecodeError") on every RPC, before auth, with a traceback."""
    method = "/agentd.v1.Models/GetModelInfo"

    def status(channel: grpc.Channel, metadata=(), stream: bool = False) -> tuple[grpc.StatusCode, str]:
        if stream:
            call = channel.unary_stream("/agentd.v1.Inference/Generate", request_serializer=lambda m: m, response_deserializer=lambda b: b)
            try:
                list(call(payload, metadata=metadata, timeout=30))
            except grpc.RpcError as exc:
                return exc.code(), exc.details()
            return grpc.StatusCode.OK, ""
        call = channel.unary_unary(method, request_serializer=lambda m: m, response_deserializer=lambda b: b)
        try:
            call(payload, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, ""

    with caplog.at_level(logging.INFO):
        with tls_channel(token_daemon.targets[1], pki) as channel:
            assert status(channel)[0] == grpc.StatusCode.UNAUTHENTICATED  # no token: refused as such, whatever the bytes
            assert status(channel, stream=True)[0] == grpc.StatusCode.UNAUTHENTICATED
            code, details = status(channel, bearer(TOKEN))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert details == "request: is not a valid agentd.v1.GetModelInfoRequest message (malformed protobuf)"
        with grpc.insecure_channel(token_daemon.targets[0]) as channel:
            assert status(channel)[0] == grpc.StatusCode.INVALID_ARGUMENT
            code, details = status(channel, stream=True)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "agentd.v1.GenerateRequest" in details
        with Client(token_daemon.targets[0], timeout=30) as client:  # still serving
            assert client.list_models()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], [r.getMessage() for r in caplog.records]


def test_unix_socket_needs_no_token(token_daemon) -> None:
    with grpc.insecure_channel(token_daemon.targets[0]) as channel:
        response = models_pb2_grpc.ModelsStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=30)
    assert [m.name for m in response.models] == ["tiny-llama"]
    assert stat.S_IMODE(os.stat(token_daemon.daemon.socket_path).st_mode) == 0o600


def test_model_management_is_local_only_by_default(token_daemon, pki) -> None:
    with tls_channel(token_daemon.targets[1], pki) as channel:
        code, details = call_status(channel, LOAD_MODEL, bearer(TOKEN))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == "LoadModel is only allowed over the Unix socket (the daemon's remote_admin setting is off)"
    with grpc.insecure_channel(token_daemon.targets[0]) as channel:
        code, _ = call_status(channel, LOAD_MODEL)
    assert code != grpc.StatusCode.PERMISSION_DENIED  # reaches the servicer (or UNIMPLEMENTED before it exists)


def test_untrusted_server_certificate_is_refused(token_daemon, pki, token_file) -> None:
    credentials = Credentials(ca_file=pki.rogue_ca, token_file=token_file)
    with Client(token_daemon.targets[1], credentials=credentials, timeout=10) as client:
        with pytest.raises(Unavailable, match="TLS handshake with agentd at"):
            client.list_models()


def test_token_never_reaches_the_log(token_daemon, pki, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        with tls_channel(token_daemon.targets[1], pki) as channel:
            call_status(channel, LIST_MODELS, bearer(TOKEN))
            call_status(channel, LIST_MODELS, bearer(TOKEN + "-wrong"))
    assert "denied /agentd.v1.Models/ListModels on the tcp listener: UNAUTHENTICATED" in caplog.text
    assert TOKEN not in caplog.text


# -- mutual TLS ----------------------------------------------------------------------------
def test_mutual_tls_accepts_a_client_certificate(mtls_daemon, pki) -> None:
    credentials = Credentials(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    with Client(mtls_daemon.targets[1], credentials=credentials, timeout=60) as client:
        assert [m.name for m in client.list_models()] == ["tiny-llama"]
        assert client.health() == "SERVING"


@pytest.mark.parametrize("client_cert", ["none", "rogue"])
def test_mutual_tls_refuses_missing_or_foreign_certificates(mtls_daemon, pki, client_cert) -> None:
    if client_cert == "none":
        credentials = Credentials(ca_file=pki.ca)
    else:
        credentials = Credentials(ca_file=pki.ca, cert_file=pki.rogue_client_cert, key_file=pki.rogue_client_key)
    with Client(mtls_daemon.targets[1], credentials=credentials, timeout=10) as client:
        with pytest.raises(Unavailable):
            client.list_models()


# -- configuration checks ----------------------------------------------------------------------
def test_socket_can_require_the_token(table, pki, token_file) -> None:
    security = Security.from_config(ServeConfig(auth_token_file=token_file, socket_requires_token=True))
    with socket_dir() as directory, in_process_daemon(table, directory / "t.sock", security=security) as running:
        with grpc.insecure_channel(running.targets[0]) as channel:
            assert call_status(channel, LIST_MODELS)[0] == grpc.StatusCode.UNAUTHENTICATED
            assert call_status(channel, LIST_MODELS, bearer(TOKEN))[0] == grpc.StatusCode.OK
            assert call_status(channel, LOAD_MODEL, bearer(TOKEN))[0] != grpc.StatusCode.PERMISSION_DENIED


def test_plain_tcp_is_refused_at_start(tmp_path) -> None:
    env = environment(tmp_path / "home")
    base = [*AGENTD, "serve", "--no-defaults", "--socket", str(tmp_path / "x.sock")]
    plain = subprocess.run([*base, "--tcp", "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr.strip() == (
        "agentd: error: --tcp: plain TCP is refused: give --tls-cert and --tls-key, or --insecure-loopback for development"
    )
    public = subprocess.run(
        [*base, "--tcp", "0.0.0.0:0", "--insecure-loopback"], env=env, capture_output=True, text=True, timeout=120
    )
    assert public.returncode == 2 and "--tcp: 0.0.0.0 is not a loopback address" in public.stderr
    assert not (tmp_path / "x.sock").exists()


def test_tls_without_client_authentication_is_refused(pki) -> None:
    with pytest.raises(InvalidArgument, match="TCP clients must authenticate"):
        load_serve_config(
            flags={"tcp": "0.0.0.0:7070", "tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key)}, environ={}
        )
    with pytest.raises(InvalidArgument, match="--tls-cert: needs --tls-key too"):
        load_serve_config(flags={"tls_cert": str(pki.server_cert)}, environ={})


def test_token_files_must_be_private_and_long(tmp_path) -> None:
    assert load_token(write_token(tmp_path)) == TOKEN.encode()
    with pytest.raises(InvalidArgument, match="accessible by group or others; chmod 600 it"):
        load_token(write_token(tmp_path, mode=0o644))
    with pytest.raises(InvalidArgument, match="at least 16 characters"):
        load_token(write_token(tmp_path, token="short"))
    with pytest.raises(InvalidArgument, match="--auth-token-file: .*missing: cannot read"):
        load_token(tmp_path / "missing")


def test_mismatched_certificate_files_are_named(pki) -> None:
    with pytest.raises(InvalidArgument, match="^--tls-cert: .*server.pem with key .*client.key: not a matching"):
        server_credentials(pki.server_cert, pki.client_key, None)
    with pytest.raises(InvalidArgument, match="^--tls-client-ca: .*server.key: not a readable PEM CA bundle"):
        server_credentials(pki.server_cert, pki.server_key, pki.server_key)
    with pytest.raises(InvalidArgument, match="^--tls-key: /nonexistent/server.key: no such file$"):
        server_credentials(pki.server_cert, Path("/nonexistent/server.key"), None)
