"""``agentd models``: registered backends, and the models a running daemon serves, loads and unloads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from agentd.cli import app
from agentd.cli.client_cmds import (
    SocketOption,
    TcpOption,
    TlsCaOption,
    TlsCertOption,
    TlsKeyOption,
    TokenFileOption,
    connect,
)

if TYPE_CHECKING:
    from agentd.v1 import models_pb2

models_app = typer.Typer(no_args_is_help=True, help="Backends and models.")
app.add_typer(models_app, name="models")

NameArgument = Annotated[str, typer.Argument(help="Served model name.")]


@models_app.command("backends")
def backends() -> None:
    """List registered backends, the architectures each serves, and whether this install can run it."""
    from agentd.registry import backend_specs

    for spec in backend_specs():
        reason = spec.unavailable_reason
        status = "available" if reason is None else f"unavailable: {reason}"
        typer.echo(f"{spec.name}\t{status}\t{','.join(spec.architectures)}\t{spec.description}")


@models_app.command("formats")
def formats() -> None:
    """List the model formats the installed plugins open (what --model and `agentd import` accept)."""
    from agentd.formats import format_plugins

    for name, doc in format_plugins():
        typer.echo(f"{name}\t{doc}")


@models_app.command("list")
def list_models(
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """List the models the daemon serves; requests naming no model go to the default of their kind
    (Classify's to the first model with labels: LABELS counts a token classifier's)."""
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        infos = client.list_models()
    rows = [("NAME", "KIND", "DEFAULT", "STATUS", "ARCHITECTURE", "PARAMS", "CONTEXT", "LABELS", "DESCRIPTION")]
    for info in infos:
        rows.append(
            (
                info.name, _kind(info), "yes" if info.default else "", _status(info), info.architecture,
                _count(info.parameters), str(info.context_length), str(len(info.labels) or ""), info.description,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


@models_app.command("info")
def info(
    name: NameArgument,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Describe one served model."""
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        _print_info(client.model_info(name))


@models_app.command("load")
def load(
    name: Annotated[str, typer.Argument(help="Name to serve the model under.")],
    path: Annotated[Path, typer.Argument(help="Model on the daemon's machine: a directory or file in any format `agentd models formats` lists.")],
    wait: Annotated[bool, typer.Option("--wait", help="Return once loading has finished (ready or failed).")] = False,
    description: Annotated[Optional[str], typer.Option("--description", help="Note shown by `models list`.")] = None,
    quant: Annotated[
        Optional[str],
        typer.Option("--quant", metavar="auto|fp32|int8|int4", help="Weight encoding to compute with (default: the daemon's --quant)."),
    ] = None,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Start serving the model at PATH as NAME (loads in the background unless --wait)."""
    from agentd.errors import ModelLoadError

    # The daemon resolves the path on its side; an absolute path means the same there as here.
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        details = client.load_model(name, path.expanduser().absolute(), description=description, wait=wait, quant=quant)
    status = _status(details)
    if status == "failed":
        raise ModelLoadError(f"model {name!r}", details.error or "loading failed")
    typer.echo(f"{name}: {status}" + ("" if wait else f" (health service {details.health_service})"))


@models_app.command("unload")
def unload(
    name: NameArgument,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Stop serving NAME and free its memory and sessions."""
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        client.unload_model(name)
    typer.echo(f"{name}: unloaded")


def _print_info(details: "models_pb2.ModelInfo") -> None:
    for field in details.DESCRIPTOR.fields:
        value = getattr(details, field.name)
        if field.name == "kind":
            value = _kind(details)
        elif field.name == "status":
            value = _status(details)
        typer.echo(f"{field.name}: {value}")


def _kind(details: "models_pb2.ModelInfo") -> str:
    from agentd.v1 import models_pb2

    return models_pb2.ModelKind.Name(details.kind).removeprefix("MODEL_KIND_").lower()


def _status(details: "models_pb2.ModelInfo") -> str:
    from agentd.v1 import models_pb2

    return models_pb2.ModelStatus.Name(details.status).removeprefix("MODEL_STATUS_").lower()


def _count(parameters: int) -> str:
    """Human-sized parameter count: 22.7M, 1.1B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if parameters >= scale:
            return f"{parameters / scale:.1f}{suffix}"
    return str(parameters)
