"""Per-sequence KV cache: preallocated key/value tensors grown in chunks.

A decoder's state. Keys and values live in two tensors of shape
``(layers, kv_heads, capacity, head_dim)``; a forward pass writes the new
positions of every layer in place and only then commits them with
:meth:`KVCache.advance`, so a failed forward leaves the cache unchanged.
Capacity grows in whole chunks of :data:`GROW_TOKENS` (one copy per chunk),
never by concatenating per token, and stays exactly what the context needs
rounded up to a chunk, which keeps ``state_bytes`` honest for memory budgets.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from agentd.errors import InvalidArgument

#: Capacity is a multiple of this many tokens; growing copies the cache once per chunk.
GROW_TOKENS = 256

_MAGIC = b"AGKV"
_VERSION = 1
# magic, version, layers, kv_heads, head_dim, length
_HEADER = struct.Struct("<4sIIIIQ")


class KVCache:
    """Keys and values of one sequence for every layer, plus its committed length."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int = 0):
        self.layers = layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        #: Tokens committed so far (positions ``0 .. length-1`` are valid).
        self.length = 0
        capacity = _round_up(capacity)
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        keys = torch.empty(self.layers, self.kv_heads, capacity, self.head_dim)  # (L, KVH, cap, D)
        values = torch.empty(self.layers, self.kv_heads, capacity, self.head_dim)  # (L, KVH, cap, D)
        if self.length:
            keys[:, :, : self.length] = self.keys[:, :, : self.length]
            values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = keys, values
        # Per-layer views made once per allocation, not per token: at batch-1 decode
        # every extra view op, times layers, is latency.
        self._layer_keys = keys.unbind(0)  # L x (KVH, cap, D)
        self._layer_values = values.unbind(0)

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes allocated (capacity, not just the committed length)."""
        return self.keys.nbytes + self.values.nbytes

    def reserve(self, total: int) -> None:
        """Make room for ``total`` tokens, growing to the next whole chunk if needed."""
        if total <= self.capacity:
            return
        self._allocate(_round_up(total))

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``keys``/``values`` ``(T, kv_heads, head_dim)`` at positions ``length ..``.

        The caller has reserved room; the positions count only after :meth:`advance`.
        """
        end = self.length + keys.shape[0]
        self._layer_keys[layer][:, self.length : end] = keys.transpose(0, 1)  # (KVH, T, D)
        self._layer_values[layer][:, self.length : end] = values.transpose(0, 1)

    def append_one(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one token's ``key``/``value`` ``(kv_heads, head_dim)`` at position ``length``.

        Returns the layer's keys and values up to and including it, each
        ``(kv_heads, length + 1, head_dim)`` (views). The decode step's
        :meth:`write` + :meth:`view` in four op calls instead of ten. The caller
        has reserved room; the position counts only after :meth:`advance`.
        """
        keys, values = self._layer_keys[layer], self._layer_values[layer]
        keys[:, self.length] = key
        values[:, self.length] = value
        end = self.length + 1
        return keys[:, :end], values[:, :end]

    def view(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions ``0 .. end-1``, each ``(1, kv_heads, end, head_dim)``, no copy."""
        return self._layer_keys[layer][None, :, :end], self._layer_values[layer][None, :, :end]

    def advance(self, tokens: int) -> None:
        """Commit ``tokens`` positions written by the last forward pass."""
        self.length += tokens

    # -- sessions --------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Header plus the committed keys and values as raw float32 (exact round trip)."""
        header = _HEADER.pack(_MAGIC, _VERSION, self.layers, self.kv_heads, self.head_dim, self.length)
        keys = self.keys[:, :, : self.length].contiguous().numpy()
        values = self.values[:, :, : self.length].contiguous().numpy()
        return header + keys.tobytes() + values.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, layers: int, kv_heads: int, head_dim: int) -> "KVCache":
        """Rebuild a cache saved by :meth:`to_bytes` for a model of this shape."""
        if len(data) < _HEADER.size:
            raise InvalidArgument("state", "too short to be a saved KV cache")
        magic, version, saved_layers, saved_heads, saved_dim, length = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("state", "not a KV cache saved by this backend")
        if (saved_layers, saved_heads, saved_dim) != (layers, kv_heads, head_dim):
            raise InvalidArgument(
                "state",
                f"saved for layers={saved_layers} kv_heads={saved_heads} head_dim={saved_dim}, "
                f"model has {layers}/{kv_heads}/{head_dim}",
            )
        count = layers * kv_heads * length * head_dim
        if len(data) != _HEADER.size + 2 * 4 * count:
            raise InvalidArgument("state", f"size does not match {length} cached tokens")
        payload = np.frombuffer(data, dtype=np.float32, offset=_HEADER.size)
        cache = cls(layers, kv_heads, head_dim, capacity=length)
        shape = (layers, kv_heads, length, head_dim)
        # numpy assignment copies straight from the read-only buffer into the cache.
        cache.keys.numpy()[:, :, :length] = payload[:count].reshape(shape)
        cache.values.numpy()[:, :, :length] = payload[count:].reshape(shape)
        cache.length = length
        return cache


def _round_up(tokens: int) -> int:
    return -(-tokens // GROW_TOKENS) * GROW_TOKENS
