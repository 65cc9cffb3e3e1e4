"""Token sampling: repetition penalty, temperature, top-k, top-p, min-p.

NumPy only, so the same sampler drives torch and onnxruntime backends. The
filters follow Hugging Face transformers' logits processors and are applied in
the order its ``generate`` applies them: repetition penalty, temperature,
top-k, top-p, min-p. Greedy decoding (``temperature == 0``) is the argmax of
the repetition-penalised logits.

A grammar constraint (:mod:`agentd.constraint`) arrives as an ``allowed``
mask: disallowed tokens are dropped before any filter (their logits are
-inf), so greedy decoding takes the best allowed token and every filter
works on the allowed ones only; allowed logits are untouched.

Cost on a large vocabulary stays linear: top-k uses ``np.partition``; top-p
sorts only the smallest head of likely tokens (256, 2048, ...) that holds
``top_p`` of the mass; the final draw touches only the surviving candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:
    from agentd.generation import SamplingParams

# How many of the most likely tokens top-p sorts first (growing 8x while they
# hold too little mass); nucleus sets are nearly always far smaller.
_TOP_P_PARTIAL = 256


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable ``log(softmax(logits))`` along the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


class Sampler:
    """Chooses the next token from a logits vector; one per generation request.

    Owns its ``numpy.random.Generator`` so the same seed gives the same tokens
    whatever else runs in the process. Remembers the ids it has seen (prompt and
    generated, through :meth:`observe`) for the repetition penalty.
    """

    def __init__(self, params: "SamplingParams"):
        self.temperature = float(params.temperature)
        self.top_k = int(params.top_k)
        self.top_p = float(params.top_p)
        self.min_p = float(params.min_p)
        self.repetition_penalty = float(params.repetition_penalty)
        self.rng = np.random.default_rng(params.seed)
        self._seen: set[int] = set()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def observe(self, token_ids: Iterable[int]) -> None:
        """Record ids now in the context (prompt, then each generated token)."""
        self._seen.update(int(t) for t in token_ids)

    def penalised(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` (float, ``(V,)``) with HF's repetition penalty applied to seen ids.

        Positive logits of seen tokens are divided by the penalty, negative ones
        multiplied, so a penalty > 1 always makes them less likely. Returns a
        copy in float64; the input is never modified.
        """
        out = np.array(logits, dtype=np.float64).reshape(-1)
        if self.repetition_penalty != 1.0 and self._seen:
            ids = np.fromiter(self._seen, dtype=np.int64, count=len(self._seen))
            ids = ids[(ids >= 0) & (ids < out.size)]
            seen = out[ids]
            out[ids] = np.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty)
        return out

    def distribution(self, logits: np.ndarray, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The final sampling distribution as ``(token_ids, probs)``; probs sum to 1.

        Only tokens with non-zero probability are returned, sorted by id. For
        greedy decoding it is the argmax alone with probability 1. ``allowed``
        (``(V,)`` bool, at least one True) restricts the candidates first.
        """
        scores = self.penalised(logits)
        if self.greedy:
            return np.array([_argmax(scores, allowed)], dtype=np.int64), np.ones(1)

        # Candidates are kept as (ids, scaled logits); each filter narrows them.
        if allowed is None:
            ids = np.arange(scores.size, dtype=np.int64)
            pool = scores
        else:
            ids = _allowed_ids(allowed, scores.size)
            pool = scores[ids]
        if 0 < self.top_k < pool.size:
            # HF keeps every token tied with the k-th largest logit.
            kth = np.partition(pool, pool.size - self.top_k)[pool.size - self.top_k]
            ids = ids[pool >= kth]
        cand = scores[ids] / self.temperature

        if self.top_p < 1.0:
            ids, cand = self._top_p(ids, cand)
        if self.min_p > 0.0:
            probs = _softmax(cand)
            # Never empty: the most likely token always passes.
            keep = probs >= self.min_p * probs.max()
            ids, cand = ids[keep], cand[keep]
        return ids, _softmax(cand)

    def sample(self, logits: np.ndarray, allowed: np.ndarray | None = None) -> tuple[int, float]:
        """Draw the next token from ``logits`` (``(V,)`` or ``(1, V)``).

        ``allowed`` (``(V,)`` bool with at least one True, e.g. a grammar's
        mask) limits the draw to those tokens. Returns ``(token_id, logprob)``:
        the log-probability under the final sampling distribution, or for
        greedy decoding under the model's own (unpenalised, unmasked) logits.
        """
        flat = np.asarray(logits).reshape(-1)
        if self.greedy:
            scores = self.penalised(flat) if self.repetition_penalty != 1.0 else flat
            token = _argmax(scores, allowed)
            return token, _logprob_of(flat, token)
        ids, probs = self.distribution(flat, allowed)
        cdf = np.cumsum(probs)
        # Inverse-CDF draw; the clip guards against cdf[-1] rounding below u.
        pick = min(int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")), ids.size - 1)
        return int(ids[pick]), float(np.log(probs[pick]))

    def _top_p(self, ids: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nucleus filter: keep the most likely tokens until their mass reaches ``top_p``.

        HF's rule, restated in descending order: token j survives when the mass
        of the tokens strictly more likely than it is < ``top_p``; the most likely
        token always survives.
        """
        probs = _softmax(cand)
        # Partially select a growing head of the most likely tokens until it holds
        # top_p of the mass: every token outside it then has >= top_p above it.
        size = _TOP_P_PARTIAL
        while size < probs.size:
            head = np.argpartition(probs, probs.size - size)[probs.size - size :]
            if probs[head].sum() >= self.top_p:
                break
            size *= 8
        else:
            head = np.arange(probs.size)
        order = head[np.argsort(-probs[head], kind="stable")]
        mass_above = np.cumsum(probs[order]) - probs[order]
        # mass_above[0] == 0 < top_p, so the most likely token is always kept.
        keep = np.sort(order[mass_above < self.top_p])
        return ids[keep], cand[keep]


def _allowed_ids(allowed: np.ndarray, size: int) -> np.ndarray:
    """Ids of the True entries of a ``(V,)`` mask; refuses an empty one."""
    ids = np.flatnonzero(np.asarray(allowed, dtype=bool).reshape(-1)[:size])
    if ids.size == 0:
        raise ValueError("the allowed-token mask allows no token")
    return ids


def _argmax(scores: np.ndarray, allowed: np.ndarray | None) -> int:
    """Index of the largest score, among the allowed tokens when a mask is given
    (the first one on ties, as ``np.argmax``)."""
    if allowed is None:
        return int(np.argmax(scores))
    ids = _allowed_ids(allowed, scores.size)
    return int(ids[np.argmax(scores[ids])])


def _logprob_of(logits: np.ndarray, token: int) -> float:
    """``log_softmax(logits)[token]`` without materialising the whole float64 vector.

    Greedy decoding runs this once per token per stream on a ~50k vocabulary:
    one shifted exp-sum instead of a full log-softmax array.
    """
    shifted = logits.astype(np.float64) - float(logits.max())
    return float(shifted[token]) - float(np.log(np.exp(shifted).sum()))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()
