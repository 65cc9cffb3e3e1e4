"""The backend contract over a fixed-size recurrent state (state-space models, RWKV).

Mamba, Mamba-2, RWKV-4 and RWKV-7 differ only in their maths: each keeps, per
sequence, a few fp32 tensors whose size does not depend on the context. This
module owns everything around the maths, once for every such family:

* NumPy in and out, token-id and state checks, ``torch.inference_mode``;
* prefill in bounded segments (the state carries across pieces exactly);
* batched decode, all or nothing: the step runs on a stacked copy of the
  batch's states (one ``torch.stack`` per part), which is written back only
  after the whole step succeeded — one ``copy_`` per sequence and part, or for
  a batch of one no copy at all: the sequence takes the stepped tensors over.
  A step that raises in any layer leaves every state as it was (the engine
  then retries the batch row by row);
* ``state_bytes`` and exact save/restore as safetensors (no pickle, dtype and
  shape recorded; the header written here, so the same state always saves to
  the same bytes) with a header that refuses a blob made by another model.

Layout rule: every part of a state leads with the layer dimension
(``(layers, ...)``), and a batch is stacked on dim 1 (``(layers, B, ...)``),
so each layer's slice of the batch is one contiguous tensor.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import struct
from typing import ClassVar, Generic, Sequence, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors

from agentd.backend import Backend, ModelInfo, check_token_ids
from agentd.errors import InvalidArgument
from agentd.plugins.weights import layer_tensors, resident_bytes

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
    def resident_bytes(self) -> int:
        """Bytes of every weight the backend holds (packed copies and a tied head's own copy counted)."""
        return resident_bytes(layer_tensors(*vars(self).values()))

    def _weights_changed(self) -> None:
        """Refresh ``info.weight_bytes`` after the weights were replaced (e.g. packed)."""
        self.info = dataclasses.replace(self.info, weight_bytes=self.resident_bytes())

    def _decoder_info(
        self, architecture: str, *, parameters: int, context_length: int, vocab_size: int, dtype: str
    ) -> ModelInfo:
        """The ``ModelInfo`` of a fixed-state decoder: bytes per sequence, none per token.

        Call it once every weight is in place: it measures what they hold.
        """
        return ModelInfo(
            architecture=architecture,
            kind="decoder",
            parameters=parameters,
            context_length=context_length,
            vocab_size=vocab_size,
            dtype=dtype,
            state_bytes_per_token=0,
            state_bytes_per_sequence=state_nbytes(self.state_shapes),
            weight_bytes=self.resident_bytes(),
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
            # The step works in place on a stacked copy; the states see it only once it all succeeded.
            batch = tuple(
                torch.stack(rows, dim=BATCH_DIM) for rows in zip(*(state.parts() for state in states))
            )  # (layers, B, ...)
            logits = self._forward_step(ids, batch).float().numpy()
            if len(states) == 1:
                # The stepped copy becomes the state: (layers, 1, ...) -> (layers, ...) is a contiguous view.
                for name, stacked in zip(states[0].PARTS, batch):
                    setattr(states[0], name, stacked.squeeze(BATCH_DIM))
            else:
                for row, state in enumerate(states):
                    for part, stacked in zip(state.parts(), batch):
                        part.copy_(stacked.select(BATCH_DIM, row))
            for state in states:
                state.tokens += 1
            return logits

    def state_bytes(self, state: StateT) -> int:
        return state.nbytes

    def save_state(self, state: StateT) -> bytes:
        self._check_state(state)
        metadata = {"format": STATE_FORMAT, "architecture": self.info.architecture, "tokens": str(state.tokens)}
        return _safetensors_bytes(dict(zip(state.PARTS, state.parts())), metadata)

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
        return torch.from_numpy(check_token_ids(token_ids, self.info.vocab_size))

    def _check_state(self, state: object) -> None:
        if not isinstance(state, self.state_type) or any(
            tuple(part.shape) != shape for part, shape in zip(state.parts(), self.state_shapes)
        ):
            raise InvalidArgument("state", f"not a state of this {self.info.architecture} model")


def _safetensors_bytes(parts: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """fp32 ``parts`` as a safetensors blob whose header is written here, in a fixed order.

    ``safetensors.torch.save`` orders the header through a hash map, so one state
    saved twice could come out as two different byte strings.
    """
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, part in parts.items():
        size = part.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(part.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # tensor data starts 8-byte aligned, as the format asks
    out = bytearray(_HEADER_LEN.size + len(text) + offset)
    _HEADER_LEN.pack_into(out, 0, len(text))
    out[_HEADER_LEN.size : _HEADER_LEN.size + len(text)] = text
    position = _HEADER_LEN.size + len(text)
    for part in parts.values():
        data = part.detach().contiguous().view(torch.uint8).reshape(-1).numpy()
        out[position : position + data.size] = memoryview(data)
        position += data.size
    return bytes(out)


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
