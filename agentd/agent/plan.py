"""A plan: numbered tool calls whose arguments may refer to earlier results.

The wire and journal form is JSON::

    {"steps": [
      {"id": 1, "tool": "search_flights", "arguments": {"destination": "Denver", "date": "2027-03-03"}},
      {"id": 2, "tool": "book_flight",
       "arguments": {"flight_id": {"$ref": {"step": 1, "path": ["flights", 0, "id"]}}}}]}

A reference is an object of its own (``{"$ref": ...}``), so a string value such
as ``"send Bob $5"`` is always just a string — the pitfall of plans that find
references by scanning argument text. Every step implicitly ends in a join: the
run's answer is written once all steps are done.

:meth:`Plan.check` refuses a plan that names an unknown tool, refers to itself
or a later step (so the plan is a DAG in step order), or whose literal arguments
break the tool's schema; arguments holding references are checked again once
resolved, just before the call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from agentd.errors import InvalidArgument

REF_KEY = "$ref"
#: A field path into a result: object keys and list indices.
PathPart = str | int


@dataclass(frozen=True)
class Ref:
    """The value at ``path`` in the result of step ``step``."""

    step: int
    path: tuple[PathPart, ...] = ()

    def resolve(self, results: Mapping[int, Any]) -> Any:
        """Follow ``path`` into the referenced result; INVALID_ARGUMENT naming what is missing."""
        value = results[self.step]
        for depth, part in enumerate(self.path):
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                walked = "".join(f"[{p!r}]" for p in self.path[: depth + 1])
                raise InvalidArgument("plan", f"step {self.step}'s result has no {walked}") from None
        return value

    def to_json(self) -> dict[str, Any]:
        return {REF_KEY: {"step": self.step, "path": list(self.path)}}


@dataclass(frozen=True)
class Step:
    """One tool call of a plan."""

    id: int
    tool: str
    #: Argument values: JSON values, with :class:`Ref` anywhere inside them.
    arguments: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dependencies(self) -> frozenset[int]:
        """The steps whose results this one's arguments refer to."""
        return frozenset(ref.step for ref in _refs(self.arguments))

    def resolve(self, results: Mapping[int, Any]) -> dict[str, Any]:
        """The arguments with every reference replaced by the value it points at."""
        return _substitute(dict(self.arguments), results)


@dataclass(frozen=True)
class Plan:
    """Steps numbered 1..n in order; each may depend only on earlier ones."""

    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise InvalidArgument("plan", "has no steps")
        first = self.steps[0].id
        if type(first) is not int or first < 1:
            raise InvalidArgument("plan", f"steps are numbered from 1 (got {first!r})")
        for index, step in enumerate(self.steps, start=first):
            if step.id != index:
                raise InvalidArgument(
                    "plan", f"steps must be numbered {first}..{first + len(self.steps) - 1} in order (got {step.id} at {index})"
                )
            later = sorted(dep for dep in step.dependencies if dep >= step.id or dep < 1)
            if later:
                raise InvalidArgument("plan", f"step {step.id} refers to step {later[0]}, which is not an earlier step")

    @property
    def first(self) -> int:
        """Number of the first step: 1, or where a replan carries on after the steps already taken."""
        return self.steps[0].id

    def step(self, step_id: int) -> Step:
        return self.steps[step_id - self.first]

    def find(self, step_id: int) -> Step | None:
        """The step numbered ``step_id`` if this plan has it (a replan's plan starts after earlier steps)."""
        return self.step(step_id) if self.first <= step_id < self.first + len(self.steps) else None

    def renumbered(self, first: int) -> Plan:
        """The same plan numbered from ``first`` (references shifted with it): a replan's steps follow
        the earlier plans' in one run, so every step keeps one journal row and one idempotency key."""
        shift = first - self.first
        return Plan(tuple(Step(step.id + shift, step.tool, _shift(dict(step.arguments), shift)) for step in self.steps))

    def check(self, tools: Mapping[str, Any]) -> None:
        """Every tool registered; arguments without references valid for its schema."""
        from agentd.tools import validate_arguments

        for step in self.steps:
            spec = tools.get(step.tool)
            if spec is None:
                raise InvalidArgument("plan", f"step {step.id} calls {step.tool!r}, which is not a registered tool")
            if not step.dependencies:
                validate_arguments(spec, step.arguments)

    # -- JSON ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"steps": [{"id": s.id, "tool": s.tool, "arguments": _encode(dict(s.arguments))} for s in self.steps]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, value: Any) -> Plan:
        """Parse the JSON form; INVALID_ARGUMENT("plan", ...) for anything malformed."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidArgument("plan", f"is not JSON ({exc})") from None
        if not isinstance(value, dict) or not isinstance(value.get("steps"), list):
            raise InvalidArgument("plan", "must be an object with a 'steps' list")
        steps = []
        for raw in value["steps"]:
            if not (isinstance(raw, dict) and type(raw.get("id")) is int and isinstance(raw.get("tool"), str)):
                raise InvalidArgument("plan", "each step needs an integer 'id' and a 'tool' name")
            arguments = raw.get("arguments", {})
            if not isinstance(arguments, dict):
                raise InvalidArgument("plan", f"step {raw['id']}: 'arguments' must be an object")
            steps.append(Step(raw["id"], raw["tool"], _decode(arguments)))
        return cls(tuple(steps))


def _refs(value: Any) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs(item)


def _shift(value: Any, shift: int) -> Any:
    if isinstance(value, Ref):
        return Ref(value.step + shift, value.path)
    if isinstance(value, Mapping):
        return {key: _shift(item, shift) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shift(item, shift) for item in value]
    return value


def _substitute(value: Any, results: Mapping[int, Any]) -> Any:
    if isinstance(value, Ref):
        return value.resolve(results)
    if isinstance(value, Mapping):
        return {key: _substitute(item, results) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_substitute(item, results) for item in value]
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Ref):
        return value.to_json()
    if isinstance(value, Mapping):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {REF_KEY}:
            raw = value[REF_KEY]
            if not (isinstance(raw, dict) and type(raw.get("step")) is int):
                raise InvalidArgument("plan", "a reference needs an integer 'step'")
            path: Sequence[Any] = raw.get("path", [])
            if not isinstance(path, list) or not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in path):
                raise InvalidArgument("plan", "a reference's 'path' must list keys and indices")
            return Ref(raw["step"], tuple(path))
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value

