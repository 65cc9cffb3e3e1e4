"""The decoder contract over an exported fixed-state graph (Mamba, Mamba-2, RWKV-4, RWKV-7).

The manifest's ``onnx.state`` lists every state tensor: graph input, graph
output, shape, batch first (``["batch_size", ...]``), and optionally the
``initial`` value of a fresh sequence (0 if absent). A sequence's state is
those arrays for a batch of one; their size does not depend on the context, so
feeding them in and taking them out each step costs the same at token 10 as at
token 10 000 (unlike a KV cache, nothing here grows). ``decode`` stacks the
batch's states into one run and writes each row back; a run that raises leaves
every state as it was (results are committed only after it returns).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo, check_token_ids
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument, ModelLoadError
from agentd.plugins.onnxrt.session import has_input
from agentd.plugins.onnxrt.weights import graph_weight_bytes

_MAGIC = b"AGOR"
_VERSION = 1
# magic, version, tokens, JSON layout length
_HEADER = struct.Struct("<4sIQI")


@dataclass
class OnnxRecurrentState:
    """One sequence's state tensors (graph input name -> ``(1, ...)`` float32) and tokens consumed."""

    tensors: dict[str, np.ndarray]
    tokens: int = 0

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.tensors.values())


@dataclass(frozen=True)
class _StateTensor:
    input: str
    output: str
    shape: tuple[int, ...]  # without the batch axis
    initial: float = 0.0


class OnnxRecurrentBackend(Backend):
    """An exported fixed-state decoder run by onnxruntime."""

    def __init__(self, checkpoint: Checkpoint, section: dict[str, Any], session: Any):
        self.session = session
        manifest_path = checkpoint.path / "manifest.json"
        self.layout = [_state_tensor(entry, manifest_path) for entry in section.get("state") or []]
        if not self.layout:
            raise ModelLoadError(manifest_path, "'onnx.state' must list the graph's state tensors")
        self.output_names = ["logits", *(entry.output for entry in self.layout)]
        self._has_keep_input = has_input(session, "logits_to_keep")
        self.info = ModelInfo(
            architecture=checkpoint.source_architecture,
            kind="decoder",
            parameters=section["parameters"],
            context_length=section["context_length"],
            vocab_size=section["vocab_size"],
            dtype=str((checkpoint.manifest or {}).get("dtype", "float32")),
            state_bytes_per_sequence=sum(4 * int(np.prod(entry.shape)) for entry in self.layout),
            weight_bytes=graph_weight_bytes(checkpoint, section),
        )

    # -- contract --------------------------------------------------------------
    def new_state(self) -> OnnxRecurrentState:
        return OnnxRecurrentState({e.input: np.full((1, *e.shape), e.initial, dtype=np.float32) for e in self.layout})

    def prefill(self, token_ids: np.ndarray, state: OnnxRecurrentState, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        logits, present = self._run(ids.reshape(1, -1), state.tensors, keep=ids.size if all_logits else 1)
        state.tensors = {entry.input: array for entry, array in zip(self.layout, present)}
        state.tokens += ids.size
        return logits[0]  # (T or 1, V)

    def decode(self, token_ids: np.ndarray, states: Sequence[OnnxRecurrentState]) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if not states or ids.size != len(states):
            raise InvalidArgument("token_ids", f"has {ids.size} tokens for {len(states)} states")
        if len({id(state) for state in states}) != len(states):
            raise InvalidArgument("states", "the same state appears twice in one batch")
        stacked = {e.input: np.concatenate([s.tensors[e.input] for s in states]) for e in self.layout}  # (B, ...)
        logits, present = self._run(ids.reshape(-1, 1), stacked, keep=1)
        rows = [{entry.input: array[row : row + 1] for entry, array in zip(self.layout, present)} for row in range(len(states))]
        for state, tensors in zip(states, rows):  # the run succeeded: commit every row
            state.tensors = tensors
            state.tokens += 1
        return logits[:, -1]  # (B, V)

    def state_bytes(self, state: OnnxRecurrentState) -> int:
        return state.nbytes

    def save_state(self, state: OnnxRecurrentState) -> bytes:
        layout = json.dumps([[e.input, list(e.shape)] for e in self.layout]).encode("utf-8")
        payload = b"".join(np.ascontiguousarray(state.tensors[e.input], dtype=np.float32).tobytes() for e in self.layout)
        return _HEADER.pack(_MAGIC, _VERSION, state.tokens, len(layout)) + layout + payload

    def load_state(self, data: bytes) -> OnnxRecurrentState:
        if len(data) < _HEADER.size:
            raise InvalidArgument("state", "too short to be a saved recurrent state")
        magic, version, tokens, layout_len = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("state", "not a recurrent state saved by the onnxrt backend")
        expected = json.dumps([[e.input, list(e.shape)] for e in self.layout]).encode("utf-8")
        if data[_HEADER.size : _HEADER.size + layout_len] != expected:
            raise InvalidArgument("state", f"saved by a model with another state layout, not this {self.info.architecture}")
        offset = _HEADER.size + layout_len
        if len(data) - offset != self.info.state_bytes_per_sequence:
            raise InvalidArgument("state", "truncated or corrupt state payload")
        tensors = {}
        for entry in self.layout:
            count = int(np.prod(entry.shape))
            tensors[entry.input] = np.frombuffer(data, np.float32, count, offset).reshape(1, *entry.shape).copy()
            offset += 4 * count
        return OnnxRecurrentState(tensors, tokens)

    # -- running the graph -----------------------------------------------------
    def _run(self, ids: np.ndarray, tensors: dict[str, np.ndarray], keep: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """One run over ``ids`` ``(B, T)``; returns logits ``(B, keep, V)`` and the new state tensors."""
        feed = {"input_ids": ids, **tensors}
        if self._has_keep_input:
            feed["logits_to_keep"] = np.array([keep], dtype=np.int64)
        logits, *present = self.session.run(self.output_names, feed)
        return logits, present

    def _check_ids(self, token_ids: np.ndarray) -> np.ndarray:
        return check_token_ids(token_ids, self.info.vocab_size)


def _state_tensor(entry: Any, manifest_path: object) -> _StateTensor:
    """One ``onnx.state`` entry, checked: names and a shape of ``batch_size`` then positive ints."""
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("input"), str)
        or not isinstance(entry.get("output"), str)
        or not isinstance(shape, list)
        or not shape
        or shape[0] != "batch_size"
        or not all(type(d) is int and d > 0 for d in shape[1:])
        or type(entry.get("initial", 0.0)) not in (int, float)
    ):
        raise ModelLoadError(
            manifest_path, f"'onnx.state' entry {entry!r} needs input, output, a [batch_size, ...] shape and a numeric initial"
        )
    return _StateTensor(entry["input"], entry["output"], tuple(shape[1:]), float(entry.get("initial", 0.0)))
