"""``agentd models``: what backends and models are available."""

from __future__ import annotations

import typer

from agentd.cli import app

models_app = typer.Typer(no_args_is_help=True, help="Backends and models.")
app.add_typer(models_app, name="models")


@models_app.command("backends")
def backends() -> None:
    """List registered backends and the architectures each serves."""
    from agentd.registry import backend_specs

    for spec in backend_specs():
        typer.echo(f"{spec.name}\t{','.join(spec.architectures)}\t{spec.description}")
