"""What every demo tool shares: opening the world, credentials, dates, money, schema pieces.

Each tool module writes its logic as ``impl(world, arguments, context)`` and
wraps it with :func:`make_tool`, which declares the flags once and makes the
``call`` the registry sees: check the declared credentials, open the world at
``context.data_dir/demo_world/world.sqlite`` (seeding it on first use), run,
close. So the tool logic never touches paths or connections.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

from agentd.errors import AgentdError
from agentd.tools import ToolContext, ToolError, ToolSpec

from .world import World

WORLD_DIR = "demo_world"
WORLD_FILE = "world.sqlite"

Impl = Callable[[World, dict[str, Any], ToolContext], dict[str, Any]]


def world_path(context: ToolContext) -> Path:
    """Where the world of ``context`` lives: one file per agentd home."""
    return Path(context.data_dir) / WORLD_DIR / WORLD_FILE


def check_credentials(context: ToolContext, scopes: tuple[str, ...]) -> None:
    """Refuse when a credential source is given and has nothing for a declared scope.

    The demo accepts any non-empty secret (there is no real bank); with no
    source at all (tests, a bare install) the call proceeds.
    """
    if context.credential is None:
        return
    for scope in scopes:
        try:
            secret = context.credential(scope)
        except (LookupError, AgentdError):
            secret = None
        if not secret:
            raise ToolError(f"no {scope!r} credential is connected; ask the user to connect their {scope} account")


def make_tool(
    impl: Impl,
    *,
    name: str,
    description: str,
    parameters: Mapping[str, Any],
    result: Mapping[str, Any],
    read_only: bool = False,
    needs_approval: bool = False,
    idempotent: bool = False,
    credential_scopes: tuple[str, ...] = (),
    untrusted_output: bool = False,
) -> ToolSpec:
    """A :class:`ToolSpec` whose ``call`` runs ``impl`` on the context's world."""

    def call(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        check_credentials(context, credential_scopes)
        with World(world_path(context)) as world:
            return impl(world, dict(arguments), context)

    call.__name__ = name
    call.__doc__ = impl.__doc__
    return ToolSpec(
        name=name, description=description, parameters=parameters, result=result, call=call,
        read_only=read_only, needs_approval=needs_approval, idempotent=idempotent,
        credential_scopes=credential_scopes, untrusted_output=untrusted_output,
    )


# -- dates ---------------------------------------------------------------------------------------


def parse_date(value: str, field: str) -> date:
    """An ISO date argument; a ToolError naming the field otherwise (the schema usually caught it)."""
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ToolError(f"{field} must be an ISO date YYYY-MM-DD, got {value!r}") from None


def future_date(world: World, value: str, field: str, *, horizon: bool = True) -> date:
    """A date that is today or later and (with ``horizon``) within the seeded data."""
    when = parse_date(value, field)
    today = world.today()
    if when < today:
        raise ToolError(f"{field} {when} is in the past (today is {today}); use a date from {today} on")
    end = date.fromisoformat(world.meta("data_end"))
    if horizon and when > end:
        raise ToolError(f"{field} {when} is beyond the bookable range (up to {end})")
    return when


def plus_days(when: date, days: int) -> date:
    return when + timedelta(days=days)


# -- money ---------------------------------------------------------------------------------------


def to_cents(amount: float, field: str = "amount") -> int:
    """Dollars from the planner as integer cents; more than two decimals is refused, not rounded."""
    cents = round(amount * 100)
    if cents <= 0:
        raise ToolError(f"{field} must be positive, got {amount}")
    if abs(amount * 100 - cents) > 1e-6:
        raise ToolError(f"{field} {amount} has more than two decimals")
    return cents


def dollars(cents: int) -> float:
    return round(cents / 100, 2)


# -- JSON schema pieces --------------------------------------------------------------------------

DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "ISO date YYYY-MM-DD"}
TIME = {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$", "description": "24-hour local time HH:MM"}
DATETIME = {"type": "string", "description": "ISO local date and time YYYY-MM-DDTHH:MM"}
MONEY = {"type": "number", "description": "US dollars"}
AMOUNT = {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000, "description": "US dollars, e.g. 45 or 45.50"}
ACCOUNT = {"type": "string", "enum": ["checking", "savings"], "description": "Which of the user's accounts pays"}
ID = {"type": "string", "minLength": 1, "maxLength": 100}
TEXT = {"type": "string", "minLength": 1, "maxLength": 200}


def obj(properties: Mapping[str, Any], required: tuple[str, ...] = (), description: str | None = None) -> dict[str, Any]:
    """An ``object`` schema with exactly these properties (unknown ones are refused)."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def array(items: Mapping[str, Any], description: str | None = None, **limits: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": dict(items), **limits}
    if description:
        schema["description"] = description
    return schema


def described(schema: Mapping[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    """``schema`` with its own description (and e.g. a default), for one parameter."""
    return {**schema, **extra, "description": description}
