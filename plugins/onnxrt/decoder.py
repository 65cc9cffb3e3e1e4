"""The decoder half of the backend contract over an exported decoder graph.

The graph takes the KV cache as inputs (``past_key_values.<i>.key/value``,
``(1, kv_heads, past, head_dim)``) and returns it grown by the new tokens
(``present.<i>.*``); the state is those arrays plus the length. ``prefill``
runs a chunk in one call, ``decode`` one token per sequence.

``decode`` loops over the batch one sequence at a time for now: sequences have
different KV lengths, and batching them needs a padded, masked cache (a slot
pool) that this first version does not build.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument, OutOfRange

_MAGIC = b"AGOX"
_VERSION = 1
# magic, version, layers, kv_heads, head_dim, length
_HEADER = struct.Struct("<4sIIIIQ")
_FLOAT32_BYTES = 4


@dataclass
class OnnxKVState:
    """One sequence's KV cache: per layer, keys and values ``(1, kv_heads, length, head_dim)``."""

    keys: list[np.ndarray]
    values: list[np.ndarray]
    length: int = 0

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.keys) + sum(array.nbytes for array in self.values)


@dataclass
class _Shape:
    layers: int
    kv_heads: int
    head_dim: int
    past_names: list[str] = field(default_factory=list)
    present_names: list[str] = field(default_factory=list)


class OnnxDecoderBackend(Backend):
    """An exported Llama-family decoder run by onnxruntime."""

    def __init__(self, checkpoint: Checkpoint, section: dict[str, Any], session: Any):
        self.session = session
        layers = section["num_hidden_layers"]
        self.shape = _Shape(layers, section["num_key_value_heads"], section["head_dim"])
        for i in range(layers):
            self.shape.past_names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
            self.shape.present_names += [f"present.{i}.key", f"present.{i}.value"]
        self.output_names = ["logits", *self.shape.present_names]
        s = self.shape
        self.info = ModelInfo(
            architecture=checkpoint.architecture,
            kind="decoder",
            parameters=section["parameters"],
            context_length=section["context_length"],
            vocab_size=section["vocab_size"],
            dtype=str((checkpoint.manifest or {}).get("dtype", "float32")),
            state_bytes_per_token=2 * s.layers * s.kv_heads * s.head_dim * _FLOAT32_BYTES,
        )

    def new_state(self) -> OnnxKVState:
        s = self.shape
        empty = np.zeros((1, s.kv_heads, 0, s.head_dim), dtype=np.float32)
        return OnnxKVState([empty] * s.layers, [empty] * s.layers)

    def prefill(self, token_ids: np.ndarray, state: OnnxKVState, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        logits = self._run(ids, state)  # (T, V)
        return logits if all_logits else logits[-1:]

    def decode(self, token_ids: np.ndarray, states: Sequence[OnnxKVState]) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.size != len(states):
            raise InvalidArgument("token_ids", f"has {ids.size} tokens for {len(states)} states")
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        if len({id(state) for state in states}) != len(states):
            raise InvalidArgument("states", "the same state appears twice in one batch")
        for state in states:
            self._check_room(state, 1)
        # One sequence at a time (see the module docstring).
        return np.concatenate([self._run(ids[b : b + 1], state) for b, state in enumerate(states)])

    def _run(self, ids: np.ndarray, state: OnnxKVState) -> np.ndarray:
        """Feed ``ids`` after ``state``; commit the grown cache only when the run succeeded."""
        self._check_room(state, ids.size)
        start, steps = state.length, ids.size
        feed: dict[str, np.ndarray] = {
            "input_ids": ids.reshape(1, steps),
            "attention_mask": np.ones((1, start + steps), dtype=np.int64),
            "position_ids": np.arange(start, start + steps, dtype=np.int64).reshape(1, steps),
        }
        for layer in range(self.shape.layers):
            feed[self.shape.past_names[2 * layer]] = state.keys[layer]
            feed[self.shape.past_names[2 * layer + 1]] = state.values[layer]
        logits, *present = self.session.run(self.output_names, feed)
        state.keys = present[0::2]
        state.values = present[1::2]
        state.length = start + steps
        return logits[0]  # (T, V)

    def state_bytes(self, state: OnnxKVState) -> int:
        return state.nbytes

    def save_state(self, state: OnnxKVState) -> bytes:
        s = self.shape
        header = _HEADER.pack(_MAGIC, _VERSION, s.layers, s.kv_heads, s.head_dim, state.length)
        keys = np.stack([array[0] for array in state.keys]) if s.layers else np.empty(0)  # (L, KVH, T, D)
        values = np.stack([array[0] for array in state.values]) if s.layers else np.empty(0)
        return header + keys.astype(np.float32).tobytes() + values.astype(np.float32).tobytes()

    def load_state(self, data: bytes) -> OnnxKVState:
        s = self.shape
        if len(data) < _HEADER.size:
            raise InvalidArgument("state", "too short to be a saved KV cache")
        magic, version, layers, kv_heads, head_dim, length = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("state", "not a KV cache saved by the onnxrt backend")
        if (layers, kv_heads, head_dim) != (s.layers, s.kv_heads, s.head_dim):
            raise InvalidArgument(
                "state", f"saved for layers={layers} kv_heads={kv_heads} head_dim={head_dim}, model has {s.layers}/{s.kv_heads}/{s.head_dim}"
            )
        count = layers * kv_heads * length * head_dim
        if len(data) != _HEADER.size + 2 * _FLOAT32_BYTES * count:
            raise InvalidArgument("state", f"size does not match {length} cached tokens")
        payload = np.frombuffer(data, dtype=np.float32, offset=_HEADER.size)
        keys = payload[:count].reshape(layers, 1, kv_heads, length, head_dim).copy()  # (L, 1, KVH, T, D)
        values = payload[count:].reshape(layers, 1, kv_heads, length, head_dim).copy()
        return OnnxKVState(list(keys), list(values), length)

    def _check_ids(self, token_ids: np.ndarray) -> np.ndarray:
        ids = np.ascontiguousarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.info.vocab_size):
            raise InvalidArgument("token_ids", f"token ids must be in [0, {self.info.vocab_size})")
        return ids

    def _check_room(self, state: OnnxKVState, tokens: int) -> None:
        if state.length + tokens > self.info.context_length:
            raise OutOfRange(
                f"sequence would reach {state.length + tokens} tokens; the model's context is {self.info.context_length}"
            )
