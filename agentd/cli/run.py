"""``agentd run "REQUEST"``: carry out a request with the daemon's agent, asking before anything irreversible.

Streams the plan and every step; when a step needs approval it shows the exact
call and asks at the terminal (``--yes`` approves everything, for scripts).
``--json`` prints one JSON object per event instead; the last one lists every
executed step with its tool, resolved arguments, result and status.

``--user NAME`` (default ``$AGENTD_USER``, else ``default``) runs the request as
that user: their remembered facts fill the plan and the run becomes their memory
(``agentd memory``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer

from agentd.cli import app
from agentd.cli.client_cmds import (
    ModelOption,
    SocketOption,
    TcpOption,
    TlsCaOption,
    TlsCertOption,
    TlsKeyOption,
    TokenFileOption,
    connect,
)


#: Who a command acts for; the memory commands use it too.
UserOption = Annotated[
    Optional[str],
    typer.Option("--user", "-u", metavar="NAME", help="Act as this user (default: $AGENTD_USER, else \"default\")."),
]


def user_option(user: str | None) -> str:
    """The ``--user`` value, else ``$AGENTD_USER``, else "" (the daemon's default user)."""
    return user if user is not None else os.environ.get("AGENTD_USER", "")


@app.command("run")
def run_command(
    request: Annotated[str, typer.Argument(help="What you want done, e.g. \"send Maria 45 bucks for the concert tickets\".")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve every step that needs approval without asking.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event (the last one sums up the run).")] = False,
    user: UserOption = None,
    no_plan_cache: Annotated[
        bool, typer.Option("--no-plan-cache", help="Ask the planner even if one of your plan templates fits the request.")
    ] = False,
    model: ModelOption = None,
    socket: SocketOption = None,
    tcp: TcpOption = None,
    tls_ca: TlsCaOption = None,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Plan REQUEST with the daemon's planner and carry it out with the registered tools."""
    steps: dict[int, dict[str, Any]] = {}
    status = "failed"
    with connect(socket, tcp, tls_ca, token_file, tls_cert, tls_key) as client:
        for message in client.run_task(request, model=model, auto_approve=yes, user=user_option(user), no_plan_cache=no_plan_cache):
            which = message.WhichOneof("event")
            event = getattr(message, which)
            record = _event_json(message.run_id, which, event)
            if which == "step_started":
                steps[event.step] = {"step": event.step, "tool": event.tool, "arguments": record["arguments"], "status": "running"}
            elif which == "step_finished":
                entry = steps.setdefault(event.step, {"step": event.step, "tool": event.tool, "arguments": None})
                entry.update(status=event.status, result=record.get("result"), error=event.error or None)
            if which == "run_finished":
                status = event.status
                record["steps"] = [steps[step] for step in sorted(steps)]
            if as_json:
                typer.echo(json.dumps(record, ensure_ascii=False))
            else:
                _show(which, event)
            if which == "approval_needed":
                if yes:
                    if not as_json:
                        typer.echo("  approved (--yes)")
                else:
                    client.approve(message.run_id, event.step, _ask(event, as_json))
    if status != "done":
        raise typer.Exit(1)


def _event_json(run_id: str, which: str, event: Any) -> dict[str, Any]:
    """The event as a JSON object with its ``*_json`` fields decoded."""
    from google.protobuf.json_format import MessageToDict

    value = MessageToDict(event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for key in list(value):
        if key.endswith("_json"):
            text = value.pop(key)
            value[key.removesuffix("_json")] = json.loads(text) if text else None
    return {"kind": which, "run_id": run_id, **value}


def _show(which: str, event: Any) -> None:
    if which == "plan":
        plan = json.loads(event.plan_json)
        # A plan refilled from one of the user's templates says so (`agentd memory list` shows it).
        template = event.text.removeprefix("template ") if event.text.startswith("template ") else None
        typer.echo(f"plan (from {template}):" if template else "plan:")
        for step in plan["steps"]:
            typer.echo(f"  {step['id']}. {step['tool']}({_arguments(step['arguments'])})")
    elif which == "step_started":
        typer.echo(f"> {event.step}. {event.tool}({_arguments(json.loads(event.arguments_json))})")
    elif which == "step_finished":
        detail = event.error if event.error else _short(event.result_json)
        typer.echo(f"  {event.step}. {event.status}{' (from the journal)' if event.replayed else ''}: {detail}")
    elif which == "approval_needed":
        typer.echo(f"? step {event.step} needs your approval: {event.tool}({_arguments(json.loads(event.arguments_json))})")
        typer.echo(f"  ({event.description})")
    elif which == "run_finished":
        typer.echo(event.answer if event.status == "done" else f"run {event.status}: {event.error}")


def _ask(event: Any, as_json: bool) -> bool:
    """Ask at the terminal; no terminal (and no --yes) means no."""
    if not sys.stdin.isatty():
        typer.echo("agentd: no terminal to ask for approval: rejected (pass --yes to approve)", err=True)
        return False
    prompt = f"Approve {event.tool} (step {event.step})?"
    return typer.confirm(prompt, default=False, err=as_json)


def _arguments(arguments: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, dict) and set(value) == {"$ref"}:
            ref = value["$ref"]
            return "$" + ".".join([str(ref["step"]), *map(str, ref.get("path", []))])
        return json.dumps(value, ensure_ascii=False)

    return ", ".join(f"{key}={show(value)}" for key, value in arguments.items())


def _short(result_json: str, limit: int = 160) -> str:
    return result_json if len(result_json) <= limit else result_json[: limit - 1] + "…"
