"""The onnxrt decoder's KV cache as a slot pool: every sequence lives in a slot of a shared arena.

The decoder graph's GroupQueryAttention takes ``past_key_values.<i>.*`` of
shape ``(batch, kv_heads, past, head_dim)`` and, bound to the very same buffer
as ``present.<i>.*`` (onnxruntime-genai's ``past_present_share_buffer``),
writes each row's new keys and values in place at that row's own length (the
``seqlens_k`` it derives from ``attention_mask``) and attends over that row's
positions only. So sequences whose caches are *adjacent rows of one array*
decode together in one run: the backend binds the sub-block of those rows as
past == present with batch ``n``.

* An arena holds the slots of one capacity: keys and values, each one array
  ``(layers, slots, kv_heads, capacity, head_dim)`` float32, so rows
  ``first .. first+n-1`` of a layer are one contiguous ``(n, kv_heads,
  capacity, head_dim)`` block.
* Capacities follow one geometric ladder (256, 512, 768, 1280, ... tokens,
  each at least 1.5x the last, capped at the model's context), so sequences of
  similar length share an arena. Growing past a slot moves the state to the
  next rung (one copy, amortised O(1) per token). ``nbytes`` is the slot's
  size, what a per-sequence cache of that capacity would hold.
* An arena doubles its slots when full and halves (moving live slots to the
  front) when a quarter or less are in use; an empty arena is freed. A slot is
  free once its state is garbage-collected: the engine drops states, it never
  frees them, so the pool watches them through weak references.
* :meth:`KVPool.decode_groups` moves slots (swapping committed positions only)
  so each arena's rows of a decode batch are adjacent.
* Nothing here commits: the backend writes past ``length`` and advances it
  after its runs succeeded; a move changes where a state lives, never what it holds.

Every method that moves or allocates runs under :attr:`KVPool.lock`, which the
backend holds for each call.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentd.slot_pool import SlotPool, adjacent_swaps

#: The smallest slot capacity; every capacity is a multiple of it.
GROW_TOKENS = 256
_FLOAT32_BYTES = 4


class OnnxKVState:
    """One sequence: its committed length and the slot holding its keys and values.

    Positions ``0 .. length-1`` are valid; the rest of the slot is scratch the next run writes.
    """

    def __init__(self, pool: "KVPool"):
        self.pool = pool
        self.length = 0
        self.arena: _Arena | None = None
        self.slot = 0

    def __repr__(self) -> str:
        return f"OnnxKVState(length={self.length}, capacity={self.capacity}, slot={self.slot})"

    @property
    def capacity(self) -> int:
        return 0 if self.arena is None else self.arena.capacity

    @property
    def nbytes(self) -> int:
        """The slot's bytes: the whole capacity (what is allocated for it, not just the committed length)."""
        return self.capacity * self.pool.bytes_per_token

    @property
    def keys(self) -> np.ndarray:
        """``(layers, 1, kv_heads, capacity, head_dim)`` view of the slot's keys."""
        return self.pool.empty() if self.arena is None else self.arena.keys[:, self.slot : self.slot + 1]

    @property
    def values(self) -> np.ndarray:
        """``(layers, 1, kv_heads, capacity, head_dim)`` view of the slot's values."""
        return self.pool.empty() if self.arena is None else self.arena.values[:, self.slot : self.slot + 1]


@dataclass
class DecodeGroup:
    """The rows of a decode batch in one arena, on adjacent slots, in slot order."""

    arena: "_Arena"
    #: First slot; row ``i`` of the group lives in slot ``first + i``.
    first: int
    #: The group's states in slot order.
    states: list[OnnxKVState]
    #: ``rows[i]``: the caller's batch row of ``states[i]``.
    rows: list[int]


