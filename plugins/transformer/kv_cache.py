"""KV cache as a slot pool: every sequence's keys and values live in a slot of a shared arena.

A decoder's state is a :class:`KVCache`: a committed length and a slot. The
backend owns one :class:`KVPool`; the pool holds one arena per slot capacity
(a multiple of :data:`GROW_TOKENS`), whose keys and values are two tensors:
keys ``(layers, slots, kv_heads, head_dim, capacity)``, stored transposed so a
query-key product runs over contiguous positions (measured ~25% faster at
decode than ``(capacity, head_dim)`` rows), values ``(layers, slots, kv_heads,
capacity, head_dim)``. Because the sequences
of one arena share a tensor, a decode step over several of them attends with
ONE masked call per layer (each row masked to its own length) over a strided
view of that tensor, with no gather of per-sequence caches into a batch (the
design llama.cpp's unified cache and gpt-fast's static cache follow; measured
against a gather in ``benchmarks/bench_batched_attention.py``).

* A state has exactly the capacity a per-sequence cache would have: its
  length rounded up to a chunk. Growing past it moves the state to the arena
  of the next capacity (one copy per chunk, as a per-sequence cache grows);
  ``nbytes`` is the slot's size, so ``state_bytes`` stays what it was.
* An arena grows by doubling its slots and shrinks (moving the live slots to
  the front) when a quarter or less of them are in use; an empty arena is
  freed. A slot is free when its state has been garbage-collected: the engine
  drops states, it never frees them, so the pool watches them through weak
  references and reclaims the memory as soon as it can take its lock.
* A forward pass writes new positions in place and commits them only with
  :meth:`KVCache.advance`, so a failed pass leaves every state unchanged
  (moves between slots change where a state lives, never what it holds).
* :meth:`KVPool.decode_plan` orders a decode batch by (arena, slot) and moves
  slots so each arena's rows are adjacent: the model then addresses a
  group as a slice of the arena.

Every method that moves or allocates runs under :attr:`KVPool.lock`, which the
backend holds for each call (the engine decodes on its own thread while a
session may be saved or restored on another).
"""

from __future__ import annotations

import struct
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from agentd.errors import InvalidArgument
from agentd.slot_pool import SlotPool, adjacent_swaps

#: Slot capacities are multiples of this many tokens; growing copies a state once per chunk.
GROW_TOKENS = 256

_FLOAT32_BYTES = 4
_MAGIC = b"AGKV"
_VERSION = 1
# magic, version, layers, kv_heads, head_dim, length
_HEADER = struct.Struct("<4sIIIIQ")


