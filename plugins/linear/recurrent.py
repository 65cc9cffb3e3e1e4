"""A backend whose per-sequence state is one fixed-size fp32 tensor (RWKV, ...).

Subclasses supply the maths (``_forward_sequence`` for a prompt chunk,
``_forward_step`` for one batched decode step); this class owns the contract
around it: NumPy in and out, ``torch.inference_mode``, batching fixed-size
states for ``decode``, and exact save/restore.

A state is fixed-size, so batching is one ``torch.stack`` (or, for a batch of
one, a view of the sequence's own tensor, with no copy at all) and writing
back is one ``copy_`` per sequence.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from agentd.backend import Backend, ModelInfo
from agentd.errors import InvalidArgument

#: Leading bytes of a saved state, so a foreign blob fails with a clear error.
_MAGIC = b"AGDRSTAT"
_HEADER_LEN = struct.Struct("<I")


@dataclass
class RecurrentState:
    """One sequence's recurrent state.

    ``tensor`` is fp32 whatever the weight dtype (the recurrence accumulates
    over the whole context, so it needs the range); its layout belongs to the
    backend that made it. ``tokens`` counts the tokens consumed so far.
    """

    tensor: torch.Tensor
    tokens: int = 0


class RecurrentBackend(Backend):
    """Implements the decoder half of :class:`Backend` over a fixed-size state."""

    info: ModelInfo
    #: Shape of one sequence's state tensor.
    state_shape: tuple[int, ...]
    #: Longest piece of prompt handled in one parallel pass (bounds the
    #: memory of the chunked form; state carries across pieces exactly).
    prefill_segment: int = 1024

    # -- to implement ------------------------------------------------------------
    def _init_state(self, tensor: torch.Tensor) -> None:
        """Fill a freshly allocated (zeroed) state tensor with its empty value."""

    def _forward_sequence(self, ids: torch.Tensor, state: torch.Tensor, all_logits: bool) -> torch.Tensor:
        """Consume ``ids`` ``(T,)``; update ``state`` in place; logits ``(T or 1, V)``."""
        raise NotImplementedError

    def _forward_step(self, ids: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """One token per row: ``ids`` ``(B,)``, ``states`` ``(B, *state_shape)`` updated in place."""
        raise NotImplementedError

    # -- the contract --------------------------------------------------------------
    def new_state(self) -> RecurrentState:
        with torch.inference_mode():
            tensor = torch.zeros(self.state_shape, dtype=torch.float32)
            self._init_state(tensor)
        return RecurrentState(tensor)

    def prefill(self, token_ids: np.ndarray, state: RecurrentState, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids, "token_ids")
        if ids.numel() == 0:
            raise InvalidArgument("token_ids", "is empty")
        self._check_state(state)
        pieces = []
        with torch.inference_mode():
            for start in range(0, ids.numel(), self.prefill_segment):
                piece = ids[start : start + self.prefill_segment]
                last = start + piece.numel() == ids.numel()
                if all_logits or last:
                    pieces.append(self._forward_sequence(piece, state.tensor, all_logits))
                else:
                    self._forward_sequence(piece, state.tensor, False)
            logits = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
            state.tokens += ids.numel()
            return logits.float().numpy()

    def decode(self, token_ids: np.ndarray, states: Sequence[RecurrentState]) -> np.ndarray:
        ids = self._check_ids(token_ids, "token_ids")
        if ids.numel() != len(states) or not states:
            raise InvalidArgument("token_ids", f"has {ids.numel()} ids for {len(states)} states")
        for state in states:
            self._check_state(state)
        with torch.inference_mode():
            if len(states) == 1:
                # A view: the step writes straight into the sequence's own state.
                batch = states[0].tensor.unsqueeze(0)
                logits = self._forward_step(ids, batch)
            else:
                batch = torch.stack([state.tensor for state in states])
                logits = self._forward_step(ids, batch)
                for row, state in zip(batch, states):
                    state.tensor.copy_(row)
            for state in states:
                state.tokens += 1
            return logits.float().numpy()

    def state_bytes(self, state: RecurrentState) -> int:
        return state.tensor.numel() * state.tensor.element_size()

    def save_state(self, state: RecurrentState) -> bytes:
        self._check_state(state)
        header = json.dumps(
            {"architecture": self.info.architecture, "shape": list(self.state_shape), "tokens": state.tokens}
        ).encode()
        out = io.BytesIO()
        out.write(_MAGIC)
        out.write(_HEADER_LEN.pack(len(header)))
        out.write(header)
        out.write(state.tensor.contiguous().numpy().tobytes())
        return out.getvalue()

    def load_state(self, data: bytes) -> RecurrentState:
        view = memoryview(data)
        start = len(_MAGIC) + _HEADER_LEN.size
        if len(view) < start or bytes(view[: len(_MAGIC)]) != _MAGIC:
            raise InvalidArgument("state", "not a saved RWKV-style recurrent state")
        (header_len,) = _HEADER_LEN.unpack(view[len(_MAGIC) : start])
        try:
            header = json.loads(bytes(view[start : start + header_len]))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidArgument("state", "corrupt state header") from None
        if header.get("architecture") != self.info.architecture or header.get("shape") != list(self.state_shape):
            raise InvalidArgument(
                "state",
                f"saved for {header.get('architecture')} {header.get('shape')}, "
                f"this model is {self.info.architecture} {list(self.state_shape)}",
            )
        payload = view[start + header_len :]
        if len(payload) != int(np.prod(self.state_shape)) * 4:
            raise InvalidArgument("state", "truncated state payload")
        array = np.frombuffer(payload, dtype=np.float32).reshape(self.state_shape).copy()
        with torch.inference_mode():
            tensor = torch.from_numpy(array).clone()
        return RecurrentState(tensor, int(header.get("tokens", 0)))

    # -- helpers -------------------------------------------------------------------
    def _check_ids(self, token_ids: np.ndarray, field: str) -> torch.Tensor:
        ids = np.ascontiguousarray(np.asarray(token_ids).reshape(-1), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.info.vocab_size):
            raise InvalidArgument(field, f"token ids must be in [0, {self.info.vocab_size})")
        return torch.from_numpy(ids)

    def _check_state(self, state: object) -> None:
        if not isinstance(state, RecurrentState) or tuple(state.tensor.shape) != self.state_shape:
            raise InvalidArgument("state", f"not a state of this {self.info.architecture} model")
