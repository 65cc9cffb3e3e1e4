"""The decoder half of the backend contract over an exported decoder graph.

The graph's GroupQueryAttention takes the KV cache in (``past_key_values.<i>.*``)
and returns it grown by the new tokens (``present.<i>.*``). Fed plain arrays,
that is one copy of the whole cache in and one out per token, so per-token cost
would grow with the context. Instead every state lives in a slot of a shared
:class:`~agentd.plugins.onnxrt.kv_pool.KVPool` and an onnxruntime ``IOBinding``
binds every layer's past *and* present to the same memory: GroupQueryAttention
then sees ``past == present`` (onnxruntime-genai's ``past_present_share_buffer``)
and writes only the new positions in place.

A decode batch is ONE run per arena (normally one run: states of similar length
share an arena): the pool puts the batch's states on adjacent slots (swapping
slots when they are not: a copy of the moved states' committed positions, paid
when the batch's membership changes, not every step), the run
binds that ``(B, kv_heads, capacity, head_dim)`` block of every layer,
``attention_mask`` ``(B, max_length + 1)`` has each row's ones up to its own
length + 1 (right padding: GQA's ``seqlens_k`` is each row's sum - 1, so it
writes each row's new token at that row's own length and attends over that
row's positions only), ``position_ids`` is ``(B, 1)`` and the logits come
back ``(B, 1, V)`` straight into the caller's output. Each row's logits
match onnxruntime running that row alone with plain arrays
(``tests/test_onnxrt_batched_decode.py``) and are bit-identical to one run per
row (fp32 and int4 graphs); the throughput gain is in
``docs/bench_onnx_batched_decode.md``. A batch that spans arenas runs once per
arena; rows are never padded into a bigger slot. A prefill runs one state alone
(its slot bound as batch 1).

Capacity grows geometrically (the pool's ladder of slot sizes, one copy per
growth, amortised O(1) per token), and ``state_bytes`` reports the slot's size.
A run writes past ``length`` before ``length`` is advanced, so a failed run
leaves the state as it was, and ``decode`` advances the rows' lengths only once
every run of the batch succeeded: a batch that fails leaves every row as it was
(new keys and values sit past ``length``, where the next run overwrites them),
so the engine's row-by-row retry never decodes a row twice.

Per-token host work is kept to what changes, as onnxruntime-genai does: the
KV bindings of a block of slots are built once (again only when an arena is
reallocated) and a step re-binds just its inputs and ``logits``.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo, check_token_ids
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument, OutOfRange
from agentd.plugins.onnxrt.kv_pool import GROW_TOKENS, KVPool, OnnxKVState
from agentd.plugins.onnxrt.session import has_input
from agentd.plugins.onnxrt.weights import graph_weight_bytes

__all__ = ["GROW_TOKENS", "OnnxDecoderBackend", "OnnxKVState"]

_MAGIC = b"AGOX"
_VERSION = 1
# magic, version, layers, kv_heads, head_dim, length
_HEADER = struct.Struct("<4sIIIIQ")
_FLOAT32_BYTES = 4
#: Block bindings kept per arena (one per distinct (first slot, rows) run); past this they are rebuilt.
_MAX_BINDINGS = 64


class OnnxDecoderBackend(Backend):
    """An exported Llama-family decoder run by onnxruntime, KV cache updated in place in a slot pool."""

    def __init__(self, checkpoint: Checkpoint, section: dict[str, Any], session: Any):
        self.session = session
        layers, kv_heads, head_dim = section["num_hidden_layers"], section["num_key_value_heads"], section["head_dim"]
        self.pool = KVPool(layers, kv_heads, head_dim, section["context_length"])
        self.info = ModelInfo(
            architecture=checkpoint.source_architecture,
            kind="decoder",
            parameters=section["parameters"],
            context_length=section["context_length"],
            vocab_size=section["vocab_size"],
            dtype=str((checkpoint.manifest or {}).get("dtype", "float32")),
            state_bytes_per_token=self.pool.bytes_per_token,
            weight_bytes=graph_weight_bytes(checkpoint, section),
        )
        # Inputs every run slices from: contiguous views, bound by pointer without a copy.
        self._mask = np.ones((1, self.info.context_length), dtype=np.int64)  # (1, P)
        self._positions = np.arange(self.info.context_length, dtype=np.int64).reshape(1, -1)  # (1, P)
        self._columns = np.arange(self.info.context_length, dtype=np.int64)  # (P,)
        self._keep = np.arange(self.info.context_length + 1, dtype=np.int64).reshape(-1, 1)  # row k = [k]
        self._has_keep_input = has_input(session, "logits_to_keep")

    # -- contract --------------------------------------------------------------
    def new_state(self) -> OnnxKVState:
        return self.pool.new_state()

    def prefill(self, token_ids: np.ndarray, state: OnnxKVState, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        self._check_state(state)
        self._check_room(state, ids.size)
        with self.pool.lock:
            try:
                return self._prefill(ids, state, keep=ids.size if all_logits else 1)  # (T or 1, V)
            finally:
                self.pool.collect()

    def decode(self, token_ids: np.ndarray, states: Sequence[OnnxKVState]) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.size != len(states):
            raise InvalidArgument("token_ids", f"has {ids.size} tokens for {len(states)} states")
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        if len({id(state) for state in states}) != len(states):
            raise InvalidArgument("states", "the same state appears twice in one batch")
        for state in states:
            self._check_state(state)
            self._check_room(state, 1)
        out = np.empty((ids.size, 1, self.info.vocab_size), dtype=np.float32)  # (B, 1, V)
        with self.pool.lock:
            try:
                for state in states:
                    self.pool.reserve(state, state.length + 1)
                for group in self.pool.decode_groups(list(states)):
                    self._decode_group(ids, group.arena, group.first, group.states, group.rows, out)
                for state in states:  # every run succeeded: commit every row
                    state.length += 1
            finally:
                self.pool.collect()
        return out.reshape(ids.size, self.info.vocab_size)

    def state_bytes(self, state: OnnxKVState) -> int:
        return state.nbytes

    def save_state(self, state: OnnxKVState) -> bytes:
        self._check_state(state)
        p = self.pool
        header = _HEADER.pack(_MAGIC, _VERSION, p.layers, p.kv_heads, p.head_dim, state.length)
        with p.lock:  # a move elsewhere could be rewriting the slot
            # The committed positions only, as (L, KVH, T, D): independent of the capacity and the slot.
            keys = np.ascontiguousarray(state.keys[:, 0, :, : state.length])
            values = np.ascontiguousarray(state.values[:, 0, :, : state.length])
        return header + keys.tobytes() + values.tobytes()

    def load_state(self, data: bytes) -> OnnxKVState:
        p = self.pool
        if len(data) < _HEADER.size:
            raise InvalidArgument("state", "too short to be a saved KV cache")
        magic, version, layers, kv_heads, head_dim, length = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("state", "not a KV cache saved by the onnxrt backend")
        if (layers, kv_heads, head_dim) != (p.layers, p.kv_heads, p.head_dim):
            raise InvalidArgument(
                "state", f"saved for layers={layers} kv_heads={kv_heads} head_dim={head_dim}, model has {p.layers}/{p.kv_heads}/{p.head_dim}"
            )
        if length > self.info.context_length:
            raise InvalidArgument("state", f"holds {length} tokens; the model's context is {self.info.context_length}")
        count = layers * kv_heads * length * head_dim
        if len(data) != _HEADER.size + 2 * _FLOAT32_BYTES * count:
            raise InvalidArgument("state", f"size does not match {length} cached tokens")
        payload = np.frombuffer(data, dtype=np.float32, offset=_HEADER.size)
        saved = (layers, kv_heads, length, head_dim)
        state = p.new_state()
        if not length:
            return state
        with p.lock:
            p.reserve(state, length)
            state.keys[:, 0, :, :length] = payload[:count].reshape(saved)
            state.values[:, 0, :, :length] = payload[count:].reshape(saved)
            state.length = length
        return state

    # -- running the graph -----------------------------------------------------
    def _prefill(self, ids: np.ndarray, state: OnnxKVState, keep: int) -> np.ndarray:
        """Feed a chunk ``ids`` after ``state`` (pool lock held); GQA writes their keys/values in place.

        Returns the logits of the last ``keep`` positions, ``(keep, V)``.
        """
        start, steps = state.length, ids.size
        total = start + steps
        self.pool.reserve(state, total)
        binding = self._binding(state.arena, state.slot, 1)
        self._bind_array(binding, "input_ids", ids.reshape(1, steps))
        self._bind_array(binding, "attention_mask", self._mask[:, :total])
        self._bind_array(binding, "position_ids", self._positions[:, start:total])
        if self._has_keep_input:
            self._bind_array(binding, "logits_to_keep", self._keep[keep])
        else:  # a graph without the input always returns every position
            keep = steps
        logits = np.empty((1, keep, self.info.vocab_size), dtype=np.float32)  # (1, K, V)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(binding)
        state.length = total  # commit only after the run succeeded
        return logits[0]

    def _decode_group(
        self, ids: np.ndarray, arena: Any, first: int, states: list[OnnxKVState], rows: list[int], out: np.ndarray
    ) -> None:
        """One run decoding ``states`` (adjacent slots from ``first``): their logits go to ``out[rows]``.

        Writes each row's keys/values at its position ``length`` but leaves
        ``length`` alone: :meth:`decode` commits the whole batch at once.
        """
        n = len(states)
        lengths = np.fromiter((state.length for state in states), dtype=np.int64, count=n)  # (n,)
        width = int(lengths.max()) + 1
        # Right padding: row b attends to (and GQA writes at) its own positions 0 .. lengths[b].
        mask = (self._columns[None, :width] <= lengths[:, None]).astype(np.int64)  # (n, width)
        tokens = ids[rows].reshape(n, 1)  # (n, 1), a copy: rows is a list
        positions = lengths.reshape(n, 1)  # (n, 1)
        binding = self._binding(arena, first, n)
        self._bind_array(binding, "input_ids", tokens)
        self._bind_array(binding, "attention_mask", mask)
        self._bind_array(binding, "position_ids", positions)
        if self._has_keep_input:
            self._bind_array(binding, "logits_to_keep", self._keep[1])
        in_place = rows == list(range(rows[0], rows[0] + n))  # the caller's rows in slot order: no scatter
        logits = out[rows[0] : rows[0] + n] if in_place else np.empty((n, 1, self.info.vocab_size), dtype=np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self.session.run_with_iobinding(binding)
        if not in_place:
            out[rows] = logits

    def _binding(self, arena: Any, first: int, rows: int) -> Any:
        """A binding whose past and present of every layer are slots ``first .. first+rows-1`` of ``arena``.

        Cached in the arena (which forgets it when its arrays move).
        """
        binding = arena.bindings.get((first, rows))
        if binding is not None:
            return binding
        if len(arena.bindings) >= _MAX_BINDINGS:
            arena.bindings.clear()
        binding = self.session.io_binding()
        keys, values = arena.block(first, rows)  # (L, rows, KVH, cap, D) each
        for layer in range(self.pool.layers):
            for kind, buffers in (("key", keys), ("value", values)):
                view = buffers[layer]  # (rows, KVH, cap, D): contiguous, slots are the outer axis
                address, shape = view.ctypes.data, list(view.shape)
                binding.bind_input(f"past_key_values.{layer}.{kind}", "cpu", 0, np.float32, shape, address)
                binding.bind_output(f"present.{layer}.{kind}", "cpu", 0, np.float32, shape, address)
        arena.bindings[(first, rows)] = binding
        return binding

    @staticmethod
    def _bind_array(binding: Any, name: str, array: np.ndarray) -> None:
        # By pointer: the caller keeps ``array`` alive until the run returns.
        binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    def _check_ids(self, token_ids: np.ndarray) -> np.ndarray:
        return check_token_ids(token_ids, self.info.vocab_size)

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, OnnxKVState) or state.pool is not self.pool:
            raise InvalidArgument("states", "not a state of this model (use its new_state or load_state)")

    def _check_room(self, state: OnnxKVState, tokens: int) -> None:
        if state.length + tokens > self.info.context_length:
            raise OutOfRange(
                f"sequence would reach {state.length + tokens} tokens; the model's context is {self.info.context_length}"
            )

