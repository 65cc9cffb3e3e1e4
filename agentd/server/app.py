"""The daemon: grpc.aio servers with Inference, Models, Agent, health and reflection.

Listens on a Unix socket (owner-only: the directory is made 0700, the socket
is bound under umask 0o177 so it is 0600 from its first instant) and,
optionally, on TCP. Each listener is its own ``aio.Server`` over the same
servicers, so its authentication policy (agentd.server.auth) is fixed by
where a call arrived, never guessed from the peer address.

SIGTERM/SIGINT drain: health turns NOT_SERVING, the listeners stop accepting,
in-flight RPCs get ``grace`` seconds to finish and are then cancelled, the
socket file is removed.
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
from typing import TYPE_CHECKING

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentd.config import is_loopback, make_private_dirs, tcp_target, unix_target
from agentd.errors import AgentdError, InvalidArgument
from agentd.server.access_log import AccessLogInterceptor
from agentd.server.auth import Security
from agentd.server.catalog import ModelsServicer
from agentd.server.inference import InferenceServicer
from agentd.server.interceptor import ErrorInterceptor
from agentd.server.served import ModelTable
from agentd.v1 import agent_pb2, agent_pb2_grpc, inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from agentd.agent.runs import RunManager

log = logging.getLogger(__name__)

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
MODELS_SERVICE = models_pb2.DESCRIPTOR.services_by_name["Models"].full_name
AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
#: Services whose health is reported; "" is the whole server.
HEALTH_SERVICES = ("", INFERENCE_SERVICE, MODELS_SERVICE)
#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107
SERVER_OPTIONS = [
    # Without this a second daemon could silently share a TCP port with the first.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class HealthServicer(health.aio.HealthServicer):
    """grpc's health servicer, answering as the rest of the daemon does.

    Its Check refuses an unknown service with a bare NOT_FOUND, and it lacks List (added to the
    health protocol after it was written: the generated base raises, which was INTERNAL).
    """

    async def Check(self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = self._server_status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no health status for service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(self, request: health_pb2.HealthListRequest, context: aio.ServicerContext) -> health_pb2.HealthListResponse:
        statuses = {service: health_pb2.HealthCheckResponse(status=status) for service, status in self._server_status.items()}
        return health_pb2.HealthListResponse(statuses=statuses)


class Daemon:
    """A configured server: ``start()``, then ``stop()`` (or ``run_until_signalled()``).

    ``security`` defaults to no TLS and no token: fine for the Unix socket, and
    the constructor still refuses plaintext TCP beyond loopback. ``agentd
    serve`` builds it from the configuration, which requires TLS for TCP
    unless ``insecure_loopback`` is set (agentd.config.check_security).
    """

    def __init__(
        self,
        models: ModelTable,
        *,
        socket_path: Path | None,
        tcp: tuple[str, int] | None = None,
        grace: float = 5.0,
        security: Security = Security(),
        log_prompts: bool = False,
        metrics: tuple[str, int] | None = None,
        agent_home: Path | None = None,
        planner: str | None = None,
        plan_cache: bool = True,
        upstream: str | None = None,
    ):
        if socket_path is None and tcp is None:
            raise InvalidArgument("--socket", "the daemon needs a Unix socket or a TCP address to listen on")
        self.models = models
        self.socket_path = socket_path.expanduser().absolute() if socket_path is not None else None
        self.security = security
        self.tcp = tcp if tcp is None or security.tcp_credentials is not None else check_tcp_address(tcp)
        self.grace = grace
        self.log_prompts = log_prompts
        #: ``(host, port)`` of the Prometheus endpoint, or None for none.
        self.metrics = metrics
        #: ``http://host:port/metrics`` once started.
        self.metrics_url: str | None = None
        self._metrics_server: WSGIServer | None = None
        #: Targets clients dial, filled by ``start()`` (``unix:///...``, ``127.0.0.1:PORT``).
        self.targets: list[str] = []
        self._servers: list[aio.Server] = []
        self._health: HealthServicer | None = None
        self._socket_inode: int | None = None
        #: Where the agent keeps its journal (``journal.sqlite``) and tool packs their state
        #: (``tools/``); None serves no Agent service. The agent needs the Unix socket: its
        #: planner reaches the models through it, like any client.
        self.agent_home = agent_home if socket_path is not None else None
        self.runs: RunManager | None = None
        self.planner = planner
        #: False: the agent never plans from a user's plan templates (``--no-plan-cache``).
        self.plan_cache = plan_cache
        #: Where Inference, Models and Agent are served instead of here (``agentd serve --ray``:
        #: the Ray Serve proxy); every call is forwarded there (agentd.server.forward).
        self.upstream = upstream
        if upstream is not None:
            self.agent_home = None  # the agent is the upstream's
        self._upstream_channel: aio.Channel | None = None

    async def start(self) -> list[str]:
        """Bind, start serving and report SERVING; returns the targets listened on."""
        self._health = HealthServicer()
        if self.agent_home is not None:
            from agentd.agent.credentials import CredentialStore
            from agentd.agent.runs import RunManager

            self.runs = RunManager(
                self.agent_home / "journal.sqlite", self.agent_home / "tools", unix_target(self.socket_path),
                credentials=CredentialStore(self.agent_home / "credentials"), planner=self.planner,
                plan_cache=self.plan_cache,
            )
        servicers = (InferenceServicer(self.models), ModelsServicer(self.models))
        if self.upstream is not None:
            self._upstream_channel = aio.insecure_channel(self.upstream, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        try:
            if self.socket_path is not None:
                server = self._server(servicers, self.security.unix_interceptors())
                self.targets.append(_bind_unix(server, self.socket_path))
                self._socket_inode = self.socket_path.stat().st_ino
            if self.tcp is not None:
                server = self._server(servicers, self.security.tcp_interceptors())
                self.targets.append(_bind_tcp(server, *self.tcp, self.security))
            for server in self._servers:
                await server.start()
            if self.metrics is not None:
                self._start_metrics(*self.metrics)
        except BaseException:
            await self._stop_servers(0)
            raise
        for service in HEALTH_SERVICES:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await self.models.bind_health(self._health)  # one health service per model
        if self.runs is not None:
            await self._health.set(AGENT_SERVICE, health_pb2.HealthCheckResponse.SERVING)
            for run_id in self.runs.resume_unfinished():  # after a restart, carry on where runs stopped
                log.info("resumed run %s", run_id)
        return self.targets

    async def stop(self) -> None:
        """Drain: NOT_SERVING, stop accepting, ``grace`` seconds for in-flight RPCs, then cancel them."""
        if not self._servers:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._stop_servers(self.grace)
        if self.runs is not None:
            await self.runs.close()  # runs stop; their journal says where, for the next start
        await self.models.close()  # after the RPCs that used the engines have ended
        if self._upstream_channel is not None:
            await self._upstream_channel.close()
            self._upstream_channel = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        log.info("stopped")

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and stop."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        try:
            await stopping.wait()
            log.info("stopping: in-flight requests get %.1f s to finish", self.grace, extra={"grace_s": self.grace})
        finally:
            await self.stop()

    def _server(self, servicers: tuple[InferenceServicer, ModelsServicer], auth: list[aio.ServerInterceptor]) -> aio.Server:
        """One listener's server: auth first, then error mapping, then the access log around the servicer."""
        interceptors = [*auth, ErrorInterceptor(), AccessLogInterceptor(log_prompts=self.log_prompts)]
        server = aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
        if self._upstream_channel is not None:
            from agentd.server.forward import ForwardingHandler

            forwarding = ForwardingHandler(self._upstream_channel)
            server.add_generic_rpc_handlers((forwarding,))
            services = list(forwarding.services)
        else:
            inference, models = servicers
            inference_pb2_grpc.add_InferenceServicer_to_server(inference, server)
            models_pb2_grpc.add_ModelsServicer_to_server(models, server)
            services = [INFERENCE_SERVICE, MODELS_SERVICE]
        if self.runs is not None:
            from agentd.server.agent import AgentServicer

            agent_pb2_grpc.add_AgentServicer_to_server(AgentServicer(self.runs), server)
            services.append(AGENT_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((*services, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self._servers.append(server)
        return server

    def _start_metrics(self, host: str, port: int) -> None:
        from agentd.server.metrics import start_metrics_server

        try:
            self._metrics_server = start_metrics_server(port, host)
        except OSError as exc:
            raise InvalidArgument("--metrics-port", f"cannot listen on {tcp_target(host, port)}: {exc.strerror}") from None
        self.metrics_url = f"http://{tcp_target(host, self._metrics_server.server_port)}/metrics"

    async def _stop_servers(self, grace: float) -> None:
        servers, self._servers = self._servers, []
        # All listeners drain together: the grace period is one wall-clock budget.
        await asyncio.gather(*(server.stop(grace) for server in servers))
        self._remove_own_socket()

    def _remove_own_socket(self) -> None:
        """Remove the socket file, unless another daemon has meanwhile bound the same path."""
        if self.socket_path is None or self._socket_inode is None:
            return
        try:
            if self.socket_path.lstat().st_ino == self._socket_inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass
        self._socket_inode = None


def check_tcp_address(address: tuple[str, int]) -> tuple[str, int]:
    """Refuse plaintext TCP beyond loopback: anyone on the network could use the models."""
    if not is_loopback(address[0]):
        raise InvalidArgument(
            "--tcp",
            f"{address[0]} is not a loopback address; TCP beyond this machine needs --tls-cert and --tls-key",
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


def _bind_tcp(server: aio.Server, host: str, port: int, security: Security) -> str:
    bound = _add_port(server, tcp_target(host, port), security)
    return tcp_target(host, bound)


def _add_port(server: aio.Server, target: str, security: Security | None = None) -> int:
    try:
        if security is not None and security.tcp_credentials is not None:
            port = server.add_secure_port(target, security.tcp_credentials)
        else:
            port = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise AgentdError(f"cannot listen on {target}: {exc}") from None
    if port == 0:
        raise AgentdError(f"cannot listen on {target} (address in use or not permitted)")
    return port


def _prepare_socket_dir(directory: Path) -> None:
    """Create the socket's directory owner-only; an existing one is left as it is, with a warning
    when others may write to it: they could then delete the socket and put their own in its place."""
    try:
        make_private_dirs(directory)
    except OSError as exc:
        raise InvalidArgument("--socket", f"cannot create {directory}: {exc.strerror}") from None
    mode = directory.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        sticky = " (sticky, so others cannot remove it, but can squat names there)" if mode & stat.S_ISVTX else ""
        log.warning(
            "socket directory %s is writable by %s%s: prefer an owner-only directory such as $XDG_RUNTIME_DIR/agentd",
            directory, "others" if mode & stat.S_IWOTH else "its group", sticky,
        )


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
