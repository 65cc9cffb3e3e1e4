"""What a run tells its client, in order: the plan, each step, each approval request, the end.

Plain dataclasses with a ``kind``; :func:`to_json` gives the form ``agentd run
--json`` prints (one object per line) and the gRPC servicer maps field by field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlanReady:
    """The plan the run will carry out (JSON form of :class:`agentd.agent.plan.Plan`)."""

    run_id: str
    plan: dict[str, Any]
    #: The model's text the plan was parsed from ("" when resumed from the journal).
    text: str = ""
    completion_tokens: int = 0
    kind: str = field(default="plan", init=False)


@dataclass(frozen=True)
class StepStarted:
    """A tool call began, with the arguments exactly as sent."""

    run_id: str
    step: int
    tool: str
    arguments: dict[str, Any]
    kind: str = field(default="step_started", init=False)


@dataclass(frozen=True)
class StepFinished:
    """A step ended: ``done`` (with ``result``), ``failed``/``rejected`` (with ``error``) or ``skipped``."""

    run_id: str
    step: int
    tool: str
    status: str
    result: Any = None
    error: str | None = None
    #: True when a resumed run took the result from the journal instead of calling the tool again.
    replayed: bool = False
    kind: str = field(default="step_finished", init=False)


@dataclass(frozen=True)
class ApprovalNeeded:
    """The run is paused until the user approves or rejects this call, shown exactly as it will be made."""

    run_id: str
    step: int
    tool: str
    arguments: dict[str, Any]
    description: str
    kind: str = field(default="approval_needed", init=False)


@dataclass(frozen=True)
class RunFinished:
    """The run ended: ``done``, ``failed`` or ``cancelled`` (a rejection); the results by step."""

    run_id: str
    status: str
    results: dict[int, Any]
    answer: str | None = None
    error: str | None = None
    kind: str = field(default="run_finished", init=False)


Event = PlanReady | StepStarted | StepFinished | ApprovalNeeded | RunFinished


def to_json(event: Event) -> dict[str, Any]:
    """The event as a JSON object (``kind`` first)."""
    value = dataclasses.asdict(event)
    if isinstance(event, RunFinished):
        value["results"] = {str(step): result for step, result in event.results.items()}
    return {"kind": value.pop("kind"), **value}
