"""``agentd credentials add|list|remove``: the secrets tools use, encrypted at rest.

The secret is read without echo from the terminal, or from standard input when
it is not one (``--from-stdin`` for scripts); it is never an argument, so it
never lands in shell history or ``ps``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from agentd.cli import app

credentials_app = typer.Typer(help="Manage the credentials tools use (bank, airline, restaurant...).", no_args_is_help=True)
app.add_typer(credentials_app, name="credentials")

ProviderArgument = Annotated[str, typer.Argument(metavar="PROVIDER", help="Provider name, as tools declare it (e.g. bank).")]


def _store():
    from agentd.agent.credentials import CredentialStore
    from agentd.config import agentd_home

    return CredentialStore(agentd_home() / "agent" / "credentials")


@credentials_app.command("add")
def add(provider: ProviderArgument) -> None:
    """Store PROVIDER's secret (replacing any earlier one)."""
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(f"secret for {provider}: ")
    else:
        secret = sys.stdin.read().rstrip("\n")
    _store().add(provider, secret)
    typer.echo(f"stored a credential for {provider}")


@credentials_app.command("list")
def list_providers() -> None:
    """The providers with a stored credential (never the secrets)."""
    for provider in _store().providers():
        typer.echo(provider)


@credentials_app.command("remove")
def remove(provider: ProviderArgument) -> None:
    """Forget PROVIDER's secret."""
    if not _store().remove(provider):
        from agentd.errors import NotFound

        raise NotFound(f"no credential for {provider!r}")
    typer.echo(f"removed the credential for {provider}")
