"""``agentd sessions list | save | restore | delete``: conversation state a running daemon keeps.

A session holds a conversation's model state (a transformer's KV cache, an
SSM's or RWKV's fixed-size state) so the next turn prefills only its new
text. ``save`` writes it to the daemon's disk, ``restore`` reads it back, and
the conversation continues exactly as if it had never left memory.
"""

from __future__ import annotations

from typing import Annotated, Optional

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

sessions_app = typer.Typer(no_args_is_help=True, help="Conversation state the daemon keeps between requests.")
app.add_typer(sessions_app, name="sessions")

SessionArgument = Annotated[str, typer.Argument(help="Session id.")]


@sessions_app.command("list")
def list_sessions(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Only sessions of this model.")] = None,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """List the sessions held in memory, least recently used first."""
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        sessions = client.list_sessions(model)
    rows = [("SESSION", "MODEL", "TOKENS", "STATE", "IDLE", "BUSY")]
    for s in sessions:
        rows.append(
            (s.session_id, s.model, str(s.tokens), _bytes(s.state_bytes), f"{s.idle_seconds:.0f}s", "yes" if s.busy else "no")
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@sessions_app.command("save")
def save(
    session_id: SessionArgument,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Write an idle session to the daemon's disk."""
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        saved = client.save_session(session_id)
    typer.echo(f"{session_id}: saved {saved.tokens} tokens, {_bytes(saved.file_bytes)} to {saved.path}")


@sessions_app.command("restore")
def restore(
    session_id: SessionArgument,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Read a saved session back into the daemon's memory."""
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        restored = client.restore_session(session_id)
    typer.echo(f"{session_id}: restored {restored.tokens} tokens of {restored.model} ({_bytes(restored.state_bytes)})")


@sessions_app.command("delete")
def delete(
    session_id: SessionArgument,
    saved: Annotated[bool, typer.Option("--saved", help="Also delete its saved file.")] = False,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Forget a session held in memory (and with --saved, its file); NotFound if there was neither."""
    from agentd.errors import NotFound

    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        result = client.delete_session(session_id, delete_saved=saved)
    if not (result.deleted or result.deleted_saved):
        raise NotFound(f"no session {session_id!r}" + (" in memory or on disk" if saved else " in memory"))
    done = [what for what, flag in (("from memory", result.deleted), ("saved file", result.deleted_saved)) if flag]
    typer.echo(f"{session_id}: deleted " + " and ".join(done))


def _bytes(count: int) -> str:
    """Human-sized byte count: 512 B, 1.5 MiB."""
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= scale:
            return f"{count / scale:.1f} {suffix}"
    return f"{count} B"
