"""``agentd memory list|forget``: what the agent remembers about a user, and forgetting it.

Memories are a user's profile facts (``home_city = Oakland``), past runs
(episodes) and plan templates; see docs/agent.md. ``--user`` as for ``agentd run``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Optional

import typer

from agentd.cli import app
from agentd.cli.client_cmds import SocketOption, TcpOption, TlsCaOption, TlsCertOption, TlsKeyOption, TokenFileOption, connect
from agentd.cli.run import UserOption, user_option
from agentd.errors import InvalidArgument

memory_app = typer.Typer(help="List or forget what the agent remembers about a user.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")

KindOption = Annotated[
    Optional[str], typer.Option("--kind", "-k", metavar="KIND", help="fact, episode or template.")
]


@memory_app.command("list")
def list_memories(
    user: UserOption = None,
    kind: KindOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per memory.")] = False,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """The user's memories, newest first: id, kind, when, uses (templates), summary."""
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        memories = client.list_memories(user_option(user), kind or "")
    for memory in memories:
        if as_json:
            record = {"id": memory.id, "kind": memory.kind, "user": memory.user, "summary": memory.summary,
                      "created": memory.created, "uses": memory.uses}
            typer.echo(json.dumps(record, ensure_ascii=False))
        else:
            when = datetime.fromtimestamp(memory.created).strftime("%Y-%m-%d %H:%M")
            uses = f"  used {memory.uses}x" if memory.kind == "template" else ""
            typer.echo(f"{memory.id}  {memory.kind:<8}  {when}{uses}  {memory.summary}")


@memory_app.command("forget")
def forget(
    memory_id: Annotated[Optional[str], typer.Argument(metavar="[ID]", help="The memory to forget, as `agentd memory list` shows it.")] = None,
    kind: KindOption = None,
    all: Annotated[bool, typer.Option("--all", help="Forget everything the agent remembers about the user.")] = False,
    user: UserOption = None,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Forget one memory (ID), every memory of a --kind, or --all of the user's."""
    if sum((memory_id is not None, kind is not None, all)) != 1:
        raise InvalidArgument("forget", "give exactly one of ID, --kind or --all")
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        count = client.forget(user_option(user), id=memory_id or "", kind=kind or "", all=all)
    typer.echo(f"forgot {count} memor{'y' if count == 1 else 'ies'}")
