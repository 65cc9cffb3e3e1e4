"""From per-token label scores to labelled spans of the request: clauses and argument roles.

The classifier scores every token on every label; the best *well-formed*
sequence (an ``I-role`` only after ``B-role`` or ``I-role``) is found by Viterbi
over log-probabilities, so a role span never starts in the middle. Role spans
are character ranges, widened to whole words (a word split into word pieces is
never cut).

Clauses are the runs of tokens between ``O`` tokens. A clause's intent is the
one its tokens give the most probability in total — every word votes, so one
odd word does not change what the clause asks for. A run with no intent-labelled
token (a role on its own after a comma) opens no clause; two neighbouring
clauses with the same intent are one clause unless both give the same role
(two flights are two clauses, one clause split by a stray ``O`` is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .labels import is_intent, split_token_label


@dataclass(frozen=True)
class Token:
    """One classified token: its characters in the request and its label logits."""

    start: int
    end: int
    logits: np.ndarray


@dataclass(frozen=True)
class Span:
    """A labelled character range of the request."""

    start: int
    end: int
    label: str
    #: Mean probability of the span's token labels.
    score: float = 1.0

    def text(self, request: str) -> str:
        return request[self.start : self.end]


def allowed_transitions(labels: Sequence[str]) -> np.ndarray:
    """``allowed[i, j]``: may label ``j`` follow label ``i``? (BIO well-formedness of roles)."""
    parsed = [split_token_label(label) for label in labels]
    allowed = np.ones((len(labels), len(labels)), dtype=bool)
    for j, (prefix, span_label) in enumerate(parsed):
        if prefix == "I":
            allowed[:, j] = [p in ("B", "I") and s == span_label for p, s in parsed]
    return allowed


def viterbi(log_probs: np.ndarray, labels: Sequence[str]) -> list[int]:
    """The most probable well-formed label sequence for ``log_probs`` (T, L)."""
    if len(log_probs) == 0:
        return []
    allowed = allowed_transitions(labels)
    penalty = np.where(allowed, 0.0, -np.inf)  # (L, L)
    starts = np.array([split_token_label(label)[0] != "I" for label in labels])
    score = np.where(starts, log_probs[0], -np.inf)
    back = np.zeros(log_probs.shape, dtype=np.int64)
    for t in range(1, len(log_probs)):
        candidates = score[:, None] + penalty  # (L_prev, L)
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probs[t]
    path = [int(score.argmax())]
    for t in range(len(log_probs) - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def decode_spans(request: str, tokens: Sequence[Token], labels: Sequence[str]) -> list[Span]:
    """Clause spans (``INTENT:x``, covering their role spans) and role spans of ``request``, by start."""
    if not tokens:
        return []
    logits = np.stack([token.logits for token in tokens]).astype(np.float64)
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    path = viterbi(log_probs, labels)
    parsed = [split_token_label(labels[i]) for i in path]
    roles = _role_spans(request, tokens, parsed, log_probs, path)
    clauses = _clauses(request, tokens, parsed, np.exp(log_probs), labels, roles)
    return sorted(clauses + roles, key=lambda s: (s.start, not is_intent(s.label)))


def _role_spans(request: str, tokens: Sequence[Token], parsed: list[tuple[str, str]], log_probs: np.ndarray,
                path: list[int]) -> list[Span]:
    spans: list[Span] = []
    current: list[int] = []

    def close() -> None:
        if current:
            probability = float(np.mean([np.exp(log_probs[i, path[i]]) for i in current]))
            start, end = _whole_words(request, tokens[current[0]].start, tokens[current[-1]].end)
            spans.append(Span(start, end, parsed[current[0]][1], probability))
            current.clear()

    for index, (prefix, _) in enumerate(parsed):
        if prefix != "I":
            close()
        if prefix in ("B", "I"):
            current.append(index)
    close()
    return _join_neighbours(request, _merge_overlaps(spans))


def _clauses(request: str, tokens: Sequence[Token], parsed: list[tuple[str, str]], probs: np.ndarray,
             labels: Sequence[str], roles: list[Span]) -> list[Span]:
    intent_columns = [i for i, label in enumerate(labels) if is_intent(label)]
    runs: list[list[int]] = [[]]
    for index, (prefix, _) in enumerate(parsed):
        if prefix == "O":
            runs.append([])
        else:
            runs[-1].append(index)
    clauses: list[tuple[Span, set[str]]] = []
    for run in (r for r in runs if r):
        if not any(parsed[i][0] == "C" for i in run):
            continue  # roles only: they join a neighbouring clause
        mass = probs[np.ix_(run, intent_columns)].sum(axis=0)
        best = int(mass.argmax())
        start, end = _whole_words(request, tokens[run[0]].start, tokens[run[-1]].end)
        span = Span(start, end, labels[intent_columns[best]], float(mass[best] / len(run)))
        given = {r.label for r in roles if start <= r.start < end}
        if clauses and clauses[-1][0].label == span.label and not (clauses[-1][1] & given):
            previous, previous_roles = clauses[-1]
            clauses[-1] = (Span(previous.start, end, span.label, max(previous.score, span.score)), previous_roles | given)
            continue
        clauses.append((span, given))
    return [span for span, _ in clauses]


def _in_word(text: str, i: int) -> bool:
    """Is position ``i`` between two characters of one word? (Hyphens join: "Chi-town", "gluten-free";
    apostrophes do not, so "Linda's" gives "Linda".)"""
    if i <= 0 or i >= len(text):
        return False
    left, right = text[i - 1], text[i]
    if left.isalnum() and right.isalnum():
        return True
    if right == "-" and left.isalnum():
        return i + 1 < len(text) and text[i + 1].isalnum()
    if left == "-" and right.isalnum():
        return i >= 2 and text[i - 2].isalnum()
    return False


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen ``[start, end)`` so it neither starts nor ends inside a word."""
    while _in_word(text, start):
        start -= 1
    while _in_word(text, end):
        end += 1
    return start, end


def _merge_overlaps(spans: list[Span]) -> list[Span]:
    """Widening can make neighbours overlap (two labels inside one word): keep the likelier."""
    kept: list[Span] = []
    for span in spans:
        if kept and span.start < kept[-1].end:
            if span.score > kept[-1].score:
                kept[-1] = span
            continue
        kept.append(span)
    return kept


def _join_neighbours(text: str, spans: list[Span]) -> list[Span]:
    """Two spans of one role with only spaces or a hyphen between them are one ("Middle" "Eastern")."""
    joined: list[Span] = []
    for span in spans:
        if joined and joined[-1].label == span.label and text[joined[-1].end : span.start].strip(" -") == "":
            previous = joined[-1]
            joined[-1] = Span(previous.start, span.end, span.label, min(previous.score, span.score))
            continue
        joined.append(span)
    return joined
