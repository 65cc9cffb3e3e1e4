"""From per-token label scores to labelled spans of the request.

The classifier scores every token on every ``B-``/``I-``/``O`` label; the best
*well-formed* sequence (an ``I-X`` only after ``B-X`` or ``I-X``) is found by
Viterbi over log-probabilities, so a span never starts in the middle. Spans are
then character ranges of the request, widened to whole words (a word split into
word pieces is never cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .labels import split_token_label


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
    """``allowed[i, j]``: may label ``j`` follow label ``i``? (BIO well-formedness)."""
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
    """Labelled spans of ``request`` from its classified tokens."""
    if not tokens:
        return []
    logits = np.stack([token.logits for token in tokens]).astype(np.float64)
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    path = viterbi(log_probs, labels)
    spans: list[Span] = []
    current: list[int] = []

    def close() -> None:
        if current:
            label = split_token_label(labels[path[current[0]]])[1]
            probability = float(np.mean([np.exp(log_probs[i, path[i]]) for i in current]))
            start, end = _whole_words(request, tokens[current[0]].start, tokens[current[-1]].end)
            spans.append(Span(start, end, label, probability))
            current.clear()

    for index, label_id in enumerate(path):
        prefix, _ = split_token_label(labels[label_id])
        if prefix == "B" or prefix == "O":
            close()
        if prefix != "O":
            current.append(index)
    close()
    return _merge_overlaps(spans)


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen ``[start, end)`` so it neither starts nor ends inside a word."""
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
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
