"""What the RWKV backends add to the shared :class:`~agentd.plugins.weights.WeightReader`."""

from __future__ import annotations

import torch

from agentd.plugins.weights import WeightReader


def float_dtype(tensor: torch.Tensor | None) -> torch.dtype:
    """The dtype a model computes in: its embedding's, if floating point, else fp32."""
    return tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32


def projection(reader: WeightReader, name: str, shape: tuple[int, int], scale: float = 1.0) -> torch.Tensor:
    """A dense projection weight ``(out, in)`` in the reader's dtype, divided by ``scale``.

    Dividing by a power of two (RWKV-4's rescaling) is exact. The backend's
    ``pack_weights`` later reorders it for :func:`agentd.plugins.projection.linear`.
    """
    weight = reader.take(name, shape)
    return weight / scale if scale != 1.0 else weight
