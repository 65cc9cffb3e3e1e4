"""Generate the planner corpus: sampled training examples and a fixed held-out test set, all checked.

Every example is checked before it is kept (:func:`check_example`): its spans
are exact and ordered, its expected plan passes :meth:`Plan.check` against
the registered tools and runs without a failed step in a fresh sandbox world,
and every value the code normalises (dates, amounts, counts, times,
durations) reads back from its span as the plan has it. A draw that fails is
drawn again; a template that keeps failing is an error naming it.

The test set does not depend on the training seed: one fixed seed, so every
training run is scored on the same held-out requests.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from agentd.agent.normalise import read_value
from agentd.agent.plan import Plan

from ..assemble import ROLE_KINDS
from ..labels import SPAN_LABELS
from . import slots as slot_values
from .pattern import Slot, choose, render
from .phrasings import PREFIXES, SUFFIXES
from .slots import Resample
from .templates import TEMPLATES, Template, of_split
from .values import TODAY

#: The held-out set's seed (independent of the training seed).
TEST_SEED = 20270301
#: Held-out examples scored (needs_memory ones come on top).
DEFAULT_TEST_SIZE = 300
DEFAULT_MEMORY_EXAMPLES = 24
#: Share of training examples (of templates not already misspelt) that get light typos too.
TRAIN_TYPO_SHARE = 0.1
TRAIN_TYPO_RATE = 0.12
#: Shares of training requests that get a generic lead-in ("hey", "ok so") / a sign-off ("thanks", "asap").
TRAIN_PREFIX_SHARE = 0.2
TRAIN_SUFFIX_SHARE = 0.2
_ATTEMPTS = 60

#: Span labels whose words the planner's code normalises, and how (the assembler's value kinds;
#: accounts are left out: the corpus writes an account's words, not the value they name).
_NORMALISED = {role: kind for role, kind in ROLE_KINDS.items() if kind != "account"}


class CorpusError(Exception):
    """A template cannot produce a valid example (a corpus bug)."""


def generate(
    n_train: int, seed: int, *, n_test: int = DEFAULT_TEST_SIZE, n_memory: int = DEFAULT_MEMORY_EXAMPLES,
    check: bool = True, test_seed: int = TEST_SEED,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n_train`` training examples drawn with ``seed``, and the fixed held-out set.

    The held-out set has ``n_test`` scored examples (test templates in turn) plus
    ``n_memory`` "my usual" examples flagged ``needs_memory``. Another ``test_seed``
    draws the same held-out templates with other values (a benchmark's warm-up set).
    """
    checker = _Checker() if check else None
    train_templates = [t for t in of_split("train") if not t.needs_memory]
    train_memory = [t for t in of_split("train") if t.needs_memory]
    rng = random.Random(seed)
    train = []
    for index in range(n_train):
        memory = train_memory and index % 50 == 49  # a few "my usual" examples to learn the span from
        template = rng.choice(train_memory) if memory else rng.choice(train_templates)
        typo = TRAIN_TYPO_RATE if template.typo_rate == 0 and rng.random() < TRAIN_TYPO_SHARE else template.typo_rate
        train.append(wrap(_draw(template, "train", rng, index, typo, checker), rng))
    test_rng = random.Random(test_seed)
    scored = [t for t in of_split("test") if not t.needs_memory]
    test = [_draw(scored[i % len(scored)], "test", test_rng, i, None, checker) for i in range(n_test)]
    memory_templates = [t for t in of_split("test") if t.needs_memory]
    test += [_draw(memory_templates[i % len(memory_templates)], "test", test_rng, n_test + i, None, checker)
             for i in range(n_memory if memory_templates else 0)]
    return train, test


def _draw(template: Template, split: str, rng: random.Random, index: int, typo: float | None,
          checker: "_Checker | None") -> dict[str, Any]:
    problem = ""
    for _ in range(_ATTEMPTS):
        try:
            example, notes = make_example(template, split, rng, index, template.typo_rate if typo is None else typo)
        except Resample as exc:
            problem = str(exc)
            continue
        problem = checker.problem(example, notes) if checker is not None else ""
        if not problem:
            return example
    raise CorpusError(f"template {template.id} made no valid example in {_ATTEMPTS} draws; last problem: {problem}")


def make_example(
    template: Template, split: str, rng: random.Random, index: int, typo_rate: float = 0.0
) -> tuple[dict[str, Any], list[tuple[str, str, Any]]]:
    """One example of ``template`` (not yet checked) and its normalised values as (label, words, value);
    :class:`Resample` if the draw cannot work."""
    chosen = choose(template.nodes, rng)
    said, _ = slot_values.fill([node for node in chosen if isinstance(node, Slot)], split, rng)
    values = slot_values.finish(said)
    example_extra: dict[str, Any] = {}
    if template.needs_memory:
        items = _usual_items(values)
        values["_usual_items"] = items
        example_extra = {"needs_memory": True, "usual_items": items}
    text, spans = render(chosen, said, rng, typo_rate=typo_rate)
    plan = template.write_plan(values)
    example = {
        "id": f"{template.id}-{index:05d}", "template": template.id, "split": split, "style": template.style,
        "intents": list(template.intents), "request": text, "today": TODAY.isoformat(), "spans": spans,
        "plan": plan, "irreversible": _irreversible(plan), **example_extra,
    }
    notes = [(node.label, said[node.name].text, said[node.name].value) for node in chosen
             if isinstance(node, Slot) and node.label in _NORMALISED]
    return example, notes


