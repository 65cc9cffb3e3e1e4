"""Checked access to a checkpoint's tensors: every problem names the tensor and file."""

from __future__ import annotations

import torch

from agentd.checkpoint import Checkpoint
from agentd.safetensors_header import SHARD_INDEX
from agentd.errors import ModelLoadError


class WeightReader:
    """Takes named tensors out of a checkpoint as contiguous fp32, checking shapes.

    The state-space recurrences run in fp32 (they accumulate over the whole
    context), and on CPU so do the matmuls, so weights are upcast on load.
    """

    def __init__(self, checkpoint: Checkpoint):
        files = checkpoint.weight_files
        #: What errors name: the single weights file, or the shard index.
        self.source = files[0] if len(files) == 1 else checkpoint.path / SHARD_INDEX
        self._tensors = dict(checkpoint.tensors("pt"))
        #: Parameters taken so far (a tied tensor taken once counts once).
        self.parameters = 0

    def has(self, name: str) -> bool:
        return name in self._tensors

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The tensor ``name`` with ``shape`` (as ``config.json`` implies), as fp32."""
        tensor = self._tensors.pop(name, None)
        if tensor is None:
            raise ModelLoadError(self.source, f"missing tensor {name!r}")
        if tuple(tensor.shape) != shape:
            raise ModelLoadError(
                self.source, f"tensor {name!r} has shape {tuple(tensor.shape)}, config.json implies {shape}"
            )
        if not tensor.is_floating_point():
            raise ModelLoadError(self.source, f"tensor {name!r} has non-float dtype {tensor.dtype}")
        self.parameters += tensor.numel()
        return tensor.to(torch.float32).contiguous()

    def take_optional(self, name: str, shape: tuple[int, ...], present: bool) -> torch.Tensor | None:
        """``take`` when the config says the tensor exists (``present``), else None."""
        return self.take(name, shape) if present else None
