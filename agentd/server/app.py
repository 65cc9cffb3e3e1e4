"""The daemon: one grpc.aio server with Inference, Models, health and reflection.

Listens on a Unix socket (owner-only: the directory is made 0700, the socket
is bound under umask 0o177 so it is 0600 from its first instant) and,
optionally, on a loopback TCP port. SIGTERM/SIGINT stop it gracefully:
health turns NOT_SERVING, in-flight RPCs get ``grace`` seconds, the socket
file is removed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import stat
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentd.config import is_loopback, make_private_dirs, tcp_target, unix_target
from agentd.errors import AgentdError, InvalidArgument
from agentd.server.catalog import ModelsServicer
from agentd.server.inference import InferenceServicer
from agentd.server.interceptor import ErrorInterceptor
from agentd.server.served import ModelTable
from agentd.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc

log = logging.getLogger(__name__)

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
MODELS_SERVICE = models_pb2.DESCRIPTOR.services_by_name["Models"].full_name
#: Services whose health is reported; "" is the whole server.
HEALTH_SERVICES = ("", INFERENCE_SERVICE, MODELS_SERVICE)
#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107
SERVER_OPTIONS = [
    # Without this a second daemon could silently share a TCP port with the first.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class Daemon:
    """A configured server: ``start()``, then ``stop()`` (or ``run_until_signalled()``)."""

    def __init__(
        self,
        models: ModelTable,
        *,
        socket_path: Path | None,
        tcp: tuple[str, int] | None = None,
        grace: float = 5.0,
    ):
        if socket_path is None and tcp is None:
            raise InvalidArgument("--socket", "the daemon needs a Unix socket or a TCP address to listen on")
        self.models = models
        self.socket_path = socket_path.expanduser().absolute() if socket_path is not None else None
        self.tcp = check_tcp_address(tcp) if tcp is not None else None
        self.grace = grace
        #: Targets clients dial, filled by ``start()`` (``unix:///...``, ``127.0.0.1:PORT``).
        self.targets: list[str] = []
        self._server: aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None

    async def start(self) -> list[str]:
        """Bind, start serving and report SERVING; returns the targets listened on."""
        server = aio.server(interceptors=[ErrorInterceptor()], options=SERVER_OPTIONS)
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(self.models), server)
        models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(self.models), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (INFERENCE_SERVICE, MODELS_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if self.socket_path is not None:
            self.targets.append(_bind_unix(server, self.socket_path))
        if self.tcp is not None:
            self.targets.append(_bind_tcp(server, *self.tcp))
        await server.start()
        self._server = server
        for service in HEALTH_SERVICES:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.targets

    async def stop(self) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish for ``grace`` seconds, remove the socket."""
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(self.grace)
        self._server = None
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        try:
            await stopping.wait()
            log.info("stopping (grace %.1fs)", self.grace)
        finally:
            await self.stop()


def check_tcp_address(address: tuple[str, int]) -> tuple[str, int]:
    """Refuse non-loopback TCP: without TLS anyone on the network could use the models."""
    if not is_loopback(address[0]):
        raise InvalidArgument(
            "--tcp",
            f"{address[0]} is not a loopback address; insecure TCP is only allowed on "
            "127.0.0.1, ::1 or localhost until TLS is supported",
        )
    return address


def _bind_unix(server: aio.Server, path: Path) -> str:
    """Listen on ``path`` with mode 0600 from the start; returns the target."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise InvalidArgument("--socket", f"{path} is longer than {MAX_UNIX_PATH} bytes, too long for a Unix socket")
    _prepare_socket_dir(path.parent)
    _remove_stale_socket(path)
    target = unix_target(path)
    previous = os.umask(0o177)  # the socket file is created 0600: no window where others can connect
    try:
        _add_port(server, target)
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    return target


def _bind_tcp(server: aio.Server, host: str, port: int) -> str:
    bound = _add_port(server, tcp_target(host, port))
    return tcp_target(host, bound)


def _add_port(server: aio.Server, target: str) -> int:
    try:
        port = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise AgentdError(f"cannot listen on {target}: {exc}") from None
    if port == 0:
        raise AgentdError(f"cannot listen on {target} (address in use or not permitted)")
    return port


def _prepare_socket_dir(directory: Path) -> None:
    """Create the socket's directory owner-only; an existing one is left as it is."""
    try:
        make_private_dirs(directory)
    except OSError as exc:
        raise InvalidArgument("--socket", f"cannot create {directory}: {exc.strerror}") from None


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a daemon that died; refuse to steal a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise InvalidArgument("--socket", f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise AgentdError(f"cannot check existing socket {path}: {exc.strerror}") from None
    else:
        raise AgentdError(f"another agentd is already listening on {unix_target(path)}")
    finally:
        probe.close()
    path.unlink(missing_ok=True)
    log.info("removed stale socket %s", path)
