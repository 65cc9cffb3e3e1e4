"""The bookkeeping every KV slot pool shares: arenas by capacity, slots freed when their state dies,
and the swaps that make a decode batch's rows adjacent.

Both KV slot pools (the torch transformer's and the ONNX decoder's) keep each
sequence in a slot of an arena of one capacity and attend a decode batch in
one call over a contiguous block of slots. What differs is the memory (torch
tensors, numpy arrays) and how it moves; that stays in each pool's arena. This
module holds what does not depend on it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any


class SlotPool:
    """Arenas by capacity, and the reclaiming of a dead state's slot.

    States are dropped by the engine, never freed explicitly, so the pool holds
    them through weak references (:meth:`watch`); a death marks the pool, and
    :meth:`collect` trims its arenas at the next chance.
    """

    def __init__(self) -> None:
        #: Held by the backend around every call that touches states.
        self.lock = threading.Lock()
        #: Capacity -> the pool's arena of that capacity (an object with ``trim() -> slots left``).
        self._arenas: dict[int, Any] = {}
        self._released = False

    def collect(self) -> None:
        """Free empty arenas and shrink sparse ones, if any state died or moved since last time (lock held)."""
        if not self._released:
            return
        self._released = False
        for capacity, arena in list(self._arenas.items()):
            if not arena.trim():
                del self._arenas[capacity]

    def watch(self, state: Any) -> weakref.ref[Any]:
        """A reference to ``state`` that reclaims its slot when the state is garbage-collected."""
        return weakref.ref(state, self._on_release)

    def _on_release(self, _ref: object) -> None:
        """A state died: reclaim its slot now if nobody holds the lock, else at the next call."""
        self._released = True
        # Never blocks: the engine thread may be mid-step (it collects at the end of its call),
        # and a state dropped inside a locked call must not wait for itself.
        if self.lock.acquire(blocking=False):
            try:
                self.collect()
            finally:
                self.lock.release()


def adjacent_swaps(members: list[int], slots: int) -> list[tuple[int, int]]:
    """Swaps ``(outside, free)`` that put the distinct slots ``members`` on adjacent slots of an
    arena of ``slots``; empty when they already are. The window of slots that already holds most
    of them stays; ``free`` is a slot of it that holds no member (it may hold another sequence,
    which the swap moves out)."""
    n = len(members)
    taken = set(members)
    if max(taken) - min(taken) + 1 == n:
        return []
    start = max(range(slots - n + 1), key=lambda s: sum(s + i in taken for i in range(n)))
    window = range(start, start + n)
    outside = [slot for slot in members if slot not in window]
    free = [slot for slot in window if slot not in taken]
    return list(zip(outside, free))
