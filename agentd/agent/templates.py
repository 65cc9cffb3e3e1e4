"""The template cache: a plan that worked, refilled for a similar later request without planning.

After a ``done`` run whose plan the planner wrote, :meth:`TemplateCache.keep`
stores (per user) the plan and, for each literal argument, the span of the
request it came from (:class:`~agentd.agent.planner.ArgumentSource`: the
planner's, else the argument's text found verbatim in the request).

Before planning, :meth:`TemplateCache.find` looks at that user's templates
whose request embeds close to the new one (cosine >= ``threshold``) and aligns
the two requests word by word (:class:`difflib.SequenceMatcher`). A template
fits when every changed region of its request lies inside one argument's
span and at least ``min_unchanged`` of its words are unchanged; then each
sourced argument is re-read from the aligned words of the new request
(normalised by kind: a date, an amount, a count, a time, or the text itself),
the rest of the plan (unsourced arguments, references) is kept, and the plan
must pass :meth:`Plan.check`. Anything that does not fit is no hit: the planner
plans as usual.

"send Maria 45 dollars for lunch" (to="Maria", amount=45 from "45 dollars",
memo="lunch") refills "send Sam 20 dollars for coffee" as to="Sam", amount=20,
memo="coffee"; "send Maria a message saying hi" changes words outside every
span ("for") and is no hit.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import functools
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from agentd.agent.memory import MemoryStore, Template
from agentd.agent.normalise import VALUE_KINDS, read_value
from agentd.agent.plan import Plan, Ref
from agentd.agent.planner import ArgumentSource
from agentd.errors import AgentdError

#: MiniLM cosine a template's request must reach to be tried. Low on purpose: MiniLM weighs content
#: words, not the request's shape ("send Maria 45 dollars for lunch" is 0.47 from "send Sam 20 dollars
#: for coffee", a hit, and 0.63 from "send Maria a message saying hi", a miss), so the cosine only
#: picks candidates and the word alignment decides.
DEFAULT_THRESHOLD = 0.25
#: Templates tried per request, most similar first.
MAX_CANDIDATES = 20
#: Share of the template request's words the new request must keep. "send Maria 45 dollars for
#: lunch" -> "send Sam 20 dollars for coffee" keeps 3 of 6 (send, dollars, for), hence 0.5.
DEFAULT_MIN_UNCHANGED = 0.5
#: Words and punctuation: "$45" is "$" + "45"; "45.50", "1,200", "forty-five", "I'm" are one word each.
WORD = re.compile(r"\w+(?:['’.,:-]\w+)*|[^\w\s]")
#: An ISO date the planner computed from "today": a template cannot recompute it unless it knows its source.
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

#: ``kind -> (text, today) -> value or None``.
Normaliser = Callable[[str, dt.date], Any]


def default_normalisers() -> dict[str, Normaliser]:
    """Every kind :func:`agentd.agent.normalise.read_value` reads, as a normaliser."""
    return {kind: functools.partial(read_value, kind) for kind in VALUE_KINDS}


@dataclass(frozen=True)
class TemplateHit:
    """A template that fits a new request, and the plan refilled from it."""

    template_id: str
    plan: Plan
    #: Cosine similarity of the two requests.
    score: float


class TemplateCache:
    """Keeps and finds templates in a :class:`MemoryStore`, per user."""

    def __init__(
        self,
        store: MemoryStore,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        min_unchanged: float = DEFAULT_MIN_UNCHANGED,
        normalisers: Mapping[str, Normaliser] | None = None,
    ):
        self.store = store
        self.threshold = threshold
        self.min_unchanged = min_unchanged
        self.normalisers: Mapping[str, Normaliser] = dict(normalisers) if normalisers is not None else default_normalisers()

    def keep(
        self, user: str, request: str, embedding: np.ndarray, plan: Plan, sources: Mapping[tuple[int, str], ArgumentSource]
    ) -> str | None:
        """Store ``plan`` as a template for ``request``; None when it cannot be refilled safely."""
        kept = template_sources(request, plan, sources)
        if kept is None:
            return None
        return self.store.add_template(user, request, embedding, plan.renumbered(1).to_json(), kept)

    def find(self, user: str, request: str, embedding: np.ndarray, tools: Mapping[str, Any], today: dt.date) -> TemplateHit | None:
        """The best of ``user``'s templates that fits ``request``, refilled; None if none does."""
        for template in self.store.similar_templates(user, embedding, self.threshold, MAX_CANDIDATES):
            try:
                plan = self.refill(template, request, today)
                if plan is None:
                    continue
                plan.check(tools)
            except AgentdError:
                continue  # e.g. a refilled value the tool's schema refuses: no hit
            self.store.used_template(user, template.id)
            return TemplateHit(template.id, plan, template.score)
        return None

    def refill(self, template: Template, request: str, today: dt.date) -> Plan | None:
        """``template``'s plan with each sourced argument re-read from ``request``; None if they do not
        align, a value does not read as its kind, or the words could be split between arguments two ways."""
        old_words, new_words = _words(template.request), _words(request)
        spans = [_word_range(old_words, source["start"], source["end"]) for source in template.sources]
        readings = set()
        for ranges in alignments(old_words, new_words, spans, self.min_unchanged):
            values = []
            for source, (first, last) in zip(template.sources, ranges):
                normalise = self.normalisers.get(source["kind"])
                text = request[new_words[first][0]:new_words[last - 1][1]]
                value = normalise(text, today) if normalise is not None else None
                if value is None:
                    break
                values.append(value)
            else:
                readings.add(json.dumps(values))
        if len(readings) != 1:
            return None
        plan = copy.deepcopy(template.plan)
        steps = {step["id"]: step for step in plan["steps"]}
        for source, value in zip(template.sources, json.loads(readings.pop())):
            steps[source["step"]]["arguments"][source["argument"]] = value
        return Plan.from_json(plan)


