"""The planner contract: request in, a valid :class:`~agentd.agent.plan.Plan` out.

Planners are plugins (``register_planners`` hook), so a better one can replace
the built-in one. A planner talks to models only through the daemon's own
client API (``Generate`` with a grammar constraint, ``Embed`` for tool
retrieval), like any client, so it runs unchanged on the torch-free install.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from agentd.agent.normalise import VALUE_KINDS
from agentd.errors import AgentdError, NotFound
from agentd.plugin_manager import load_plugins

if TYPE_CHECKING:
    from datetime import date
    from pathlib import Path

    from agentd.agent.memory import UserMemory
    from agentd.agent.plan import Plan
    from agentd.aio_client import AsyncClient
    from agentd.tools import ToolSpec


@dataclass(frozen=True)
class PlanningContext:
    """Everything a planner may use to plan one request."""

    #: What the user asked, verbatim.
    request: str
    #: Every registered tool; the planner chooses which to show the model.
    tools: Sequence["ToolSpec"]
    #: Facts tool packs contribute (``planner_facts`` hook), e.g. ``today``, ``home_city``,
    #: with the user's own profile facts (memory) over them.
    facts: Mapping[str, str]
    #: The daemon serving the models.
    client: "AsyncClient"
    #: Decoder to plan with (None: the daemon's default).
    model: str | None = None
    #: Encoder for tool retrieval (None: the daemon's default).
    embed_model: str | None = None
    #: When replanning: what happened to the previous plan (results, the error), as text.
    observation: str | None = None
    #: The requesting user's memory (``recall`` past runs), or None when the daemon keeps none.
    memory: "UserMemory | None" = None


@dataclass(frozen=True)
class ArgumentSource:
    """Where in the request a literal argument came from: ``request[start:end]``, read as ``kind``."""

    start: int
    end: int
    kind: str = "text"

    def __post_init__(self) -> None:
        if self.kind not in VALUE_KINDS:
            raise AgentdError(f"argument source kind {self.kind!r} is not one of {', '.join(VALUE_KINDS)}")
        if not 0 <= self.start < self.end:
            raise AgentdError(f"argument source span [{self.start}, {self.end}) is empty or negative")


@dataclass(frozen=True)
class PlanResult:
    """A plan and what it cost to write."""

    plan: "Plan"
    #: The model's text the plan was parsed from.
    text: str
    #: Tokens generated for it.
    completion_tokens: int = 0
    #: Tools shown to the model (after retrieval).
    tools_shown: tuple[str, ...] = ()
    #: ``(step id, argument name) -> ArgumentSource`` for literal arguments the planner read from
    #: the request (planners that know fill it; the template cache locates the rest itself).
    sources: Mapping[tuple[int, str], ArgumentSource] = field(default_factory=dict)


class Planner(Protocol):
    """What a planner plugin builds."""

    async def plan(self, context: PlanningContext) -> PlanResult:
        """A plan every step of which names a registered tool, validates against its schema
        and refers only to earlier steps (raise :class:`agentd.errors.AgentdError` if it cannot)."""
        ...

    async def answer(self, context: PlanningContext, plan: "Plan", results: Mapping[int, Any]) -> str:
        """The reply to the user once ``plan`` ran (the join), from the steps' results."""
        ...


@dataclass(frozen=True)
class PlannerSpec:
    """How a plugin announces a planner through ``register_planners``."""

    name: str
    #: Builds the planner (called once per daemon).
    make: Callable[[], Planner]
    description: str = ""
    #: With no planner configured, the registered planner with the highest rank plans
    #: (ties: the first registered), so a better planner takes over by saying so, not by load order.
    rank: int = 0
    plugin: str = field(default="", compare=False)


_specs: dict[str, PlannerSpec] | None = None
_lock = threading.Lock()


def planner_specs() -> list[PlannerSpec]:
    return list(_by_name().values())


def planner_spec(name: str | None = None) -> PlannerSpec:
    """The planner called ``name`` (None: the highest-ranked one registered)."""
    specs = _by_name()
    if not specs:
        raise NotFound("no planner is registered (the built-in one is the 'planner' plugin)")
    if name is None:
        return max(specs.values(), key=lambda spec: spec.rank)
    if name not in specs:
        raise NotFound(f"no planner named {name!r} (registered: {', '.join(specs)})")
    return specs[name]


def today_of(facts: Mapping[str, str]) -> "date":
    """The day relative dates are read against: the ``today`` fact (``2027-03-01 (Monday)``), else the clock."""
    from datetime import date

    try:
        return date.fromisoformat(facts.get("today", "").strip()[:10])
    except ValueError:
        return date.today()


def planner_facts(data_dir: "Path") -> dict[str, str]:
    """Every fact the plugins' ``planner_facts`` hooks return, merged (later plugins win)."""
    facts: dict[str, str] = {}
    for contribution in reversed(load_plugins().hook.planner_facts(data_dir=data_dir)):
        facts.update({str(key): str(value) for key, value in (contribution or {}).items()})
    return facts


def reset() -> None:
    global _specs
    with _lock:
        _specs = None


def _by_name() -> dict[str, PlannerSpec]:
    global _specs
    with _lock:
        if _specs is None:
            specs: dict[str, PlannerSpec] = {}
            for impl in load_plugins().hook.register_planners.get_hookimpls():

                def register(spec: PlannerSpec, _plugin: str = impl.plugin_name) -> None:
                    if spec.name in specs:
                        raise AgentdError(f"plugin {_plugin!r} registers planner {spec.name!r}, already registered")
                    from dataclasses import replace

                    specs[spec.name] = replace(spec, plugin=_plugin)

                impl.function(register=register)
            _specs = specs
        return _specs
