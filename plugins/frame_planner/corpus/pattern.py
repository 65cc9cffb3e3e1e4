"""The template mini-language: phrasings with labelled words, slots, choices and optional parts.

    "[send|wire](transfer_money) {person} {amount} <for {memo}>"

* ``[a|b](label)`` — words that carry a label (an intent trigger such as
  ``transfer_money``, or ``usual``); one of the alternatives is said.
* ``{slot}`` / ``{slot:kind}`` — a slot filled by :mod:`.slots`; its label is
  the name without a trailing number (``person2`` is a ``person``), ``kind``
  narrows the sampler (``{date:any}``, ``{amount:bill}``). ``{!slot}`` drops
  the words a value brings before itself ("on " before "Friday") where the
  template says its own ("from {!date}").
* ``(a|b|c)`` — say one of these (plain words only).
* ``<...>`` — say this part or leave it out (it may hold slots); ``->`` is plain text.

:func:`parse` turns a pattern into nodes; :func:`choose` settles the choices
and optional parts; :func:`render` joins words and slot values into the
request text and its character spans, with optional typos in the unlabelled
words and triggers (never in slot values).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Union

from ..labels import INTENT_PREFIX, INTENTS
from .typos import misspell
from .values import Said


@dataclass(frozen=True)
class Words:
    text: str


@dataclass(frozen=True)
class Labelled:
    choices: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class Slot:
    name: str
    kind: str = ""
    #: Say the value without its lead words ("on ", "at ", "for ").
    bare: bool = False

    @property
    def label(self) -> str:
        return self.name.rstrip("0123456789")


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]


@dataclass(frozen=True)
class Optional:
    nodes: tuple["Node", ...]


Node = Union[Words, Labelled, Slot, Choice, Optional]
_TOKEN = re.compile(r"\[([^\]]+)\]\(([a-z_]+)\)|\{(!?)([a-z_]+\d*)(?::([a-z_]+))?\}|\(([^()<>{}\[\]]*\|[^()<>{}\[\]]*)\)|<|(?<!-)>")


def parse(pattern: str) -> tuple[Node, ...]:
    """The nodes of ``pattern``; ValueError naming the pattern if brackets do not balance."""
    stack: list[list[Node]] = [[]]
    position = 0
    for match in _TOKEN.finditer(pattern):
        if match.start() > position:
            stack[-1].append(Words(pattern[position:match.start()]))
        position = match.end()
        token = match.group(0)
        if token == "<":
            stack.append([])
        elif token == ">":
            if len(stack) == 1:
                raise ValueError(f"unbalanced '>' in pattern {pattern!r}")
            inner = stack.pop()
            stack[-1].append(Optional(tuple(inner)))
        elif match.group(1) is not None:
            label = match.group(2)
            label = INTENT_PREFIX + label if label in INTENTS else label
            stack[-1].append(Labelled(tuple(match.group(1).split("|")), label))
        elif match.group(4) is not None:
            stack[-1].append(Slot(match.group(4), match.group(5) or "", bare=match.group(3) == "!"))
        else:
            stack[-1].append(Choice(tuple(match.group(6).split("|"))))
    if len(stack) != 1:
        raise ValueError(f"unbalanced '<' in pattern {pattern!r}")
    if position < len(pattern):
        stack[0].append(Words(pattern[position:]))
    return tuple(stack[0])


def slots_of(nodes: tuple[Node, ...]) -> list[Slot]:
    """Every slot of the pattern, optional ones included."""
    found: list[Slot] = []
    for node in nodes:
        if isinstance(node, Slot):
            found.append(node)
        elif isinstance(node, Optional):
            found += slots_of(node.nodes)
    return found


def choose(nodes: tuple[Node, ...], rng: random.Random, keep_optional: float = 0.5) -> list[Node]:
    """The nodes with every choice made: words, labelled words (one alternative) and slots."""
    chosen: list[Node] = []
    for node in nodes:
        if isinstance(node, Choice):
            chosen.append(Words(rng.choice(node.options)))
        elif isinstance(node, Labelled):
            chosen.append(Labelled((rng.choice(node.choices),), node.label))
        elif isinstance(node, Optional):
            if rng.random() < keep_optional:
                chosen += choose(node.nodes, rng, keep_optional)
        else:
            chosen.append(node)
    return chosen


def render(
    chosen: list[Node], values: dict[str, Said], rng: random.Random, *, typo_rate: float = 0.0
) -> tuple[str, list[dict[str, object]]]:
    """The request text and its spans (sorted, exact, no surrounding spaces)."""
    text = ""
    spans: list[dict[str, object]] = []

    def add(piece: str, label: str | None = None) -> None:
        nonlocal text
        if text.endswith(" ") or not text:
            piece = piece.lstrip(" ")
        if label is None:
            text += piece
            return
        stripped = piece.strip()
        start = len(text) + (len(piece) - len(piece.lstrip()))
        text += piece
        if stripped:
            spans.append({"start": start, "end": start + len(stripped), "label": label})

    for node in chosen:
        if isinstance(node, Words):
            add(misspell(node.text, rng, typo_rate) if typo_rate else node.text)
        elif isinstance(node, Labelled):
            words = node.choices[0]
            add(misspell(words, rng, typo_rate / 2) if typo_rate else words, node.label)
        elif isinstance(node, Slot):
            said = values[node.name]
            if said.lead and not node.bare:
                add(said.lead)
            add(said.text, node.label)
    return text.rstrip(), spans
