"""The ``agentd`` command line: one module per command group, joined here.

Heavy imports (torch, grpc stubs) happen inside commands so ``agentd --help``
stays instant. Errors a user can cause print one line and exit non-zero;
tracebacks are reserved for bugs.
"""

from __future__ import annotations

import sys

import typer

from agentd.errors import AgentdError, storage_full

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="agentd: on-device inference server for personal agents.",
)


def _register_commands() -> None:
    # Each module adds its commands or sub-app to ``app``.
    import importlib

    for module in ("models", "importer", "serve", "client_cmds", "export", "sessions", "run", "memory", "credentials", "train_planner", "bench"):
        importlib.import_module(f"agentd.cli.{module}")


def main() -> None:
    _register_commands()
    try:
        app()  # standalone: click prints usage errors itself and exits 2
    except Exception as exc:  # noqa: BLE001 - only the user's errors are caught; bugs re-raise
        error = exc if isinstance(exc, AgentdError) else storage_full(exc)
        if error is None:
            raise
        typer.echo(f"agentd: error: {error}", err=True)
        sys.exit(error.exit_code)