class KVCache:
    """One sequence: its committed length and the slot holding its keys and values."""

    def __init__(self, pool: "KVPool"):
        self.pool = pool
        #: Tokens committed so far (positions ``0 .. length-1`` are valid).
        self.length = 0
        #: The arena and slot index holding this sequence (None/-1 until room is reserved).
        self.arena: _Arena | None = None
        self.slot = -1
        self._layer_keys: tuple[torch.Tensor, ...] = ()  # L x (KVH, D, cap) views of the slot
        self._layer_values: tuple[torch.Tensor, ...] = ()

    def _bind(self, arena: "_Arena | None", slot: int) -> None:
        """Point at ``slot`` of ``arena`` (after a move or an arena reallocation)."""
        self.arena, self.slot = arena, slot
        if arena is None:
            self._layer_keys = self._layer_values = ()
            return
        # Per-layer views made once per move, not per token: at batch-1 decode
        # every extra view op, times layers, is latency.
        self._layer_keys = arena.keys[:, slot].unbind(0)
        self._layer_values = arena.values[:, slot].unbind(0)

    @property
    def capacity(self) -> int:
        return self.arena.capacity if self.arena is not None else 0

    @property
    def nbytes(self) -> int:
        """Bytes of the slot (capacity, not just the committed length)."""
        return self.capacity * self.pool.bytes_per_token

    @property
    def keys(self) -> torch.Tensor:
        """``(layers, kv_heads, capacity, head_dim)`` view of the slot's keys (a transposed view)."""
        if self.arena is None:
            return torch.zeros(self.pool.layers, self.pool.kv_heads, 0, self.pool.head_dim)
        return self.arena.keys[:, self.slot].transpose(-1, -2)

    @property
    def values(self) -> torch.Tensor:
        """``(layers, kv_heads, capacity, head_dim)`` view of the slot's values."""
        if self.arena is None:
            return torch.zeros(self.pool.layers, self.pool.kv_heads, 0, self.pool.head_dim)
        return self.arena.values[:, self.slot]

    def reserve(self, total: int) -> None:
        """Make room for ``total`` tokens, moving to a slot of the next whole chunk if needed.

        Call with the pool's lock held.
        """
        if total > self.capacity:
            self.pool._place(self, _round_up(total))

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``keys``/``values`` ``(T, kv_heads, head_dim)`` at positions ``length ..``.

        The caller has reserved room; the positions count only after :meth:`advance`.
        """
        end = self.length + keys.shape[0]
        self._layer_keys[layer][:, :, self.length : end] = keys.permute(1, 2, 0)  # (KVH, D, T)
        self._layer_values[layer][:, self.length : end] = values.transpose(0, 1)  # (KVH, T, D)

    def append_one(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one token's ``key``/``value`` ``(kv_heads, head_dim)`` at position ``length``.

        Returns the layer's keys, transposed, ``(kv_heads, head_dim, length + 1)``
        and values ``(kv_heads, length + 1, head_dim)`` up to and including it
        (views). The batch-1 decode step's :meth:`write` + :meth:`view` in four op
        calls instead of ten. The caller has reserved room; the position counts
        only after :meth:`advance`.
        """
        keys, values = self._layer_keys[layer], self._layer_values[layer]
        keys[:, :, self.length] = key
        values[:, self.length] = value
        end = self.length + 1
        return keys[:, :, :end], values[:, :end]

    def view(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions ``0 .. end-1``, each ``(1, kv_heads, end, head_dim)``.

        Values are a view; keys a contiguous copy, since SDPA's flash kernel
        needs rows of ``head_dim`` (with the transposed view it falls back to the
        math kernel, measured 1.7x slower for a 128-token chunk even counting the copy).
        """
        keys = self._layer_keys[layer][:, :, :end].transpose(1, 2).contiguous()  # (KVH, end, D)
        return keys[None], self._layer_values[layer][None, :, :end]

    def advance(self, tokens: int) -> None:
        """Commit ``tokens`` positions written by the last forward pass."""
        self.length += tokens

    # -- sessions --------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Header plus the committed keys and values as raw float32 (exact round trip).

        Call with the pool's lock held (a move elsewhere could overwrite the slot).
        """
        p = self.pool
        header = _HEADER.pack(_MAGIC, _VERSION, p.layers, p.kv_heads, p.head_dim, self.length)
        keys = self.keys[:, :, : self.length].contiguous().numpy()
        values = self.values[:, :, : self.length].contiguous().numpy()
        return header + keys.tobytes() + values.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, pool: "KVPool") -> "KVCache":
        """Rebuild a cache saved by :meth:`to_bytes` into a slot of ``pool`` (lock held)."""
        if len(data) < _HEADER.size:
            raise InvalidArgument("state", "too short to be a saved KV cache")
        magic, version, saved_layers, saved_heads, saved_dim, length = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("state", "not a KV cache saved by this backend")
        layers, kv_heads, head_dim = pool.layers, pool.kv_heads, pool.head_dim
        if (saved_layers, saved_heads, saved_dim) != (layers, kv_heads, head_dim):
            raise InvalidArgument(
                "state",
                f"saved for layers={saved_layers} kv_heads={saved_heads} head_dim={saved_dim}, "
                f"model has {layers}/{kv_heads}/{head_dim}",
            )
        count = layers * kv_heads * length * head_dim
        if len(data) != _HEADER.size + 2 * _FLOAT32_BYTES * count:
            raise InvalidArgument("state", f"size does not match {length} cached tokens")
        cache = cls(pool)
        if length:
            payload = np.frombuffer(data, dtype=np.float32, offset=_HEADER.size)
            shape = (layers, kv_heads, length, head_dim)
            cache.reserve(length)
            # numpy assignment copies straight from the read-only buffer into the slot.
            cache.keys.numpy()[:, :, :length] = payload[:count].reshape(shape)
            cache.values.numpy()[:, :, :length] = payload[count:].reshape(shape)
            cache.length = length
        return cache


