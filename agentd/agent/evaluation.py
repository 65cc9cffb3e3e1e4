"""Score a planner's plan for one corpus example by what it does in the sandbox world.

For an example (``docs/design/frame_planner.md``: request, expected plan,
``irreversible``) and the plan a planner made, :func:`score`:

1. checks the plan against the registered tools' schemas (:meth:`Plan.check`);
2. runs it with the real :class:`~agentd.agent.executor.Executor` (every
   approval given) in a fresh sandbox world, and the expected plan in another,
   reading the calls actually made — tool and resolved arguments — from the
   journal;
3. compares them: *structure* (TinyAgent's measure: the plans' DAGs and tool
   names, arguments ignored), *argument-exact* (each executed call's arguments
   equal the expected call's once both sides have the schema defaults filled
   in; strings by case and spacing, numbers by value), and the two worlds'
   final *state* (bookings, orders, payments, transfers, events, messages,
   balances, remembered facts — generated ids and clock stamps left out);
4. names each failure by kind: ``planner_error``, ``invalid_plan``,
   ``wrong_tool``, ``wrong_argument`` (which one), ``missing_step``, ``extra_step``;
5. flags an ``irreversible_violation``: a tool that needs approval executed for
   a request that asked for nothing irreversible.

:func:`summarise` counts and rates over many scores; :func:`markdown_report`
writes them up. Torch-free. A fresh world is a copy of one pristine seeded
file (seeding takes ~0.3 s, a copy a few ms).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import shutil
import sqlite3
import tempfile
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from agentd.agent.plan import Plan
from agentd.errors import AgentdError
from agentd.tools import ToolContext, ToolSpec

#: Failure kinds, in the order a report lists them.
FAILURE_KINDS = ("planner_error", "invalid_plan", "wrong_tool", "wrong_argument", "missing_step", "extra_step")

#: World tables an agent can change, with the columns that are generated (ids, stamps) and so not compared.
MUTABLE_TABLES: dict[str, tuple[str, ...]] = {
    "flight_bookings": ("id", "transaction_id", "confirmation", "booked_at"),
    "hotel_bookings": ("id", "transaction_id", "confirmation", "booked_at"),
    "orders": ("id", "transaction_id", "placed_at"),
    "order_items": ("order_id",),
    "bill_payments": ("id", "transaction_id", "paid_at"),
    "bills": (),
    "transactions": ("id", "posted_at"),
    "accounts": (),
    "events": ("id",),
    "messages": ("id",),
}


# -- the sandbox ------------------------------------------------------------------------------

_pristine_lock = threading.Lock()
_pristine: Path | None = None


def pristine_world() -> Path:
    """A seeded world file made once per process; fresh worlds are copies of it. Never changed."""
    global _pristine
    with _pristine_lock:
        if _pristine is None or not _pristine.exists():
            from agentd.plugins.demo_tools import World
            from agentd.plugins.demo_tools.common import WORLD_DIR, WORLD_FILE

            path = Path(tempfile.mkdtemp(prefix="agentd-eval-world-")) / WORLD_DIR / WORLD_FILE
            path.parent.mkdir()
            World(path).close()
            _pristine = path
        return _pristine


def fresh_data_dir(parent: Path) -> Path:
    """A tool data dir under ``parent`` holding a copy of the pristine world."""
    from agentd.plugins.demo_tools.common import WORLD_DIR, WORLD_FILE

    world = parent / WORLD_DIR / WORLD_FILE
    world.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pristine_world(), world)
    return parent


def sandbox_tools() -> dict[str, ToolSpec]:
    """The registered tools, plus the memory pack's ``remember_fact`` if the registry lacks it."""
    from agentd import tools as registry

    tools = {spec.name: spec for spec in registry.tool_specs()}
    if "remember_fact" not in tools:
        try:
            from agentd.plugins.memory_tools import tool_specs as memory_specs
        except ImportError:
            memory_specs = None
        if memory_specs is not None:
            tools.update({spec.name: spec for spec in memory_specs()})
    return tools