def template_sources(
    request: str, plan: Plan, sources: Mapping[tuple[int, str], ArgumentSource]
) -> list[dict[str, Any]] | None:
    """Where each literal argument of ``plan`` came from in ``request``: the planner's sources for
    top-level literal arguments, else a string argument found verbatim (once, case-insensitive, on
    word boundaries). None when the plan holds a date nobody can say where it came from (it was
    computed from "today" and would go stale)."""
    kept = []
    for step in plan.steps:
        for name, value in step.arguments.items():
            if isinstance(value, (Ref, dict, list, tuple)):
                continue  # references are kept as they are; nested literals are not refilled
            source = sources.get((step.id, name))
            if source is None and isinstance(value, str):
                source = _verbatim(request, value)
            if source is None:
                if isinstance(value, str) and ISO_DATE.fullmatch(value):
                    return None
                continue
            if not 0 <= source.start < source.end <= len(request) or not request[source.start:source.end].strip():
                continue
            kept.append({"step": step.id - plan.first + 1, "argument": name,
                         "start": source.start, "end": source.end, "kind": source.kind})
    return kept


def alignments(
    old_words: list[tuple[int, int, str]], new_words: list[tuple[int, int, str]], spans: list[tuple[int, int] | None],
    min_unchanged: float,
) -> Iterator[list[tuple[int, int]]]:
    """Ways to read each span (a ``[first, last)`` range of old words) as a range of new words.

    None when a changed region of the old request lies outside the spans, fewer than
    ``min_unchanged`` of its words are unchanged, or a span's words vanish. Usually one
    way; a changed region across adjacent spans ("Maria 45" -> "Jo Ann 120") can be cut
    between them in several, and the caller keeps the one whose values all read.
    """
    if any(span is None for span in spans) or not old_words:
        return
    old = [word for _, _, word in old_words]
    new = [word for _, _, word in new_words]
    opcodes = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    if sum(i2 - i1 for tag, i1, i2, _, _ in opcodes if tag == "equal") < min_unchanged * len(old):
        return
    fixed: list[set[int]] = [set() for _ in spans]  # new words each span surely has
    open_regions: list[tuple[list[int], int, int]] = []  # (spans in order, new words j1..j2) to cut
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            for index, (first, last) in enumerate(spans):
                fixed[index].update(j1 + i - i1 for i in range(max(i1, first), min(i2, last)))
            continue
        owners = _owners(spans, i1, i2)
        if owners is None:
            return
        if len(owners) == 1:
            for index in owners[0]:
                fixed[index].update(range(j1, j2))
        else:
            open_regions.append((owners, j1, j2))
    for cuts in itertools.product(*(_cuts(len(owners), j1, j2) for owners, j1, j2 in open_regions)):
        words = [set(found) for found in fixed]
        for (owners, _, _), parts in zip(open_regions, cuts):
            for group, part in zip(owners, parts):
                for index in group:
                    words[index].update(part)
        if all(found and max(found) - min(found) + 1 == len(found) for found in words):
            yield [(min(found), max(found) + 1) for found in words]


def _owners(spans: list[tuple[int, int]], i1: int, i2: int) -> list[list[int]] | None:
    """The spans a changed region of old words ``[i1, i2)`` falls in, in order, grouped by word
    range (two arguments may come from the same words); None if a word is in no span or the
    region is ambiguous. An insertion (``i1 == i2``) belongs to the one span it touches."""
    ranges = sorted(set(spans))
    if i1 == i2:
        touching = [r for r in ranges if r[0] <= i1 <= r[1]]
        chosen = touching if len(touching) == 1 else []
    else:
        chosen = [r for r in ranges if r[0] < i2 and i1 < r[1]]
        covered = set().union(*(range(max(a, i1), min(b, i2)) for a, b in chosen)) if chosen else set()
        if covered != set(range(i1, i2)) or any(a > i1 and a < b0 for (a, _), (_, b0) in zip(chosen[1:], chosen)):
            return None  # a word outside every argument changed, or two arguments overlap here
    if not chosen:
        return None
    return [[index for index, span in enumerate(spans) if span == r] for r in chosen]


def _cuts(parts: int, j1: int, j2: int) -> list[list[range]]:
    """Every way to cut new words ``j1..j2`` into ``parts`` consecutive (possibly empty) ranges."""
    ways = []
    for points in itertools.combinations_with_replacement(range(j1, j2 + 1), parts - 1):
        edges = [j1, *points, j2]
        ways.append([range(a, b) for a, b in zip(edges, edges[1:])])
    return ways


def _words(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, lowercased word)`` of every word and punctuation mark of ``text``."""
    return [(match.start(), match.end(), match.group().lower()) for match in WORD.finditer(text)]


def _word_range(words: list[tuple[int, int, str]], start: int, end: int) -> tuple[int, int] | None:
    """The words a character span overlaps, as ``[first, last)``; None if none."""
    inside = [index for index, (word_start, word_end, _) in enumerate(words) if word_start < end and start < word_end]
    return (inside[0], inside[-1] + 1) if inside else None


def _verbatim(request: str, value: str) -> ArgumentSource | None:
    """Where ``value`` appears in ``request``, if exactly once (case-insensitive, whole words)."""
    text = value.strip()
    if not text:
        return None
    pattern = re.compile(rf"(?<!\w){re.escape(text)}(?!\w)", re.IGNORECASE)
    matches = list(pattern.finditer(request))
    if len(matches) != 1:
        return None
    return ArgumentSource(matches[0].start(), matches[0].end(), "text")
