"""The per-sequence state of a state-space model: conv inputs and SSM state, all layers.

Both tensors are fixed-size fp32 whatever the context length, which is the
point of an SSM on a phone. Layers lead (``(layers, ...)``) so a batch is
stacked on dim 1 and each layer's slice of the batch stays contiguous.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from agentd.errors import InvalidArgument

#: ``__metadata__`` format tag of a saved state.
STATE_FORMAT = "agentd.ssm-state/1"


@dataclass
class SSMState:
    """One sequence's state."""

    #: ``(layers, conv_kernel - 1, conv_channels)``: the last inputs of each causal conv.
    conv: torch.Tensor
    #: ``(layers, *ssm_shape)``: the recurrent state (Mamba ``(D, N)``, Mamba-2 ``(H, P, N)``).
    ssm: torch.Tensor
    #: Tokens consumed so far.
    tokens: int = 0

    @property
    def nbytes(self) -> int:
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()

    def to_bytes(self, architecture: str) -> bytes:
        """Serialise exactly (safetensors: no pickle, dtype and shape recorded)."""
        metadata = {"format": STATE_FORMAT, "architecture": architecture, "tokens": str(self.tokens)}
        return save_tensors({"conv": self.conv.contiguous(), "ssm": self.ssm.contiguous()}, metadata=metadata)

    @classmethod
    def from_bytes(
        cls, data: bytes, architecture: str, conv_shape: tuple[int, ...], ssm_shape: tuple[int, ...]
    ) -> "SSMState":
        """Inverse of :meth:`to_bytes`; refuses a state made by another model shape."""
        try:
            tensors = load_tensors(bytes(data))
            metadata = _metadata(data)
        except (SafetensorError, ValueError, RuntimeError, struct.error):
            raise InvalidArgument("state", "not a saved state-space model state") from None
        if metadata.get("format") != STATE_FORMAT or metadata.get("architecture") != architecture:
            raise InvalidArgument(
                "state", f"saved by {metadata.get('architecture') or 'an unknown model'}, not {architecture}"
            )
        conv, ssm = tensors.get("conv"), tensors.get("ssm")
        if conv is None or ssm is None or tuple(conv.shape) != conv_shape or tuple(ssm.shape) != ssm_shape:
            raise InvalidArgument("state", f"shape does not match this {architecture} model")
        if conv.dtype != torch.float32 or ssm.dtype != torch.float32:
            raise InvalidArgument("state", "expected float32 tensors")
        try:
            tokens = int(metadata.get("tokens", "0"))
        except ValueError:
            raise InvalidArgument("state", "corrupt token count") from None
        return cls(conv, ssm, tokens)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors blob."""
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(bytes(data[8 : 8 + header_len]).decode("utf-8"))
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("bad metadata")
    return metadata
