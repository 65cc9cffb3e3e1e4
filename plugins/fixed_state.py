"""The backend contract over a fixed-size recurrent state (state-space models, RWKV).

Mamba, Mamba-2, RWKV-4 and RWKV-7 differ only in their maths: each keeps, per
sequence, a few fp32 tensors whose size does not depend on the context. This
module owns everything around the maths, once for every such family:

* NumPy in and out, token-id and state checks, ``torch.inference_mode``;
* prefill in bounded segments (the state carries across pieces exactly);
* batched decode: a batch of one works on views of the sequence's own tensors
  (no copy at all); a larger batch is one ``torch.stack`` per part and one
  ``copy_`` per sequence and part to write back;
* ``state_bytes`` and exact save/restore as safetensors (no pickle, dtype and
  shape recorded) with a header that refuses a blob made by another model.

Layout rule: every part of a state leads with the layer dimension
(``(layers, ...)``), and a batch is stacked on dim 1 (``(layers, B, ...)``),
so each layer's slice of the batch is one contiguous tensor.
"""

from __future__ import annotations

import abc
import json
import math
import struct
from typing import ClassVar, Generic, Sequence, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from agentd.backend import Backend, ModelInfo
from agentd.errors import InvalidArgument

#: ``__metadata__`` format tag of a saved state.
STATE_FORMAT = "agentd.fixed-state/1"
#: Where the batch is stacked in the parts handed to ``_forward_step``.
BATCH_DIM = 1
_HEADER_LEN = struct.Struct("<Q")


class FixedState:
    """One sequence's state: the tensors named in ``PARTS`` plus a token count.

    Subclasses are dataclasses whose fields are the parts (in ``PARTS`` order)
    followed by ``tokens: int = 0``, so each family keeps readable names
    (``state.conv``, ``state.ssm``, ``state.tensor``). Every part is fp32
    whatever the weight dtype: the recurrence accumulates over the whole
    context and needs the range.
    """

    #: Field names of the tensors, in the order ``_forward_*`` receive them.
    PARTS: ClassVar[tuple[str, ...]]
    #: Tokens consumed so far.
    tokens: int

    def parts(self) -> tuple[torch.Tensor, ...]:
        """The state tensors, in ``PARTS`` order."""
        return tuple(getattr(self, name) for name in self.PARTS)

    @property
    def nbytes(self) -> int:
        return sum(part.numel() * part.element_size() for part in self.parts())


StateT = TypeVar("StateT", bound=FixedState)


def state_nbytes(shapes: Sequence[tuple[int, ...]]) -> int:
    """Bytes of one fp32 state with parts of ``shapes``."""
    return 4 * sum(math.prod(shape) for shape in shapes)