class _Arena:
    """The slots of one capacity: keys and values ``(layers, slots, kv_heads, capacity, head_dim)``."""

    def __init__(self, pool: "KVPool", capacity: int):
        self.pool = pool
        self.capacity = capacity
        #: The state in each slot, weakly: a dead or missing reference is a free slot.
        self.owners: list[weakref.ref[OnnxKVState] | None] = []
        #: Whatever the backend caches per block of slots (its IOBindings); cleared when the arrays move.
        self.bindings: dict[tuple[int, int], Any] = {}
        self.keys = self.values = pool.empty()
        self._resize(1)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def block(self, first: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values of slots ``first .. first+rows-1``, each ``(layers, rows, kv_heads, capacity, head_dim)``."""
        return self.keys[:, first : first + rows], self.values[:, first : first + rows]

    def live(self) -> list[tuple[int, OnnxKVState]]:
        """``(slot, state)`` of every slot in use, in slot order."""
        found = []
        for slot, ref in enumerate(self.owners):
            state = ref() if ref is not None else None
            if state is not None:
                found.append((slot, state))
        return found

    def take(self, state: OnnxKVState) -> int:
        """A free slot for ``state`` (doubling the arena when none is free)."""
        slot = next((s for s, ref in enumerate(self.owners) if ref is None or ref() is None), None)
        if slot is None:
            slot = len(self.owners)
            self._resize(2 * slot)
        # No zeroing: GroupQueryAttention reads a row only up to its own length.
        self.owners[slot] = self.pool.watch(state)
        return slot

    def release(self, slot: int) -> None:
        self.owners[slot] = None

    def make_adjacent(self, members: list[OnnxKVState]) -> None:
        """Move slots so ``members`` occupy adjacent slots (the window holding most of them stays)."""
        for a, b in adjacent_swaps([m.slot for m in members], len(self.owners)):
            self._swap(a, b)

    def _swap(self, a: int, b: int) -> None:
        """Exchange the committed contents and the owners of slots ``a`` and ``b`` (either may be free)."""
        first, second = self._owner(a), self._owner(b)
        length_a = first.length if first is not None else 0
        length_b = second.length if second is not None else 0
        for array in (self.keys, self.values):
            held = array[:, a, :, :length_a].copy()
            array[:, a, :, :length_b] = array[:, b, :, :length_b]
            array[:, b, :, :length_a] = held
        self.owners[a], self.owners[b] = self.owners[b], self.owners[a]
        if first is not None:
            first.slot = b
        if second is not None:
            second.slot = a

    def _owner(self, slot: int) -> OnnxKVState | None:
        ref = self.owners[slot]
        return ref() if ref is not None else None

    def _resize(self, slots: int) -> None:
        """Reallocate to ``slots`` slots, the live ones moved to the front in slot order."""
        p = self.pool
        live = self.live()
        shape = (p.layers, slots, p.kv_heads, self.capacity, p.head_dim)
        keys, values = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
        for new, (old, state) in enumerate(live):
            keys[:, new, :, : state.length] = self.keys[:, old, :, : state.length]
            values[:, new, :, : state.length] = self.values[:, old, :, : state.length]
        self.keys, self.values = keys, values
        self.bindings.clear()  # they point into the old arrays
        self.owners = [p.watch(state) for _, state in live] + [None] * (slots - len(live))
        for new, (_, state) in enumerate(live):
            state.slot = new

    def trim(self) -> int:
        """Shrink while a quarter or less of the slots are in use; returns the slots in use."""
        used = len(self.live())
        slots = len(self.owners)
        while slots > 1 and used <= slots // 4:
            slots //= 2
        if slots != len(self.owners) and used:
            self._resize(slots)
        return used


class KVPool(SlotPool):
    """Every KV state of one model: arenas of slots by capacity, and the lock guarding them."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, context_length: int):
        self.layers = layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.context_length = context_length
        #: One key and one value vector per layer and KV head, float32.
        self.bytes_per_token = 2 * layers * kv_heads * head_dim * _FLOAT32_BYTES
        super().__init__()
        self._arenas: dict[int, _Arena] = {}

    @property
    def nbytes(self) -> int:
        """Bytes every arena holds (free slots included)."""
        return sum(arena.nbytes for arena in self._arenas.values())

    @property
    def slots(self) -> int:
        """Slots allocated over every arena (free ones included)."""
        return sum(len(arena.owners) for arena in self._arenas.values())

    def empty(self) -> np.ndarray:
        """A zero-capacity ``(layers, 1, kv_heads, 0, head_dim)`` array (what a state without a slot shows)."""
        return np.zeros((self.layers, 1, self.kv_heads, 0, self.head_dim), dtype=np.float32)

    def new_state(self) -> OnnxKVState:
        """An empty state; it gets a slot when room is first reserved."""
        return OnnxKVState(self)

    def capacity_for(self, tokens: int) -> int:
        """The smallest rung of the capacity ladder holding ``tokens`` (capped at the context)."""
        capacity = GROW_TOKENS
        while capacity < tokens:
            capacity = _round_up(capacity + capacity // 2)
        return min(capacity, self.context_length) if tokens <= self.context_length else capacity

    def reserve(self, state: OnnxKVState, total: int) -> None:
        """Make room in ``state`` for ``total`` positions, moving it up the ladder if needed (lock held)."""
        if total > state.capacity:
            self._place(state, self.capacity_for(total))

    def decode_groups(self, states: list[OnnxKVState]) -> list[DecodeGroup]:
        """A decode batch split by arena, each group's states moved onto adjacent slots (lock held).

        Every state has room reserved for its new token already.
        """
        by_arena: dict[int, list[int]] = {}
        for row, state in enumerate(states):
            assert state.arena is not None, "reserve room before grouping a decode"
            by_arena.setdefault(state.capacity, []).append(row)
        groups = []
        for capacity in sorted(by_arena):
            arena = self._arenas[capacity]
            arena.make_adjacent([states[row] for row in by_arena[capacity]])
            rows = sorted(by_arena[capacity], key=lambda row: states[row].slot)
            members = [states[row] for row in rows]
            groups.append(DecodeGroup(arena, members[0].slot, members, rows))
        return groups

    def _place(self, state: OnnxKVState, capacity: int) -> None:
        """Give ``state`` a slot of ``capacity``, moving what it holds."""
        arena = self._arenas.get(capacity)
        if arena is None:
            arena = self._arenas[capacity] = _Arena(self, capacity)
        old, old_slot = state.arena, state.slot
        slot = arena.take(state)
        if old is not None:
            length = state.length
            arena.keys[:, slot, :, :length] = old.keys[:, old_slot, :, :length]
            arena.values[:, slot, :, :length] = old.values[:, old_slot, :, :length]
            old.release(old_slot)
            self._released = True
        state.arena, state.slot = arena, slot


def _round_up(tokens: int) -> int:
    return -(-tokens // GROW_TOKENS) * GROW_TOKENS
