"""Checked access to a checkpoint's tensors by name and shape."""

from __future__ import annotations

import torch

from agentd.errors import ModelLoadError


class WeightReader:
    """Fetches tensors by name and expected shape; every problem names the checkpoint and tensor.

    ``check_all_used`` then refuses leftovers, so a checkpoint of a different
    architecture variant fails at load instead of computing nonsense.
    """

    def __init__(self, weights: dict[str, torch.Tensor], path: object, dtype: torch.dtype):
        self.weights, self.path, self.dtype = weights, path, dtype
        self.used: set[str] = set()

    def raw(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The tensor as stored (any dtype)."""
        tensor = self.weights.get(name)
        if tensor is None:
            raise ModelLoadError(self.path, f"missing tensor {name!r}")
        if tuple(tensor.shape) != shape:
            raise ModelLoadError(self.path, f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape}")
        self.used.add(name)
        return tensor

    def __call__(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The tensor in the model's compute dtype, contiguous."""
        return self.raw(name, shape).to(self.dtype).contiguous()

    def projection(self, name: str, shape: tuple[int, int], scale: float = 1.0) -> torch.Tensor:
        """A dense projection weight ``(out, in)`` divided by ``scale``.

        Dividing by a power of two (RWKV-4's rescaling) is exact. The backend's
        ``pack_weights`` later reorders it for :func:`agentd.plugins.projection.linear`.
        """
        weight = self(name, shape)
        return weight / scale if scale != 1.0 else weight

    def check_all_used(self, architecture: str) -> None:
        unused = sorted(set(self.weights) - self.used)
        if unused:
            raise ModelLoadError(self.path, f"unexpected tensors for {architecture}: {', '.join(unused[:3])}")

    @property
    def parameters(self) -> int:
        return sum(tensor.numel() for tensor in self.weights.values())


def float_dtype(tensor: torch.Tensor | None) -> torch.dtype:
    """The dtype a model computes in: its embedding's, if floating point, else fp32."""
    return tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32
