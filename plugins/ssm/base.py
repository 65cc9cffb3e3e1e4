"""The backend contract over a stack of state-space mixer layers (Mamba, Mamba-2).

Subclasses supply one layer's mixer in its two forms — ``_mix_sequence`` (the
chunked parallel form for a prompt) and ``_mix_step`` (the recurrent form for
one batched token); this class owns everything around them: embeddings, the
pre-norm residual stack, the final norm and LM head, NumPy in and out,
``torch.inference_mode``, batching fixed-size states and exact save/restore.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from agentd.backend import Backend, ModelInfo
from agentd.errors import InvalidArgument
from agentd.plugins.ssm.layers import rms_norm
from agentd.plugins.ssm.state import SSMState

#: Prompt tokens handled per parallel pass; bounds activation memory on long
#: prompts (the state carries across pieces exactly).
PREFILL_SEGMENT = 2048
#: SSMs have no positional limit; this is only a sanity cap on one request.
UNBOUNDED_CONTEXT = 1 << 20


@dataclass
class SSMLayer:
    """What every layer has: the pre-mixer RMSNorm weight ``(hidden,)``."""

    norm: torch.Tensor


LayerT = TypeVar("LayerT", bound=SSMLayer)


class SSMBackend(Backend, Generic[LayerT]):
    """A decoder whose per-sequence state is an :class:`SSMState`."""

    def __init__(
        self,
        info: ModelInfo,
        embeddings: torch.Tensor,
        layers: list[LayerT],
        norm_f: torch.Tensor,
        lm_head: torch.Tensor,
        eps: float,
        conv_shape: tuple[int, int],
        ssm_shape: tuple[int, ...],
    ):
        self.info = info
        self.embeddings = embeddings  # (V, hidden)
        self.layers = layers
        self.norm_f = norm_f  # (hidden,)
        self.lm_head = lm_head  # (V, hidden), may be the embeddings (tied)
        self.eps = eps
        #: One sequence's state shapes, layers first.
        self.conv_shape = (len(layers), *conv_shape)
        self.ssm_shape = (len(layers), *ssm_shape)

    # -- to implement ------------------------------------------------------------
    @abc.abstractmethod
    def _mix_sequence(self, layer: LayerT, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """Mixer over a prompt chunk: ``x`` ``(T, hidden)`` normed; ``conv``/``ssm`` one layer's state, in place."""

    @abc.abstractmethod
    def _mix_step(self, layer: LayerT, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """Mixer for one token per row: ``x`` ``(B, hidden)``; ``conv``/``ssm`` ``(B, ...)``, in place."""

    # -- the contract --------------------------------------------------------------
    def new_state(self) -> SSMState:
        return SSMState(torch.zeros(self.conv_shape), torch.zeros(self.ssm_shape))

    def prefill(self, token_ids: np.ndarray, state: SSMState, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.numel() == 0:
            raise InvalidArgument("token_ids", "is empty")
        self._check_state(state)
        with torch.inference_mode():
            pieces = []
            for start in range(0, ids.numel(), PREFILL_SEGMENT):
                piece = ids[start : start + PREFILL_SEGMENT]
                hidden = self._forward_sequence(piece, state)
                if all_logits:
                    pieces.append(self._logits(hidden))
            if not all_logits:
                pieces.append(self._logits(hidden[-1:]))
            state.tokens += ids.numel()
            return (torch.cat(pieces) if len(pieces) > 1 else pieces[0]).numpy()

    def decode(self, token_ids: np.ndarray, states: Sequence[SSMState]) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if not states or ids.numel() != len(states):
            raise InvalidArgument("token_ids", f"has {ids.numel()} ids for {len(states)} states")
        for state in states:
            self._check_state(state)
        with torch.inference_mode():
            if len(states) == 1:
                # Views of the sequence's own tensors: the step writes straight into them.
                conv = states[0].conv.unsqueeze(1)  # (layers, 1, K-1, C)
                ssm = states[0].ssm.unsqueeze(1)  # (layers, 1, ...)
            else:
                conv = torch.stack([state.conv for state in states], dim=1)  # (layers, B, K-1, C)
                ssm = torch.stack([state.ssm for state in states], dim=1)  # (layers, B, ...)
            hidden = F.embedding(ids, self.embeddings)  # (B, hidden)
            for index, layer in enumerate(self.layers):
                normed = rms_norm(hidden, layer.norm, self.eps)
                hidden = hidden + self._mix_step(layer, normed, conv[index], ssm[index])
            logits = self._logits(hidden)
            if len(states) > 1:
                for row, state in enumerate(states):
                    state.conv.copy_(conv[:, row])
                    state.ssm.copy_(ssm[:, row])
            for state in states:
                state.tokens += 1
            return logits.numpy()

    def state_bytes(self, state: SSMState) -> int:
        return state.nbytes

    def save_state(self, state: SSMState) -> bytes:
        self._check_state(state)
        return state.to_bytes(self.info.architecture)

    def load_state(self, data: bytes) -> SSMState:
        return SSMState.from_bytes(data, self.info.architecture, self.conv_shape, self.ssm_shape)

    # -- helpers -------------------------------------------------------------------
    def _forward_sequence(self, ids: torch.Tensor, state: SSMState) -> torch.Tensor:
        """Run the layer stack over ``ids`` ``(T,)``; returns the last hidden states ``(T, hidden)``."""
        hidden = F.embedding(ids, self.embeddings)  # (T, hidden)
        for index, layer in enumerate(self.layers):
            normed = rms_norm(hidden, layer.norm, self.eps)
            hidden = hidden + self._mix_sequence(layer, normed, state.conv[index], state.ssm[index])
        return hidden

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(rms_norm(hidden, self.norm_f, self.eps), self.lm_head)

    def _check_ids(self, token_ids: np.ndarray) -> torch.Tensor:
        ids = np.ascontiguousarray(np.asarray(token_ids).reshape(-1), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.info.vocab_size):
            raise InvalidArgument("token_ids", f"token ids must be in [0, {self.info.vocab_size})")
        return torch.from_numpy(ids)

    def _check_state(self, state: object) -> None:
        if (
            not isinstance(state, SSMState)
            or tuple(state.conv.shape) != self.conv_shape
            or tuple(state.ssm.shape) != self.ssm_shape
        ):
            raise InvalidArgument("state", f"not a state of this {self.info.architecture} model")