def call_in_pristine_world(tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Call a read-only tool on the pristine world (what a search returns before anything changes)."""
    spec = sandbox_tools()[tool]
    if not spec.read_only:
        raise ValueError(f"{tool} changes the world; run it in a fresh one")
    data_dir = pristine_world().parent.parent  # the world file is data_dir/demo_world/world.sqlite
    return spec.call(dict(arguments), ToolContext("pristine", 1, data_dir))


@dataclass(frozen=True)
class Call:
    """One call the executor made: the step, the tool, its resolved arguments and how it ended."""

    step: int
    tool: str
    arguments: dict[str, Any]
    status: str
    error: str | None = None


@dataclass(frozen=True)
class Execution:
    """What running a plan did: the calls made, the run's status and the world's final state."""

    calls: tuple[Call, ...]
    status: str
    error: str | None
    state: dict[str, Any]


def execute(plan: Plan, tools: Mapping[str, ToolSpec] | None = None) -> Execution:
    """Run ``plan`` in a fresh sandbox world, every approval given; the world is thrown away after."""
    from agentd.agent.executor import AutoApprove, Executor
    from agentd.agent.journal import Journal

    tools = sandbox_tools() if tools is None else tools
    with tempfile.TemporaryDirectory(prefix="agentd-eval-") as scratch:
        root = Path(scratch)
        data_dir = fresh_data_dir(root / "tools")
        journal = Journal(root / "journal.sqlite")
        # Only a plan that remembers something needs a memory (opening one costs as much as a step).
        memory_store, options = _memory(root) if any(s.tool == "remember_fact" for s in plan.steps) else (None, {})
        try:
            executor = Executor(journal, tools, data_dir, **options)
            journal.create_run("eval", "", auto_approve=True)
            error = None
            try:
                asyncio.run(_drain(executor.execute("eval", plan, AutoApprove())))
            except AgentdError as exc:
                error = str(exc)
            record = journal.run("eval")
            calls = tuple(
                Call(s.step, s.tool, s.arguments, s.status, s.error) for s in record.steps if s.arguments is not None
            )
            state = world_state(data_dir)
            state["facts"] = memory_store.facts("default") if memory_store is not None else {}
            return Execution(calls, record.status, error or record.error, state)
        finally:
            journal.close()
            if memory_store is not None:
                memory_store.close()


async def _drain(events: Any) -> None:
    async for _ in events:
        pass


def _memory(root: Path) -> tuple[Any, dict[str, Any]]:
    """A user memory for ``remember_fact``, when this install has one and the executor takes it."""
    from agentd.agent.executor import Executor

    if "memory" not in inspect.signature(Executor.__init__).parameters:
        return None, {}
    try:
        from agentd.agent.memory import MemoryStore
    except ImportError:
        return None, {}
    store = MemoryStore(root / "memory.sqlite")
    return store, {"memory": store.for_user("default")}


def world_state(data_dir: Path) -> dict[str, Any]:
    """The changeable tables of the world under ``data_dir``: sorted rows, generated columns left out."""
    from agentd.plugins.demo_tools.common import WORLD_DIR, WORLD_FILE

    db = sqlite3.connect(Path(data_dir) / WORLD_DIR / WORLD_FILE)
    try:
        state: dict[str, Any] = {}
        for table, generated in MUTABLE_TABLES.items():
            cursor = db.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            keep = [i for i, name in enumerate(names) if name not in generated]
            state[table] = sorted(json.dumps([row[i] for i in keep]) for row in cursor)
        return state
    finally:
        db.close()


# -- comparing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    kind: str
    detail: str
    #: The expected plan's step it concerns (None for a step the expected plan does not have).
    step: int | None = None
    #: For ``wrong_argument``: the argument's name.
    argument: str | None = None


@dataclass
class Score:
    """How one plan did on one example."""

    example_id: str
    template: str
    valid: bool
    structure_ok: bool
    exact_ok: bool
    state_ok: bool
    irreversible_violation: bool
    failures: list[Failure] = field(default_factory=list)
    expected_calls: list[Call] = field(default_factory=list)
    predicted_calls: list[Call] = field(default_factory=list)
    #: The expected plan failed to run: a corpus bug, not the planner's (the example is unscorable).
    expected_error: str | None = None

    @property
    def success(self) -> bool:
        """Argument-exact success: every call right and the world in the expected state."""
        return self.exact_ok and self.state_ok


def score(
    example: Mapping[str, Any], plan: Plan | None, planning_error: str | None = None,
    *, tools: Mapping[str, ToolSpec] | None = None, expected: Execution | None = None,
) -> Score:
    """Score ``plan`` (None when the planner failed with ``planning_error``) on ``example``.

    ``expected``: the expected plan's execution, if already known (it depends only on the example).
    """
    tools = sandbox_tools() if tools is None else tools
    expected_plan = Plan.from_json(example["plan"])
    expected = expected if expected is not None else execute(expected_plan, tools)
    result = Score(str(example.get("id", "")), str(example.get("template", "")), False, False, False, False, False,
                   expected_calls=list(expected.calls))
    if expected.status != "done":
        result.expected_error = expected.error or expected.status
    if plan is None:
        result.failures.append(Failure("planner_error", planning_error or "no plan"))
        return result
    try:
        plan.check(tools)
    except AgentdError as exc:
        result.failures.append(Failure("invalid_plan", str(exc)))
        return result
    result.valid = True
    result.structure_ok = structure(plan) == structure(expected_plan)
    try:
        predicted = execute(plan, tools)
    except AgentdError as exc:  # refused before any step ran (over the step budget)
        result.valid = False
        result.failures.append(Failure("invalid_plan", str(exc)))
        return result
    result.predicted_calls = list(predicted.calls)
    result.failures += compare_calls(expected.calls, predicted.calls, tools)
    result.exact_ok = not result.failures and predicted.status == "done"
    if not result.failures and predicted.status != "done":
        result.failures.append(Failure("wrong_argument", f"the plan's run ended {predicted.status}: {predicted.error}"))
    result.state_ok = predicted.state == expected.state
    result.irreversible_violation = not example.get("irreversible", False) and any(
        tools[c.tool].needs_approval for c in predicted.calls if c.tool in tools
    )
    return result


def structure(plan: Plan) -> Counter[tuple[str, tuple[str, ...]]]:
    """TinyAgent's structure: each step's tool with the tools it depends on (a multiset, order-free)."""
    tools = {step.id: step.tool for step in plan.steps}
    return Counter((step.tool, tuple(sorted(tools.get(d, "?") for d in step.dependencies))) for step in plan.steps)


def compare_calls(expected: Sequence[Call], predicted: Sequence[Call], tools: Mapping[str, ToolSpec]) -> list[Failure]:
    """Failures of ``predicted`` against ``expected``, calls paired in order by tool name."""
    failures: list[Failure] = []
    unmatched = list(predicted)
    pairs: list[tuple[Call, Call]] = []
    missing: list[Call] = []
    for want in expected:
        got = next((c for c in unmatched if c.tool == want.tool), None)
        if got is None:
            missing.append(want)
        else:
            unmatched.remove(got)
            pairs.append((want, got))
    for want, got in pairs:
        spec = tools.get(want.tool)
        schema = spec.parameters if spec is not None else {}
        for name in argument_differences(want.arguments, got.arguments, schema):
            failures.append(Failure(
                "wrong_argument", f"{want.tool}.{name}: expected {_show(want.arguments.get(name))}, "
                f"got {_show(got.arguments.get(name))}", want.step, name))
    # A call of the wrong tool where one was expected; what is left over is missing or extra.
    for want, got in zip(list(missing), list(unmatched)):
        failures.append(Failure("wrong_tool", f"step {want.step}: expected {want.tool}, got {got.tool}", want.step))
        missing.remove(want)
        unmatched.remove(got)
    failures += [Failure("missing_step", f"{c.tool} (step {c.step}) was not called", c.step) for c in missing]
    failures += [Failure("extra_step", f"{c.tool} was called and not expected") for c in unmatched]
    return failures


def argument_differences(expected: Mapping[str, Any], predicted: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Names of the arguments that differ once both sides have the schema's defaults."""
    want, got = with_defaults(expected, schema), with_defaults(predicted, schema)
    return sorted(name for name in set(want) | set(got) if not same_value(want.get(name, _ABSENT), got.get(name, _ABSENT)))


_ABSENT = object()


def with_defaults(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` with every absent property that has a schema default filled in (nested objects too)."""
    properties = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    filled = {name: _fill(value, properties.get(name, {})) for name, value in arguments.items()}
    for name, prop in properties.items():
        if name not in filled and "default" in prop:
            filled[name] = prop["default"]
    return filled


def _fill(value: Any, schema: Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping) and schema.get("type") == "object":
        return with_defaults(value, schema)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_fill(item, schema["items"]) for item in value]
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equal as a request means them: strings ignoring case and spacing, numbers by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) < 1e-9
    if isinstance(a, str) and isinstance(b, str):
        return _text(a) == _text(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def _text(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip().casefold()


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value)


# -- summaries --------------------------------------------------------------------------------


def summarise(scores: Sequence[Score]) -> dict[str, Any]:
    """Counts and rates over ``scores`` (unscorable examples — the expected plan failed — left out)."""
    scored = [s for s in scores if s.expected_error is None]
    n = len(scored)

    def rate(count: int) -> float:
        return round(count / n, 4) if n else 0.0

    counts = {
        "examples": n,
        "unscorable": len(scores) - n,
        "valid": sum(s.valid for s in scored),
        "structure_success": sum(s.structure_ok for s in scored),
        "argument_exact_success": sum(s.exact_ok for s in scored),
        "state_success": sum(s.state_ok for s in scored),
        "success": sum(s.success for s in scored),
        "irreversible_violations": sum(s.irreversible_violation for s in scored),
    }
    by_kind = Counter(f.kind for s in scored for f in s.failures)
    examples_by_kind = Counter(kind for s in scored for kind in {f.kind for f in s.failures})
    arguments = Counter(f"{f.detail.split(':', 1)[0]}" for s in scored for f in s.failures if f.kind == "wrong_argument")
    by_template: dict[str, list[int]] = {}
    for s in scored:
        by_template.setdefault(s.template, [0, 0])
        by_template[s.template][0] += 1
        by_template[s.template][1] += s.success
    return {
        **counts,
        "rates": {key: rate(value) for key, value in counts.items() if key not in ("examples", "unscorable")},
        "failures": {kind: by_kind.get(kind, 0) for kind in FAILURE_KINDS},
        "examples_failing_by_kind": {kind: examples_by_kind.get(kind, 0) for kind in FAILURE_KINDS},
        "wrong_arguments": dict(arguments.most_common()),
        "by_template": {t: {"examples": a, "success": b} for t, (a, b) in sorted(by_template.items())},
    }


def markdown_report(summary: Mapping[str, Any], scores: Sequence[Score] = (), *, title: str = "Planner evaluation",
                    worst: int = 20) -> str:
    """``summary`` (from :func:`summarise`) as Markdown, with up to ``worst`` failed examples listed."""
    n = summary["examples"]
    lines = [f"# {title}", "", f"{n} held-out examples ({summary['unscorable']} unscorable left out).", "",
             "| measure | count | rate |", "|---|---|---|"]
    for key in ("valid", "structure_success", "argument_exact_success", "state_success", "success",
                "irreversible_violations"):
        lines.append(f"| {key.replace('_', ' ')} | {summary[key]} | {summary['rates'][key]:.1%} |")
    lines += ["", "Failures by kind (failures / examples with one):", "", "| kind | failures | examples |", "|---|---|---|"]
    for kind in FAILURE_KINDS:
        lines.append(f"| {kind.replace('_', ' ')} | {summary['failures'][kind]} | {summary['examples_failing_by_kind'][kind]} |")
    if summary["wrong_arguments"]:
        lines += ["", "Wrong arguments: " + ", ".join(f"{k} ({v})" for k, v in summary["wrong_arguments"].items())]
    failed = [s for s in scores if s.expected_error is None and not s.success][:worst]
    if failed:
        lines += ["", f"First {len(failed)} failed examples:", ""]
        for s in failed:
            lines.append(f"- `{s.example_id}`: " + ("; ".join(f"{f.kind}: {f.detail}" for f in s.failures) or "world state differs"))
    return "\n".join(lines) + "\n"


def score_to_json(result: Score) -> dict[str, Any]:
    """A score as plain JSON (for a results file)."""
    return {**asdict(result), "success": result.success}
