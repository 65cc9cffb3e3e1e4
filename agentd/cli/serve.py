"""``agentd serve``: run the daemon.

Every option is also a key of the TOML config file and an ``AGENTD_*``
environment variable (agentd.config.KEYS; docs/configuration.md); flags win.
Options default to None here so "not given" is distinguishable from a value.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from agentd.cli import app

if TYPE_CHECKING:
    from agentd.config import ServeConfig
    from agentd.server.app import Daemon
    from agentd.server.auth import Security
    from agentd.server.served import ModelSource, ServingSettings


class LogFormatChoice(str, enum.Enum):
    """``--log-format`` values (auto: JSON unless stderr is a terminal)."""

    auto = "auto"
    json = "json"
    text = "text"


class LogLevelChoice(str, enum.Enum):
    """``--log-level`` values."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


SECURITY = "Security"
LOGGING = "Logging"
ENGINE = "Engine"
RAY = "Ray Serve"


@app.command()
def serve(
    config_file: Annotated[
        Optional[Path], typer.Option("--config", help="TOML config file (default: $AGENTD_CONFIG, else $AGENTD_HOME/agentd.toml if present).")
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the effective configuration as TOML and exit.")
    ] = False,
    socket: Annotated[
        Optional[Path], typer.Option("--socket", help="Unix socket to listen on (default: $XDG_RUNTIME_DIR/agentd/agentd.sock or $AGENTD_HOME/agentd.sock).")
    ] = None,
    tcp: Annotated[
        Optional[str], typer.Option("--tcp", metavar="HOST:PORT", help="Also listen on TCP (needs TLS, or --insecure-loopback).")
    ] = None,
    model_dir: Annotated[
        Optional[list[Path]], typer.Option("--model-dir", metavar="DIR", help="A directory LoadModel may load from (repeatable; default: any path).")
    ] = None,
    model: Annotated[
        Optional[list[str]], typer.Option("--model", metavar="NAME=PATH", help="Serve the model at PATH (a directory or file in any format `agentd models formats` lists; repeatable).")
    ] = None,
    no_defaults: Annotated[
        Optional[bool], typer.Option("--no-defaults/--defaults", show_default=False, help="Do not serve the built-in default models.")
    ] = None,
    grace: Annotated[
        Optional[float], typer.Option("--grace", help="Seconds in-flight requests get on SIGTERM/SIGINT before they are cancelled.")
    ] = None,
    tls_cert: Annotated[
        Optional[Path], typer.Option("--tls-cert", help="PEM server certificate (chain) for TCP.", rich_help_panel=SECURITY)
    ] = None,
    tls_key: Annotated[
        Optional[Path], typer.Option("--tls-key", help="PEM private key of --tls-cert.", rich_help_panel=SECURITY)
    ] = None,
    tls_client_ca: Annotated[
        Optional[Path], typer.Option("--tls-client-ca", help="Require TCP clients to present a certificate signed by this CA (mutual TLS).", rich_help_panel=SECURITY)
    ] = None,
    auth_token_file: Annotated[
        Optional[Path], typer.Option("--auth-token-file", help="File with the bearer token TCP clients must send.", rich_help_panel=SECURITY)
    ] = None,
    insecure_loopback: Annotated[
        Optional[bool], typer.Option("--insecure-loopback/--no-insecure-loopback", show_default=False, help="Allow plaintext TCP on a loopback address (development only).", rich_help_panel=SECURITY)
    ] = None,
    socket_requires_token: Annotated[
        Optional[bool], typer.Option("--socket-requires-token/--no-socket-requires-token", show_default=False, help="Require the bearer token on the Unix socket too.", rich_help_panel=SECURITY)
    ] = None,
    remote_admin: Annotated[
        Optional[bool], typer.Option("--remote-admin/--no-remote-admin", show_default=False, help="Allow LoadModel/UnloadModel over TCP.", rich_help_panel=SECURITY)
    ] = None,
    log_format: Annotated[
        Optional[LogFormatChoice], typer.Option("--log-format", help="json, text, or auto (json unless stderr is a terminal).", rich_help_panel=LOGGING)
    ] = None,
    log_level: Annotated[
        Optional[LogLevelChoice], typer.Option("--log-level", rich_help_panel=LOGGING)
    ] = None,
    log_prompts: Annotated[
        Optional[bool], typer.Option("--log-prompts/--no-log-prompts", show_default=False, help="Log prompt text (off by default).", rich_help_panel=LOGGING)
    ] = None,
    max_batch: Annotated[
        Optional[int], typer.Option("--max-batch", help="Most requests decoded together per model.", rich_help_panel=ENGINE)
    ] = None,
    max_queue: Annotated[
        Optional[int], typer.Option("--max-queue", help="Most requests waiting per model.", rich_help_panel=ENGINE)
    ] = None,
    prefill_chunk: Annotated[
        Optional[int], typer.Option("--prefill-chunk", help="Prompt tokens prefilled per engine step.", rich_help_panel=ENGINE)
    ] = None,
    memory_budget: Annotated[
        Optional[str], typer.Option("--memory-budget", metavar="SIZE", help="e.g. 4GiB; 0: no limit.", rich_help_panel=ENGINE)
    ] = None,
    prefix_cache_budget: Annotated[
        Optional[str], typer.Option("--prefix-cache-budget", metavar="SIZE", help="Cached prompt-prefix states per model; 0: off.", rich_help_panel=ENGINE)
    ] = None,
    session_budget: Annotated[
        Optional[str], typer.Option("--session-budget", metavar="SIZE", help="State all in-memory sessions may hold.", rich_help_panel=ENGINE)
    ] = None,
    session_ttl: Annotated[
        Optional[float], typer.Option("--session-ttl", help="Seconds an idle session is kept.", rich_help_panel=ENGINE)
    ] = None,
    quant: Annotated[
        Optional[str], typer.Option("--quant", metavar="auto|fp32|int8|int4", help="Weight encoding the torch backends compute with (auto: each checkpoint's own).", rich_help_panel=ENGINE)
    ] = None,
    threads: Annotated[
        Optional[int], typer.Option("--threads", help="Threads for model work, torch and onnxruntime alike (0: cores - 1, at least 1).", rich_help_panel=ENGINE)
    ] = None,
    metrics_host: Annotated[
        Optional[str], typer.Option("--metrics-host", help="Address of the Prometheus endpoint.", rich_help_panel=ENGINE)
    ] = None,
    metrics_port: Annotated[
        Optional[int], typer.Option("--metrics-port", help="Port of the Prometheus endpoint (unset: off).", rich_help_panel=ENGINE)
    ] = None,
    planner: Annotated[
        Optional[str], typer.Option("--planner", help="Planner the agent uses, by name (default: the highest-ranked registered planner).")
    ] = None,
    plan_cache: Annotated[
        Optional[bool],
        typer.Option("--plan-cache/--no-plan-cache", show_default=False, help="Plan from a user's plan template when one fits (default: on)."),
    ] = None,
    ray: Annotated[
        Optional[str],
        typer.Option("--ray", metavar="local|ADDRESS", help="Serve through Ray Serve: 'local' starts a Ray instance here; else the cluster at ADDRESS (docs/ray.md).", rich_help_panel=RAY),
    ] = None,
    replicas: Annotated[
        Optional[int], typer.Option("--replicas", help="With --ray: replicas of every model deployment.", rich_help_panel=RAY)
    ] = None,
    max_replicas: Annotated[
        Optional[int], typer.Option("--max-replicas", help="With --ray: autoscale each model between --replicas and this many.", rich_help_panel=RAY)
    ] = None,
    ray_grpc_port: Annotated[
        Optional[int], typer.Option("--ray-grpc-port", help="With --ray: port of Ray Serve's gRPC proxy (0: any free one).", rich_help_panel=RAY)
    ] = None,
    upstream: Annotated[
        Optional[str], typer.Option("--upstream", metavar="HOST:PORT", help="Serve no models: forward to the Ray Serve proxy at HOST:PORT (a RayService), behind this daemon's listeners.", rich_help_panel=RAY)
    ] = None,
) -> None:
    """Serve models over gRPC until SIGTERM or SIGINT (then drain for --grace seconds)."""
    from agentd.config import config_to_toml, load_serve_config

    flags: dict[str, Any] = {
        "socket": socket, "tcp": tcp, "models": model, "model_dirs": model_dir, "no_defaults": no_defaults, "grace": grace,
        "tls_cert": tls_cert, "tls_key": tls_key, "tls_client_ca": tls_client_ca, "auth_token_file": auth_token_file,
        "insecure_loopback": insecure_loopback, "socket_requires_token": socket_requires_token,
        "remote_admin": remote_admin, "log_format": log_format, "log_level": log_level, "log_prompts": log_prompts,
        "max_batch": max_batch, "max_queue": max_queue, "prefill_chunk": prefill_chunk,
        "memory_budget": memory_budget, "prefix_cache_budget": prefix_cache_budget,
        "session_budget": session_budget, "session_ttl": session_ttl, "quant": quant, "threads": threads, "metrics_host": metrics_host,
        "metrics_port": metrics_port, "planner": planner, "plan_cache": plan_cache,
        "ray": ray, "replicas": replicas, "max_replicas": max_replicas, "ray_grpc_port": ray_grpc_port, "upstream": upstream,
    }
    config = load_serve_config(config_file, flags=flags)
    if print_config:
        typer.echo(config_to_toml(config), nl=False)
        return
    _serve(config)


