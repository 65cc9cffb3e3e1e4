"""Plan text <-> :class:`agentd.agent.plan.Plan`.

The text format, one step per line (LLMCompiler's, compact for small models)::

    1. find_contact(name="Bob")
    2. send_message(contact_id=$1.contacts.0.id, text="send Bob $5")
    join()

Argument values are JSON literals (read with ``json.JSONDecoder.raw_decode``,
never ``eval``) or a typed reference ``$N`` / ``$N.key.0.key`` written outside
quotes: a ``$`` inside a string is just a character. The last line is
``join()`` (``N. join()`` with the next number is accepted too).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from agentd.agent.plan import Plan, Ref, Step
from agentd.errors import InvalidArgument

_STEP = re.compile(r"(\d+)\.[ \t]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REF = re.compile(r"\$(\d+)((?:\.(?:[A-Za-z_][A-Za-z0-9_]*|\d+))*)")
_WS = re.compile(r"[ \t]*")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
JOIN = "join()"


class PlanSyntaxError(InvalidArgument):
    """Plan text that does not follow the format; the message names the line and column."""

    def __init__(self, line: int, column: int, problem: str):
        super().__init__("plan", f"line {line}, column {column}: {problem}")
        self.line = line
        self.column = column


def parse_plan(text: str, *, require_join: bool = True) -> Plan:
    """The plan written in ``text``; :class:`PlanSyntaxError` for anything malformed.

    ``require_join=False`` accepts text that stops after a complete step (a
    generation cut short): the steps so far are the plan.
    """
    steps: list[Step] = []
    joined = False
    lines = text.split("\n")
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if joined:
            raise PlanSyntaxError(number, 1, "nothing may follow join()")
        offset = len(raw) - len(raw.lstrip())
        step_id, pos = _step_number(line)
        if line[pos:].rstrip() == JOIN:
            if step_id is not None and step_id != len(steps) + 1:
                raise PlanSyntaxError(number, 1, f"join() should be numbered {len(steps) + 1}, not {step_id}")
            joined = True
            continue
        expected = len(steps) + 1
        if step_id is None:
            raise PlanSyntaxError(number, 1 + offset, f"expected '{expected}. tool(...)' or 'join()'")
        if step_id != expected:
            raise PlanSyntaxError(number, 1 + offset, f"step numbered {step_id}, expected {expected}")
        steps.append(_parse_call(line, pos, step_id, number, offset))
    if not steps:
        raise InvalidArgument("plan", "has no steps (expected lines like '1. tool(arg=\"value\")' then 'join()')")
    if require_join and not joined:
        raise InvalidArgument("plan", "does not end with a join() line")
    return Plan(tuple(steps))


def format_plan(plan: Plan) -> str:
    """The text form of ``plan``; ``parse_plan(format_plan(p)) == p``."""
    lines = []
    for step in plan.steps:
        arguments = ", ".join(f"{name}={format_value(value)}" for name, value in step.arguments.items())
        lines.append(f"{step.id}. {step.tool}({arguments})")
    lines.append(JOIN)
    return "\n".join(lines)


def format_value(value: Any) -> str:
    """One argument value as the plan text writes it (a reference only at the top level)."""
    if isinstance(value, Ref):
        parts = []
        for part in value.path:
            if isinstance(part, int):
                parts.append(str(part))
            elif _NAME.fullmatch(part):
                parts.append(part)
            else:
                raise InvalidArgument("plan", f"reference path key {part!r} cannot be written in plan text")
        return "$" + ".".join([str(value.step), *parts])
    if _contains_ref(value):
        raise InvalidArgument("plan", "plan text writes references only as whole argument values")
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _step_number(line: str) -> tuple[int | None, int]:
    match = _STEP.match(line)
    if match is None:
        return None, 0
    return int(match.group(1)), match.end()


def _parse_call(line: str, pos: int, step_id: int, number: int, offset: int) -> Step:
    def fail(at: int, problem: str) -> PlanSyntaxError:
        return PlanSyntaxError(number, at + 1 + offset, problem)

    name = _NAME.match(line, pos)
    if name is None:
        raise fail(pos, "expected a tool name")
    tool = name.group(0)
    pos = name.end()
    if pos >= len(line) or line[pos] != "(":
        raise fail(pos, f"expected '(' after {tool}")
    pos += 1
    arguments: dict[str, Any] = {}
    pos = _WS.match(line, pos).end()
    if line.startswith(")", pos):
        pos += 1
    else:
        while True:
            pos = _WS.match(line, pos).end()
            key = _NAME.match(line, pos)
            if key is None:
                raise fail(pos, "expected an argument name")
            pos = _WS.match(line, key.end()).end()
            if not line.startswith("=", pos):
                raise fail(pos, f"expected '=' after argument {key.group(0)}")
            pos = _WS.match(line, pos + 1).end()
            if key.group(0) in arguments:
                raise fail(key.start(), f"argument {key.group(0)} given twice")
            value, pos = _parse_value(line, pos, fail)
            arguments[key.group(0)] = value
            pos = _WS.match(line, pos).end()
            if line.startswith(",", pos):
                pos += 1
                continue
            if line.startswith(")", pos):
                pos += 1
                break
            raise fail(pos, "expected ',' or ')' after an argument value")
    if line[pos:].strip():
        raise fail(pos, f"unexpected text after the call: {line[pos:].strip()[:20]!r}")
    return Step(step_id, tool, arguments)


def _parse_value(line: str, pos: int, fail) -> tuple[Any, int]:
    if line.startswith("$", pos):
        ref = _REF.match(line, pos)
        if ref is None:
            raise fail(pos, "a reference is '$N' or '$N.key.0.key' (N an earlier step)")
        path = tuple(int(p) if p.isdigit() else p for p in ref.group(2).split(".")[1:])
        return Ref(int(ref.group(1)), path), ref.end()
    try:
        value, end = _DECODER.raw_decode(line, pos)
    except json.JSONDecodeError as exc:
        raise fail(pos, f"expected a JSON value or a $N reference ({exc.msg})") from None
    except ValueError as exc:
        raise fail(pos, str(exc)) from None
    return value, end


def _contains_ref(value: Any) -> bool:
    if isinstance(value, Ref):
        return True
    if isinstance(value, Mapping):
        return any(_contains_ref(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_ref(v) for v in value)
    return False
