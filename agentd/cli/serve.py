"""``agentd serve``: run the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from agentd.cli import app

if TYPE_CHECKING:
    from agentd.server.app import Daemon
    from agentd.server.served import ModelSource


@app.command()
def serve(
    socket: Annotated[
        Optional[Path],
        typer.Option("--socket", envvar="AGENTD_SOCKET", help="Unix socket to listen on (default: $XDG_RUNTIME_DIR/agentd/agentd.sock or $AGENTD_HOME/agentd.sock)."),
    ] = None,
    tcp: Annotated[
        Optional[str], typer.Option("--tcp", metavar="HOST:PORT", help="Also listen on TCP (loopback only, no TLS yet).")
    ] = None,
    model: Annotated[
        Optional[list[str]],
        typer.Option("--model", metavar="NAME=PATH", help="Serve a checkpoint or bundle directory (repeatable)."),
    ] = None,
    no_defaults: Annotated[
        bool, typer.Option("--no-defaults", help="Do not serve the built-in default models.")
    ] = False,
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, help="Seconds in-flight requests get on SIGTERM/SIGINT.")
    ] = 5.0,
) -> None:
    """Serve models over gRPC until SIGTERM or SIGINT."""
    import asyncio
    import logging

    from agentd.config import default_socket_path, parse_tcp_address
    from agentd.server.app import Daemon, check_tcp_address
    from agentd.server.served import ModelTable, require_models

    logging.basicConfig(level=logging.INFO, format="agentd: %(levelname)s %(name)s: %(message)s")
    # Address problems are reported before the (slow) model loading.
    tcp_address = check_tcp_address(parse_tcp_address(tcp)) if tcp else None
    user_models = [_parse_model(spec) for spec in model or []]
    sources = [] if no_defaults else _default_sources(exclude={source.name for source in user_models})
    sources += user_models
    typer.echo("agentd: loading models...")
    try:
        table = require_models(ModelTable.load(sources))
    except KeyboardInterrupt:  # before the loop installs its signal handlers
        raise typer.Exit(130) from None
    daemon = Daemon(table, socket_path=socket or default_socket_path(), tcp=tcp_address, grace=grace)
    for served in table:
        info = served.model.info
        note = f" - {served.description}" if served.description else ""
        typer.echo(
            f"agentd: serving {served.name} ({info.architecture}, {info.kind}, "
            f"{info.parameters / 1e6:.1f}M parameters){note}"
        )
    asyncio.run(_run(daemon))
    typer.echo("agentd: stopped")


async def _run(daemon: Daemon) -> None:
    for target in await daemon.start():
        typer.echo(f"agentd: listening on {target}")
    await daemon.run_until_signalled()


def _parse_model(spec: str) -> ModelSource:
    from agentd.errors import InvalidArgument
    from agentd.server.served import ModelSource

    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise InvalidArgument("--model", f"expected NAME=PATH, got {spec!r}")
    return ModelSource(name.strip(), Path(path.strip()).expanduser())


def _default_sources(exclude: set[str]) -> list[ModelSource]:
    from agentd.default_models import default_models
    from agentd.server.served import ModelSource

    return [
        ModelSource(default.name, default.path, default.description)
        for default in default_models()
        if default.name not in exclude
    ]
