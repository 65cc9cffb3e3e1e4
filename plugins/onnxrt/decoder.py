"""The decoder half of the backend contract over an exported decoder graph.

The graph's GroupQueryAttention takes the KV cache in (``past_key_values.<i>.*``)
and returns it grown by the new tokens (``present.<i>.*``). Fed plain arrays,
that is one copy of the whole cache in and one out per token, so per-token cost
would grow with the context. Instead each state owns preallocated buffers of
``capacity`` positions and an onnxruntime ``IOBinding`` binds every layer's past
*and* present to the same buffer: GroupQueryAttention then sees
``past == present`` (onnxruntime-genai's ``past_present_share_buffer``) and
writes only the new positions in place. ``attention_mask`` (length = tokens
so far + new) tells it how many positions are valid.

Capacity grows geometrically (one copy per growth, amortised O(1) per token),
and ``state_bytes`` reports what is allocated. A run writes past ``length``
before ``length`` is advanced, so a failed run leaves the state as it was, and
``decode`` advances the rows' lengths only once every row has run: a batch
that fails at row k leaves rows 0..k-1 as they were too (their new keys and
values sit past ``length``, where the next run overwrites them), so the
engine's row-by-row retry never decodes a row twice.

Per-token host work is kept to what changes, as onnxruntime-genai does: the
binding is built once per state (and again only when the buffers grow), a decode
step writes the token and its position into two one-element arrays the binding
already points at, and re-binds just ``attention_mask`` (its length grows) and
``logits`` (straight into the caller's output row, no copy, no temporary).

``decode`` runs the batch one sequence at a time: each state owns its buffers,
and batching them would need a shared slot pool (one ``(B, kv_heads, cap, D)``
buffer with per-row lengths), which this backend does not build yet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo, check_token_ids
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument, OutOfRange
from agentd.plugins.onnxrt.session import has_input
from agentd.plugins.onnxrt.weights import graph_weight_bytes

_MAGIC = b"AGOX"
_VERSION = 1
# magic, version, layers, kv_heads, head_dim, length
_HEADER = struct.Struct("<4sIIIIQ")
_FLOAT32_BYTES = 4
#: Capacity is a multiple of this many tokens and grows by at least half of itself.
GROW_TOKENS = 256


@dataclass
class OnnxKVState:
    """One sequence's KV cache in preallocated buffers ``(layers, 1, kv_heads, capacity, head_dim)``.

    Positions ``0 .. length-1`` are valid; the rest is scratch the next run writes.
    """

    keys: np.ndarray
    values: np.ndarray
    length: int = 0
    #: IOBinding with every past/present bound to these buffers (rebuilt when they move).
    binding: Any = field(default=None, repr=False, compare=False)
    #: ``[token, position]`` of a decode step: ``input_ids`` / ``position_ids`` point into it.
    step: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 1), dtype=np.int64), repr=False, compare=False)
    #: Whether ``binding`` holds the decode-step inputs (a prefill binds its chunk instead).
    bound_for_step: bool = field(default=False, repr=False, compare=False)

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


@dataclass(frozen=True)
class _Shape:
    layers: int
    kv_heads: int
    head_dim: int

    def buffers(self, capacity: int) -> np.ndarray:
        return np.zeros((self.layers, 1, self.kv_heads, capacity, self.head_dim), dtype=np.float32)  # (L, 1, KVH, cap, D)


class OnnxDecoderBackend(Backend):
    """An exported Llama-family decoder run by onnxruntime, KV cache updated in place."""

    def __init__(self, checkpoint: Checkpoint, section: dict[str, Any], session: Any):
        self.session = session
        self.shape = _Shape(section["num_hidden_layers"], section["num_key_value_heads"], section["head_dim"])
        s = self.shape
        self.info = ModelInfo(
            architecture=checkpoint.source_architecture,
            kind="decoder",
            parameters=section["parameters"],
            context_length=section["context_length"],
            vocab_size=section["vocab_size"],
            dtype=str((checkpoint.manifest or {}).get("dtype", "float32")),
            state_bytes_per_token=2 * s.layers * s.kv_heads * s.head_dim * _FLOAT32_BYTES,
            weight_bytes=graph_weight_bytes(checkpoint, section),
        )
        # Inputs every run slices from: contiguous views, bound by pointer without a copy.
        self._mask = np.ones((1, self.info.context_length), dtype=np.int64)  # (1, P)
        self._positions = np.arange(self.info.context_length, dtype=np.int64).reshape(1, -1)  # (1, P)
        self._keep = np.arange(self.info.context_length + 1, dtype=np.int64).reshape(-1, 1)  # row k = [k]
        self._has_keep_input = has_input(session, "logits_to_keep")

    # -- contract --------------------------------------------------------------
    def new_state(self) -> OnnxKVState:
        empty = self.shape.buffers(0)
        return OnnxKVState(empty, empty.copy())

    def prefill(self, token_ids: np.ndarray, state: OnnxKVState, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        return self._run(ids, state, keep=ids.size if all_logits else 1)  # (T or 1, V)

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
        out = np.empty((ids.size, 1, self.info.vocab_size), dtype=np.float32)  # (B, 1, V)
        for b, state in enumerate(states):  # one sequence at a time (see the module docstring)
            self._step(int(ids[b]), state, out[b : b + 1])
        for state in states:  # every row ran: commit them all
            state.length += 1
        return out.reshape(ids.size, self.info.vocab_size)

    def state_bytes(self, state: OnnxKVState) -> int:
        return state.nbytes

    def save_state(self, state: OnnxKVState) -> bytes:
        s = self.shape
        header = _HEADER.pack(_MAGIC, _VERSION, s.layers, s.kv_heads, s.head_dim, state.length)
        # The committed positions only, as (L, KVH, T, D) — independent of the capacity.
        keys = np.ascontiguousarray(state.keys[:, 0, :, : state.length])
        values = np.ascontiguousarray(state.values[:, 0, :, : state.length])
        return header + keys.tobytes() + values.tobytes()

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
        if length > self.info.context_length:
            raise InvalidArgument("state", f"holds {length} tokens; the model's context is {self.info.context_length}")
        count = layers * kv_heads * length * head_dim
        if len(data) != _HEADER.size + 2 * _FLOAT32_BYTES * count:
            raise InvalidArgument("state", f"size does not match {length} cached tokens")
        payload = np.frombuffer(data, dtype=np.float32, offset=_HEADER.size)
        state = OnnxKVState(s.buffers(self._capacity_for(length)), s.buffers(self._capacity_for(length)), length)
        saved = (layers, kv_heads, length, head_dim)
        state.keys[:, 0, :, :length] = payload[:count].reshape(saved)
        state.values[:, 0, :, :length] = payload[count:].reshape(saved)
        return state

    # -- running the graph -----------------------------------------------------
    def _run(self, ids: np.ndarray, state: OnnxKVState, keep: int) -> np.ndarray:
        """Feed a chunk ``ids`` after ``state``; GQA writes their keys/values in place.

        Returns the logits of the last ``keep`` positions, ``(keep, V)``.
        """
        self._check_room(state, ids.size)
        start, steps = state.length, ids.size
        total = start + steps
        binding = self._binding(state, total)
        self._bind_array(binding, "input_ids", ids.reshape(1, steps))
        self._bind_array(binding, "attention_mask", self._mask[:, :total])
        self._bind_array(binding, "position_ids", self._positions[:, start:total])
        if self._has_keep_input:
            self._bind_array(binding, "logits_to_keep", self._keep[keep])
        else:  # a graph without the input always returns every position
            keep = steps
        state.bound_for_step = False
        logits = np.empty((1, keep, self.info.vocab_size), dtype=np.float32)  # (1, K, V)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(binding)
        state.length = total  # commit only after the run succeeded
        return logits[0]

    def _step(self, token: int, state: OnnxKVState, out: np.ndarray) -> None:
        """One decode token for ``state``, its logits written into ``out`` ``(1, 1, V)``.

        Writes the token's keys/values at position ``length`` but leaves
        ``length`` alone: :meth:`decode` commits the whole batch at once.
        """
        total = state.length + 1
        binding = self._binding(state, total)
        if not state.bound_for_step:  # once per sequence (and after a prefill or a growth)
            self._bind_array(binding, "input_ids", state.step[0])
            self._bind_array(binding, "position_ids", state.step[1])
            if self._has_keep_input:
                self._bind_array(binding, "logits_to_keep", self._keep[1])
            state.bound_for_step = True
        state.step[0, 0, 0] = token
        state.step[1, 0, 0] = state.length
        self._bind_array(binding, "attention_mask", self._mask[:, :total])
        binding.bind_output("logits", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        self.session.run_with_iobinding(binding)

    def _binding(self, state: OnnxKVState, total: int) -> Any:
        """The state's binding, with room for ``total`` positions."""
        self._reserve(state, total)
        return state.binding if state.binding is not None else self._bind_cache(state)

    def _bind_cache(self, state: OnnxKVState) -> Any:
        """A binding whose past and present of every layer are the same buffer."""
        binding = self.session.io_binding()
        for layer in range(self.shape.layers):
            for kind, buffers in (("key", state.keys), ("value", state.values)):
                view = buffers[layer]  # (1, KVH, cap, D), contiguous
                address, shape = view.ctypes.data, list(view.shape)
                binding.bind_input(f"past_key_values.{layer}.{kind}", "cpu", 0, np.float32, shape, address)
                binding.bind_output(f"present.{layer}.{kind}", "cpu", 0, np.float32, shape, address)
        state.binding, state.bound_for_step = binding, False
        return binding

    @staticmethod
    def _bind_array(binding: Any, name: str, array: np.ndarray) -> None:
        # By pointer: the caller keeps ``array`` alive until the run returns.
        binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    def _reserve(self, state: OnnxKVState, total: int) -> None:
        """Make room for ``total`` positions: one copy into bigger buffers when needed."""
        if total <= state.capacity:
            return
        capacity = self._capacity_for(max(total, state.capacity + state.capacity // 2))
        keys, values = self.shape.buffers(capacity), self.shape.buffers(capacity)
        keys[:, :, :, : state.length] = state.keys[:, :, :, : state.length]
        values[:, :, :, : state.length] = state.values[:, :, :, : state.length]
        state.keys, state.values, state.binding, state.bound_for_step = keys, values, None, False

    def _capacity_for(self, tokens: int) -> int:
        rounded = -(-tokens // GROW_TOKENS) * GROW_TOKENS
        return min(rounded, self.info.context_length) if tokens <= self.info.context_length else rounded

    def _check_ids(self, token_ids: np.ndarray) -> np.ndarray:
        return check_token_ids(token_ids, self.info.vocab_size)

    def _check_room(self, state: OnnxKVState, tokens: int) -> None:
        if state.length + tokens > self.info.context_length:
            raise OutOfRange(
                f"sequence would reach {state.length + tokens} tokens; the model's context is {self.info.context_length}"
            )