class FixedStateBackend(Backend, Generic[StateT]):
    """Implements the decoder half of :class:`Backend` over a :class:`FixedState`.

    A family sets ``state_type``, ``state_shapes`` (one per part, layers
    first), ``prefill_segment`` and ``info``, and implements
    ``_forward_sequence`` and ``_forward_step``.
    """

    info: ModelInfo
    #: The family's state class.
    state_type: ClassVar[type[FixedState]]
    #: Shape of each part of one sequence's state, in ``PARTS`` order.
    state_shapes: tuple[tuple[int, ...], ...]
    #: Longest piece of prompt handled in one parallel pass: bounds activation
    #: memory on long prompts.
    prefill_segment: ClassVar[int] = 1024

    # -- to implement ------------------------------------------------------------
    def _init_state(self, parts: tuple[torch.Tensor, ...]) -> None:
        """Fill freshly zeroed parts with the empty state's value (default: zeros)."""

    @abc.abstractmethod
    def _forward_sequence(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...], all_logits: bool) -> torch.Tensor:
        """Consume ``ids`` ``(T,)`` with the parallel form; update ``parts`` in place.

        Returns logits ``(T, V)`` if ``all_logits`` else ``(1, V)`` for the last token.
        """

    @abc.abstractmethod
    def _forward_step(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One token per row with the recurrent form: ``ids`` ``(B,)``, parts ``(layers, B, ...)``.

        Updates ``parts`` in place; returns logits ``(B, V)``.
        """

    # -- helpers for families ------------------------------------------------------
    def _decoder_info(
        self, architecture: str, *, parameters: int, context_length: int, vocab_size: int, dtype: str
    ) -> ModelInfo:
        """The ``ModelInfo`` of a fixed-state decoder: bytes per sequence, none per token."""
        return ModelInfo(
            architecture=architecture,
            kind="decoder",
            parameters=parameters,
            context_length=context_length,
            vocab_size=vocab_size,
            dtype=dtype,
            state_bytes_per_token=0,
            state_bytes_per_sequence=state_nbytes(self.state_shapes),
        )

    # -- the contract --------------------------------------------------------------
    def new_state(self) -> StateT:
        with torch.inference_mode():
            parts = tuple(torch.zeros(shape, dtype=torch.float32) for shape in self.state_shapes)
            self._init_state(parts)
        return self.state_type(*parts)  # type: ignore[return-value]

    def prefill(self, token_ids: np.ndarray, state: StateT, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if ids.numel() == 0:
            raise InvalidArgument("token_ids", "is empty")
        self._check_state(state)
        parts = state.parts()
        pieces = []
        with torch.inference_mode():
            for start in range(0, ids.numel(), self.prefill_segment):
                piece = ids[start : start + self.prefill_segment]
                last = start + piece.numel() == ids.numel()
                logits = self._forward_sequence(piece, parts, all_logits)
                if all_logits or last:
                    pieces.append(logits)
            state.tokens += ids.numel()
            return (torch.cat(pieces) if len(pieces) > 1 else pieces[0]).float().numpy()

    def decode(self, token_ids: np.ndarray, states: Sequence[StateT]) -> np.ndarray:
        ids = self._check_ids(token_ids)
        if not states or ids.numel() != len(states):
            raise InvalidArgument("token_ids", f"has {ids.numel()} ids for {len(states)} states")
        for state in states:
            self._check_state(state)
        with torch.inference_mode():
            if len(states) == 1:
                # Views of the sequence's own tensors: the step writes straight into them.
                batch = tuple(part.unsqueeze(BATCH_DIM) for part in states[0].parts())  # (layers, 1, ...)
                logits = self._forward_step(ids, batch)
            else:
                batch = tuple(
                    torch.stack(rows, dim=BATCH_DIM) for rows in zip(*(state.parts() for state in states))
                )  # (layers, B, ...)
                logits = self._forward_step(ids, batch)
                for row, state in enumerate(states):
                    for part, stacked in zip(state.parts(), batch):
                        part.copy_(stacked.select(BATCH_DIM, row))
            for state in states:
                state.tokens += 1
            return logits.float().numpy()

    def state_bytes(self, state: StateT) -> int:
        return state.nbytes

    def save_state(self, state: StateT) -> bytes:
        self._check_state(state)
        metadata = {"format": STATE_FORMAT, "architecture": self.info.architecture, "tokens": str(state.tokens)}
        tensors = {name: part.contiguous() for name, part in zip(state.PARTS, state.parts())}
        return save_tensors(tensors, metadata=metadata)

    def load_state(self, data: bytes) -> StateT:
        architecture = self.info.architecture
        metadata = _read_metadata(bytes(data))
        if metadata.get("format") != STATE_FORMAT or metadata.get("architecture") != architecture:
            raise InvalidArgument(
                "state", f"saved by {metadata.get('architecture') or 'an unknown model'}, not {architecture}"
            )
        try:
            tensors = load_tensors(bytes(data))
        except (SafetensorError, ValueError, RuntimeError):
            raise InvalidArgument("state", "truncated or corrupt state payload") from None
        parts = []
        for name, shape in zip(self.state_type.PARTS, self.state_shapes):
            part = tensors.get(name)
            if part is None or tuple(part.shape) != shape:
                raise InvalidArgument("state", f"part {name!r} does not match this {architecture} model")
            if part.dtype != torch.float32:
                raise InvalidArgument("state", f"part {name!r} is {part.dtype}, expected float32")
            parts.append(part)
        try:
            tokens = int(metadata.get("tokens", "0"))
        except ValueError:
            raise InvalidArgument("state", "corrupt token count") from None
        return self.state_type(*parts, tokens=tokens)  # type: ignore[return-value]

    # -- checks --------------------------------------------------------------------
    def _check_ids(self, token_ids: np.ndarray) -> torch.Tensor:
        ids = np.ascontiguousarray(np.asarray(token_ids).reshape(-1), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.info.vocab_size):
            raise InvalidArgument("token_ids", f"token ids must be in [0, {self.info.vocab_size})")
        return torch.from_numpy(ids)

    def _check_state(self, state: object) -> None:
        if not isinstance(state, self.state_type) or any(
            tuple(part.shape) != shape for part, shape in zip(state.parts(), self.state_shapes)
        ):
            raise InvalidArgument("state", f"not a state of this {self.info.architecture} model")


def _read_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors blob; a foreign blob raises InvalidArgument."""
    try:
        (header_len,) = _HEADER_LEN.unpack(data[: _HEADER_LEN.size])
        header = json.loads(data[_HEADER_LEN.size : _HEADER_LEN.size + header_len].decode("utf-8"))
        metadata = header.get("__metadata__") or {}
    except (struct.error, UnicodeDecodeError, ValueError, AttributeError):
        raise InvalidArgument("state", "not a saved fixed-size model state") from None
    if not isinstance(metadata, dict):
        raise InvalidArgument("state", "not a saved fixed-size model state")
    return metadata