def _serve(config: ServeConfig) -> None:
    import asyncio

    from agentd.config import agentd_home
    from agentd.logging_setup import configure_logging
    from agentd.server.app import Daemon
    from agentd.server.auth import Security
    from agentd.server.served import ModelTable, ServingSettings, require_models
    from agentd.server.sessions import SessionSettings

    configure_logging(config.log_format, config.log_level)
    from agentd.threads import apply as apply_threads

    apply_threads(config.threads)
    # Certificates and the token are checked before the (slow) model loading.
    security = Security.from_config(config)
    # The user's models come first: the first of each kind is that kind's default.
    sources = [_source(name, path) for name, path in config.models.items()]
    if not config.no_defaults:
        sources += _default_sources(exclude=set(config.models))
    typer.echo("agentd: loading models...")
    try:
        settings = ServingSettings(
            max_batch=config.max_batch,
            max_queue=config.max_queue,
            prefill_chunk=config.prefill_chunk,
            prefix_cache_bytes=config.prefix_cache_budget,
            memory_budget=config.memory_budget,
            unload_grace=config.grace,
            quant=None if config.quant == "auto" else config.quant,
            model_dirs=config.model_dirs,
            sessions=SessionSettings(ttl=config.session_ttl, budget_bytes=config.session_budget),
        )
        if config.upstream is not None:
            _serve_forwarding(config, settings, security, config.upstream)
            return
        if config.ray is not None:
            _serve_on_ray(config, sources, settings, security)
            return
        table = ModelTable.load(sources, settings)
        if config.no_defaults:
            require_models(table)
    except KeyboardInterrupt:  # before the loop installs its signal handlers
        raise typer.Exit(130) from None
    daemon = Daemon(
        table,
        socket_path=config.socket,
        tcp=config.tcp,
        grace=config.grace,
        security=security,
        log_prompts=config.log_prompts,
        metrics=(config.metrics_host, config.metrics_port) if config.metrics_port is not None else None,
        agent_home=agentd_home() / "agent",
        planner=config.planner or None,
        plan_cache=config.plan_cache,
    )
    for served in table:
        info = served.model.info
        note = f" - {served.description}" if served.description else ""
        held = f"; {info.weight_note}" if info.weight_note else ""
        typer.echo(
            f"agentd: serving {served.name} ({info.architecture}, {info.kind}, "
            f"{info.parameters / 1e6:.1f}M parameters{held}){note}"
        )
    if not len(table):
        typer.echo("agentd: serving no models yet: load one with `agentd models load NAME PATH`")
    asyncio.run(_run(daemon))
    typer.echo("agentd: stopped")


