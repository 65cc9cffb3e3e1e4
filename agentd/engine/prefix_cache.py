"""Prefix cache: the saved state after a token prefix, reused by later prompts that start with it.

A repeated system prompt (or any shared opening) is prefilled once; the engine
saves the state at that boundary with ``backend.save_state`` and a later
request whose prompt starts with the same tokens rebuilds its state with
``backend.load_state`` instead of prefilling them. Entries are bytes, so use
is copy-on-use by construction: no two sequences ever share a state object,
whatever the backend (KV cache, SSM or RWKV state).

Entries are keyed by a 128-bit BLAKE2 digest of the prefix ids and also keep
the ids themselves, so a lookup is exact even in the face of a collision.
The cache holds at most ``budget_bytes`` of saved state and evicts the least
recently used entry first. Thread-safe: the engine thread reads and writes it,
metrics read its counters from anywhere.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class _Entry:
    tokens: bytes
    state: bytes


class PrefixCache:
    """Saved states by token prefix, least recently used evicted beyond ``budget_bytes``."""

    def __init__(self, budget_bytes: int):
        if not isinstance(budget_bytes, int) or budget_bytes < 0:
            raise ValueError("budget_bytes must be an integer >= 0")
        self.budget_bytes = budget_bytes
        self._entries: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: Lookups that found a cached prefix / found none.
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes of saved state held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: np.ndarray, boundaries: Iterable[int]) -> tuple[int, bytes] | None:
        """The longest cached prefix of ``prompt`` among ``boundaries``: ``(length, state bytes)``.

        Only boundaries strictly inside the prompt count: at least one token
        must remain to prefill, since its logits give the first sampled token.
        """
        with self._lock:
            for length in sorted(set(boundaries), reverse=True):
                if not 0 < length < prompt.size:
                    continue
                key, tokens = _key(prompt[:length])
                entry = self._entries.get(key)
                if entry is not None and entry.tokens == tokens:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return length, entry.state
            self.misses += 1
            return None

    def contains(self, prefix: np.ndarray) -> bool:
        """True if the state after exactly ``prefix`` is cached (does not touch recency)."""
        key, tokens = _key(prefix)
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.tokens == tokens

    def store(self, prefix: np.ndarray, state: bytes) -> bool:
        """Keep ``state``, the saved state after ``prefix``; False if it alone exceeds the budget."""
        key, tokens = _key(prefix)
        size = len(state) + len(tokens)
        if size > self.budget_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.state) + len(old.tokens)
            while self._entries and self._bytes + size > self.budget_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted.state) + len(evicted.tokens)
            self._entries[key] = _Entry(tokens, state)
            self._bytes += size
            return True

    def clear(self) -> None:
        """Drop every entry (the model is unloaded)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _key(prefix: np.ndarray) -> tuple[bytes, bytes]:
    tokens = np.ascontiguousarray(prefix, dtype="<i8").tobytes()
    return hashlib.blake2b(tokens, digest_size=16).digest(), tokens
