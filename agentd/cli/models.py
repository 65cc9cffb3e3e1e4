"""``agentd models``: registered backends, and the models a running daemon serves."""

from __future__ import annotations

from typing import Annotated

import typer

from agentd.cli import app
from agentd.cli.client_cmds import SocketOption, TcpOption, connect

models_app = typer.Typer(no_args_is_help=True, help="Backends and models.")
app.add_typer(models_app, name="models")


@models_app.command("backends")
def backends() -> None:
    """List registered backends and the architectures each serves."""
    from agentd.registry import backend_specs

    for spec in backend_specs():
        typer.echo(f"{spec.name}\t{','.join(spec.architectures)}\t{spec.description}")


@models_app.command("list")
def list_models(socket: SocketOption = None, tcp: TcpOption = None) -> None:
    """List the models the daemon serves (the first of each kind is the default)."""
    from agentd.v1 import models_pb2

    with connect(socket, tcp) as client:
        infos = client.list_models()
    rows = [("NAME", "KIND", "ARCHITECTURE", "PARAMS", "CONTEXT", "DESCRIPTION")]
    for info in infos:
        kind = models_pb2.ModelKind.Name(info.kind).removeprefix("MODEL_KIND_").lower()
        rows.append((info.name, kind, info.architecture, _count(info.parameters), str(info.context_length), info.description))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


@models_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="Served model name.")],
    socket: SocketOption = None,
    tcp: TcpOption = None,
) -> None:
    """Describe one served model."""
    from agentd.v1 import models_pb2

    with connect(socket, tcp) as client:
        details = client.model_info(name)
    for field in details.DESCRIPTOR.fields:
        value = getattr(details, field.name)
        if field.name == "kind":
            value = models_pb2.ModelKind.Name(value).removeprefix("MODEL_KIND_").lower()
        typer.echo(f"{field.name}: {value}")


def _count(parameters: int) -> str:
    """Human-sized parameter count: 22.7M, 1.1B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= scale:
            return f"{parameters / scale:.1f}{suffix}"
    return str(parameters)
