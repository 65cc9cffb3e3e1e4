"""Who may talk to the daemon: TLS credentials, bearer tokens, and the interceptor that checks them.

Policy (docs/configuration.md, "Security"):

* Unix socket: the socket's 0600 mode is the access control; with
  ``socket_requires_token`` the bearer token is required there too.
* TCP: TLS always (``--insecure-loopback`` is a development exception). A
  client authenticates with the bearer token (``authorization: Bearer <t>``,
  compared in constant time), with a client certificate signed by
  ``tls_client_ca`` (enforced in the TLS handshake, before any RPC), or both
  when both are configured.
* ``grpc.health.v1.Health`` answers without credentials, so load balancers
  and supervisors can probe; every other service (reflection included)
  requires them: UNAUTHENTICATED otherwise.
* Model management (LoadModel, UnloadModel) makes the daemon read server-side
  paths, so over TCP it is PERMISSION_DENIED unless ``remote_admin`` is set.

Token bytes live only in :class:`AuthInterceptor`; they are never logged.
"""

from __future__ import annotations

import hmac
import logging
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

import grpc
from grpc import aio

from agentd.errors import InvalidArgument

if TYPE_CHECKING:
    from agentd.config import ServeConfig

log = logging.getLogger(__name__)

AUTHORIZATION_METADATA = "authorization"
#: Shortest token accepted: a guessable token over TCP is no authentication.
MIN_TOKEN_LENGTH = 16
#: Methods reachable without credentials.
PUBLIC_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
#: Methods that make the daemon read server-side paths: local (Unix socket) only unless remote_admin.
ADMIN_METHODS = frozenset({"/agentd.v1.Models/LoadModel", "/agentd.v1.Models/UnloadModel"})

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


# -- credentials from files --------------------------------------------------------------
def load_token(path: Path) -> bytes:
    """The bearer token in ``path`` (surrounding whitespace stripped); refuses weak or exposed tokens."""
    option = "--auth-token-file"
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(option, f"{path}: cannot read ({exc.strerror})") from None
    if stat.S_IMODE(mode) & 0o077:
        # Like ssh with private keys: a token others can read is not a secret.
        raise InvalidArgument(option, f"{path} is accessible by group or others; chmod 600 it")
    token = raw.strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise InvalidArgument(option, f"{path}: the token must be at least {MIN_TOKEN_LENGTH} characters")
    if any(byte < 0x21 or byte > 0x7E for byte in token):
        # It travels in an HTTP/2 header: printable ASCII without spaces only.
        raise InvalidArgument(option, f"{path}: the token must be printable ASCII without spaces")
    return token


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS credentials for the TCP listener; with ``client_ca`` clients must present a certificate it signed.

    The files are checked with the ``ssl`` module first, so a wrong file is
    reported by name here instead of as a failed handshake later.
    """
    for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None and not path.is_file():
            raise InvalidArgument(option, f"{path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidArgument("--tls-cert", f"{cert} with key {key}: not a matching PEM certificate and key ({exc.strerror or exc})") from None
    root = None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
            root = client_ca.read_bytes()
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument("--tls-client-ca", f"{client_ca}: not a readable PEM CA bundle ({exc.strerror or exc})") from None
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=root, require_client_auth=client_ca is not None
    )


# -- the interceptor -----------------------------------------------------------------------
class AuthInterceptor(aio.ServerInterceptor):
    """Checks one listener's calls: the bearer token (if configured) and the admin rule.

    :param token: the expected token, or None when the listener needs none
        (mutual TLS only: the handshake already authenticated the client).
    :param admin_allowed: whether :data:`ADMIN_METHODS` may be called here.
    :param listener: ``unix`` or ``tcp``, for log lines and messages.
    """

    def __init__(self, token: bytes | None, *, admin_allowed: bool, listener: str):
        self._token = token
        self._admin_allowed = admin_allowed
        self._listener = listener

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method in PUBLIC_METHODS:
            return await continuation(handler_call_details)
        denial = self._check(method, handler_call_details.invocation_metadata or ())
        if denial is None:
            return await continuation(handler_call_details)
        code, message = denial
        log.warning("denied %s on the %s listener: %s", method, self._listener, code.name, extra={"rpc": method, "status": code.name})
        return _denying_handler(await continuation(handler_call_details), code, message)

    def _check(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may proceed, else the status and the client-visible reason."""
        if self._token is not None:
            presented = _bearer_token(metadata)
            if presented is None:
                return grpc.StatusCode.UNAUTHENTICATED, (
                    "missing bearer token: send metadata 'authorization: Bearer <token>' "
                    "with the token from the daemon's auth_token_file"
                )
            # Constant time: the comparison must not reveal how many leading bytes matched.
            if not hmac.compare_digest(presented, self._token):
                return grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token"
        if method in ADMIN_METHODS and not self._admin_allowed:
            name = method.rpartition("/")[2]
            return grpc.StatusCode.PERMISSION_DENIED, (
                f"{name} is only allowed over the Unix socket (the daemon's remote_admin setting is off)"
            )
        return None


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> bytes | None:
    """The token of the ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata:
        if key.lower() != AUTHORIZATION_METADATA:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip().encode("latin-1")
        return b""  # present but malformed: compared (and rejected) like a wrong token
    return None


def _denying_handler(
    handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only aborts with ``code``."""

    async def deny(request_or_iterator: object, context: aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler is None:  # unknown method: deny before revealing that it does not exist
        return grpc.unary_unary_rpc_method_handler(deny)
    # No request deserializer: a denied request is never parsed, so malformed bytes are refused
    # for the credentials like any other (not UNKNOWN for the parse, before auth).
    serializers = {"response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **serializers)
    return grpc.unary_unary_rpc_method_handler(deny, **serializers)



@dataclass(frozen=True)
class Security:
    """How the daemon's listeners authenticate; the default is the Unix-socket-only policy.

    Build it from a :class:`~agentd.config.ServeConfig` with :meth:`from_config`,
    which reads (and checks) the certificate, key and token files.
    """

    #: TLS for the TCP listener; None means plaintext (loopback only, for development).
    tcp_credentials: grpc.ServerCredentials | None = None
    #: Bearer token required over TCP (and on the socket with socket_requires_token).
    token: bytes | None = None
    socket_requires_token: bool = False
    remote_admin: bool = False

    @classmethod
    def from_config(cls, config: "ServeConfig") -> "Security":
        credentials = None
        if config.tls_cert is not None and config.tls_key is not None:
            credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        token = load_token(config.auth_token_file) if config.auth_token_file is not None else None
        return cls(credentials, token, config.socket_requires_token, config.remote_admin)

    def unix_interceptors(self) -> list[aio.ServerInterceptor]:
        """Socket callers are local users the file mode let in: admin allowed, token only if required."""
        if not self.socket_requires_token:
            return []
        return [AuthInterceptor(self.token, admin_allowed=True, listener="unix")]

    def tcp_interceptors(self) -> list[aio.ServerInterceptor]:
        if self.token is None and self.remote_admin:
            return []  # mutual TLS only: the handshake authenticated the client
        return [AuthInterceptor(self.token, admin_allowed=self.remote_admin, listener="tcp")]