def wrap(example: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A training example now and then with a casual lead-in and/or a sign-off around its request.

    The words join the first and last clause (the trainer labels a request's
    first clause from its start and its last to its end), so the spans only
    shift; the plan does not change. Test examples are never wrapped.
    """
    prefix = rng.choice(PREFIXES) if rng.random() < TRAIN_PREFIX_SHARE else ""
    suffix = rng.choice(SUFFIXES) if rng.random() < TRAIN_SUFFIX_SHARE else ""
    if not prefix and not suffix:
        return example
    text = example["request"]
    head = prefix + " " if prefix else ""
    tail = ""
    if suffix:
        glue = "" if suffix[0] in "!?.:" else (rng.choice((" ", ", ")) if text[-1].isalnum() else " ")
        tail = glue + suffix
    spans = [{**span, "start": span["start"] + len(head), "end": span["end"] + len(head)} for span in example["spans"]]
    return {**example, "request": head + text + tail, "spans": spans}


def _usual_items(values: dict[str, Any]) -> list[dict[str, Any]]:
    """What the user "usually" orders there: the first dish on the menu the order's search finds first."""
    search = tuple(sorted((role, values[role]) for role in ("cuisine", "dish", "near") if role in values))
    menu = slot_values.first_menu(search)
    if not menu:
        raise Resample("no restaurant for the usual order")
    return [{"name": menu[0]}]


def _irreversible(plan: dict[str, Any]) -> bool:
    from agentd.agent.evaluation import sandbox_tools

    tools = sandbox_tools()
    return any(tools[step["tool"]].needs_approval for step in plan["steps"] if step["tool"] in tools)


class _Checker:
    """Checks examples; plan executions are cached (many examples share a plan)."""

    def __init__(self) -> None:
        from agentd.agent.evaluation import sandbox_tools

        self.tools = sandbox_tools()
        self.runs: dict[str, str] = {}

    def problem(self, example: dict[str, Any], notes: Iterable[tuple[str, str, Any]]) -> str:
        """Why ``example`` is not valid ("" if it is)."""
        return span_problem(example) or normalise_problem(notes) or self.plan_problem(example["plan"])

    def plan_problem(self, plan_json: dict[str, Any]) -> str:
        from agentd.errors import AgentdError

        key = json.dumps(plan_json, sort_keys=True)
        if key not in self.runs:
            try:
                plan = Plan.from_json(plan_json)
                plan.check(self.tools)
                self.runs[key] = run_problem(plan, self.tools)
            except AgentdError as exc:
                self.runs[key] = f"expected plan invalid: {exc}"
        return self.runs[key]


def run_problem(plan: Plan, tools: dict[str, Any]) -> str:
    """Why ``plan`` fails in a fresh sandbox world ("" if every step succeeds).

    The tools are called in step order, as the executor would call them, but
    without its journal and threads (a few times faster; the evaluation
    harness runs the real executor). A plan that only reads shares the
    pristine world instead of copying it.
    """
    from agentd.agent.evaluation import fresh_data_dir, pristine_world
    from agentd.errors import AgentdError
    from agentd.tools import ToolContext, validate_arguments

    read_only = all(tools[step.tool].read_only for step in plan.steps)
    with tempfile.TemporaryDirectory(prefix="agentd-corpus-") as scratch:
        data_dir = pristine_world().parent.parent if read_only else fresh_data_dir(Path(scratch) / "tools")
        memory = None
        if any(step.tool == "remember_fact" for step in plan.steps):
            from agentd.agent.memory import MemoryStore

            memory = MemoryStore(Path(scratch) / "memory.sqlite")
        try:
            results: dict[int, Any] = {}
            for step in plan.steps:
                context = ToolContext("corpus", step.id, data_dir)
                if memory is not None:
                    context = ToolContext("corpus", step.id, data_dir, memory=memory.for_user("default"))
                try:
                    arguments = validate_arguments(tools[step.tool], step.resolve(results))
                    results[step.id] = tools[step.tool].call(arguments, context)
                except AgentdError as exc:
                    return f"expected plan failed at step {step.id} ({step.tool}): {exc}"
            return ""
        finally:
            if memory is not None:
                memory.close()


def span_problem(example: dict[str, Any]) -> str:
    """What is wrong with the example's spans ("" if nothing)."""
    text, end = example["request"], 0
    for span in example["spans"]:
        start, stop, label = span["start"], span["end"], span["label"]
        if label not in SPAN_LABELS:
            return f"unknown span label {label!r}"
        if not (end <= start < stop <= len(text)):
            return f"span {span} overlaps, is out of order or outside the text"
        words = text[start:stop]
        if words != words.strip():
            return f"span {words!r} has surrounding spaces"
        end = stop
    return ""


def normalise_problem(notes: Iterable[tuple[str, str, Any]]) -> str:
    """A normalised value the planner's normaliser reads differently from the corpus ("" if none)."""
    for label, words, value in notes:
        got = read_value(_NORMALISED[label], words, TODAY)
        if got != value:
            return f"{label} {words!r}: the corpus means {value!r}, the normaliser reads {got!r}"
    return ""


def write_jsonl(path: Path | str, examples: Sequence[dict[str, Any]]) -> Path:
    """Write ``examples`` one JSON object a line; atomic (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for example in examples:
                out.write(json.dumps(example, ensure_ascii=False, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def template_counts() -> dict[str, dict[str, int]]:
    """Templates per intent and split (a multi-intent template counts for each of its intents)."""
    counts: dict[str, dict[str, int]] = {}
    for template in TEMPLATES:
        for intent in dict.fromkeys(template.intents):
            counts.setdefault(intent, {"train": 0, "test": 0})[template.split] += 1
    return counts