def _serve_on_ray(config: ServeConfig, sources: list[ModelSource], settings: ServingSettings, security: Security) -> None:
    """The models and the agent as Ray Serve deployments; this process keeps agentd's listeners in front."""
    from agentd.rayserve.app import RayOptions, deploy, shutdown

    from agentd.errors import AgentdError

    try:
        import ray  # noqa: F401
    except ImportError:
        raise AgentdError("--ray needs Ray Serve: pip install 'agentd[ray]'") from None
    address = None if config.ray == "local" else config.ray
    typer.echo(f"agentd: deploying {len(sources)} models on {'a local Ray instance' if address is None else address}...")
    from agentd.config import agentd_home

    options = RayOptions(
        address=address, replicas=config.replicas, max_replicas=config.max_replicas, grpc_port=config.ray_grpc_port,
        agent_home=str(agentd_home() / "agent"),
        planner=config.planner or None, plan_cache=config.plan_cache,
    )
    app = deploy(sources, settings, options)
    try:
        for name in app.models:
            scaling = f"{app.replicas}-{config.max_replicas} replicas, autoscaled" if config.max_replicas > app.replicas else f"{app.replicas} replicas"
            typer.echo(f"agentd: serving {name} through Ray Serve ({scaling})")
        typer.echo(f"agentd: Ray Serve gRPC proxy on {app.target}")
        _serve_forwarding(config, settings, security, app.target)
    finally:
        shutdown(app)


def _serve_forwarding(config: ServeConfig, settings: ServingSettings, security: Security, upstream: str) -> None:
    """agentd's listeners and auth, with Inference, Models and Agent forwarded to ``upstream``."""
    import asyncio

    from agentd.server.app import Daemon
    from agentd.server.served import ModelTable

    if config.upstream is not None:
        typer.echo(f"agentd: forwarding to the agentd application at {upstream}")
    daemon = Daemon(
        ModelTable([], settings), socket_path=config.socket, tcp=config.tcp, grace=config.grace, security=security,
        log_prompts=config.log_prompts, upstream=upstream,
    )
    asyncio.run(_run(daemon))
    typer.echo("agentd: stopped")


async def _run(daemon: Daemon) -> None:
    for target in await daemon.start():
        typer.echo(f"agentd: listening on {target}")
    if daemon.metrics_url is not None:
        typer.echo(f"agentd: metrics on {daemon.metrics_url}")
    await daemon.run_until_signalled()


def _source(name: str, path: Path) -> ModelSource:
    from agentd.server.served import ModelSource

    return ModelSource(name, path)


def _default_sources(exclude: set[str]) -> list[ModelSource]:
    """The installed default models this install can run; says which it skips and why."""
    from agentd.default_models import installed_defaults
    from agentd.errors import AgentdError
    from agentd.model import backend_for
    from agentd.server.served import ModelSource

    sources = []
    for default, path in installed_defaults():
        if default.name in exclude:
            continue
        try:
            backend_for(path)  # cheap: opens the checkpoint, reads no weights
        except AgentdError as exc:
            typer.echo(f"agentd: skipping default model {default.name}: {exc}")
            continue
        sources.append(ModelSource(default.name, path, default.description))
    return sources
