"""Which slot moves make a decode batch's rows adjacent in a slot arena.

Both KV slot pools (the torch transformer's and the ONNX decoder's) attend a
decode batch in one call over a contiguous block of slots. When the batch's
slots are scattered, the cheapest fix keeps the window of slots that already
holds most of them and swaps the rest in: this module only plans those swaps;
each pool moves its own memory.
"""

from __future__ import annotations


def adjacent_swaps(members: list[int], slots: int) -> list[tuple[int, int]]:
    """Swaps ``(outside, free)`` that put the distinct slots ``members`` on adjacent slots of an
    arena of ``slots``; empty when they already are. ``free`` is a slot of the kept window that
    holds no member (it may hold another sequence, which the swap moves out)."""
    n = len(members)
    taken = set(members)
    if max(taken) - min(taken) + 1 == n:
        return []
    start = max(range(slots - n + 1), key=lambda s: sum(s + i in taken for i in range(n)))
    window = range(start, start + n)
    outside = [slot for slot in members if slot not in window]
    free = [slot for slot in window if slot not in taken]
    return list(zip(outside, free))