@dataclass
class DecodeGroup:
    """The rows of a decode batch that live in one arena, in slot order, on adjacent slots."""

    arena: "_Arena"
    #: The group's rows of the (ordered) batch.
    rows: slice
    #: Their slots in the arena: ``slots.start + i`` holds row ``rows.start + i``.
    slots: slice
    #: ``slots`` as an index tensor ``(n,)``.
    slot_ids: torch.Tensor
    #: Each row's committed length, where its new token goes ``(n,)``.
    positions: torch.Tensor
    #: Keys attended: ``max(positions) + 1``.
    width: int
    #: True where a row must not look: key ``t > positions[row]``; ``(n, 1, 1, width)``.
    hidden: torch.Tensor


@dataclass
class DecodePlan:
    """How one decode step addresses its batch: row order and one group per arena."""

    #: Row ``i`` of the ordered batch is row ``order[i]`` of the caller's.
    order: list[int]
    groups: list[DecodeGroup]


class _Arena:
    """The slots of one capacity: keys ``(layers, slots, kv_heads, head_dim, capacity)`` (transposed)
    and values ``(layers, slots, kv_heads, capacity, head_dim)``."""

    def __init__(self, pool: "KVPool", capacity: int):
        self.pool = pool
        self.capacity = capacity
        #: The state in each slot, weakly: a dead or missing reference is a free slot.
        self.owners: list[weakref.ref[KVCache] | None] = []
        self._resize(1)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def live(self) -> list[tuple[int, KVCache]]:
        """``(slot, state)`` of every slot in use, in slot order."""
        found = []
        for slot, ref in enumerate(self.owners):
            cache = ref() if ref is not None else None
            if cache is not None:
                found.append((slot, cache))
        return found

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys ``(slots, kv_heads, head_dim, capacity)`` and values ``(slots, kv_heads, capacity,
        head_dim)`` of every slot for one layer."""
        return self._layer_keys[index], self._layer_values[index]

    def take(self, cache: KVCache) -> int:
        """A free slot for ``cache`` (doubling the arena when none is free)."""
        slot = next((s for s, ref in enumerate(self.owners) if ref is None or ref() is None), None)
        if slot is None:
            slot = len(self.owners)
            self._resize(2 * slot)
        else:
            # Masked scores are set to -inf, so stale keys never count, but stale values are
            # multiplied by a zero probability and must be finite: a new occupant starts from zeros.
            self.values[:, slot].zero_()
        self.owners[slot] = self.pool.watch(cache)
        return slot

    def release(self, slot: int) -> None:
        self.owners[slot] = None

    def make_adjacent(self, members: list[KVCache]) -> None:
        """Move slots so ``members`` occupy adjacent slots (a window holding most of them stays)."""
        for a, b in adjacent_swaps([m.slot for m in members], len(self.owners)):
            self._swap(a, b)

    def _swap(self, a: int, b: int) -> None:
        """Exchange the contents and owners of slots ``a`` and ``b`` (either may be free)."""
        for tensor in (self.keys, self.values):
            held = tensor[:, a].clone()
            tensor[:, a] = tensor[:, b]
            tensor[:, b] = held
        self.owners[a], self.owners[b] = self.owners[b], self.owners[a]
        for slot in (a, b):
            ref = self.owners[slot]
            cache = ref() if ref is not None else None
            if cache is not None:
                cache._bind(self, slot)

    def _resize(self, slots: int) -> None:
        """Reallocate to ``slots`` slots, the live ones moved to the front in slot order."""
        p = self.pool
        live = self.live() if self.owners else []
        keys = torch.zeros(p.layers, slots, p.kv_heads, p.head_dim, self.capacity)  # (L, S, KVH, D, cap)
        values = torch.zeros(p.layers, slots, p.kv_heads, self.capacity, p.head_dim)  # (L, S, KVH, cap, D)
        for new, (old, cache) in enumerate(live):
            keys[:, new, ..., : cache.length] = self.keys[:, old, ..., : cache.length]
            values[:, new, :, : cache.length] = self.values[:, old, :, : cache.length]
        self.keys, self.values = keys, values
        self._layer_keys, self._layer_values = keys.unbind(0), values.unbind(0)
        self.owners = [p.watch(cache) for _, cache in live] + [None] * (slots - len(live))
        for new, (_, cache) in enumerate(live):
            cache._bind(self, new)

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
    """Every state of one model: arenas of slots by capacity, and the lock guarding them."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int):
        self.layers = layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        #: One key and one value vector per layer and KV head, float32.
        self.bytes_per_token = 2 * layers * kv_heads * head_dim * _FLOAT32_BYTES
        super().__init__()
        self._arenas: dict[int, _Arena] = {}

    @property
    def nbytes(self) -> int:
        """Bytes every arena holds (free slots included)."""
        return sum(arena.nbytes for arena in self._arenas.values())

    def new_state(self) -> KVCache:
        """An empty state; it gets a slot when room is first reserved."""
        return KVCache(self)

    @torch.inference_mode()
    def _place(self, cache: KVCache, capacity: int) -> None:
        """Give ``cache`` a slot of ``capacity``, moving what it holds (lock held)."""
        arena = self._arenas.get(capacity)
        if arena is None:
            arena = self._arenas[capacity] = _Arena(self, capacity)
        old, old_slot = cache.arena, cache.slot
        slot = arena.take(cache)
        if old is not None:
            length = cache.length
            arena.keys[:, slot, ..., :length] = old.keys[:, old_slot, ..., :length]
            arena.values[:, slot, :, :length] = old.values[:, old_slot, :, :length]
            old.release(old_slot)
            self._released = True
        cache._bind(arena, slot)

    @torch.inference_mode()
    def decode_plan(self, caches: list[KVCache]) -> DecodePlan:
        """Order a decode batch by (arena, slot), each arena's rows on adjacent slots (lock held).

        Every cache has room reserved for its new token already.
        """
        by_arena: dict[int, list[KVCache]] = {}
        for cache in caches:
            assert cache.arena is not None, "reserve room before planning a decode"
            by_arena.setdefault(cache.arena.capacity, []).append(cache)
        for members in by_arena.values():
            members[0].arena.make_adjacent(members)  # type: ignore[union-attr]
        order = sorted(range(len(caches)), key=lambda i: (caches[i].capacity, caches[i].slot))
        groups, row = [], 0
        for capacity in sorted(by_arena):
            members = sorted(by_arena[capacity], key=lambda c: c.slot)
            n, first = len(members), members[0].slot
            positions = torch.tensor([c.length for c in members])
            width = int(positions.max()) + 1
            hidden = torch.arange(width) > positions[:, None]  # (n, width)
            groups.append(
                DecodeGroup(
                    arena=self._arenas[capacity],
                    rows=slice(row, row + n),
                    slots=slice(first, first + n),
                    slot_ids=torch.arange(first, first + n),
                    positions=positions,
                    width=width,
                    hidden=hidden[:, None, None],
                )
            )
            row += n
        return DecodePlan(order, groups)

    @torch.inference_mode()
    def collect(self) -> None:
        """:meth:`SlotPool.collect`, trimming tensors without autograd (lock held)."""
        super().collect()


def _round_up(tokens: int) -> int:
    return -(-tokens // GROW_TOKENS) * GROW_TOKENS
