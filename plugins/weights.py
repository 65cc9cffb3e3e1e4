"""The one way every torch backend reads weights: ``checkpoint.tensors("pt")``, checked.

Whatever the format (a Hugging Face directory, a bundle, a GGUF file, an RWKV
``.pth``), a backend sees Hugging Face tensor names through
:meth:`agentd.checkpoint.Checkpoint.tensors` and nothing else: no backend opens
a weight file itself. :class:`WeightReader` adds what every backend needs
around that stream, once:

* by name: :meth:`~WeightReader.take` a tensor of the shape ``config.json``
  implies, converted to the compute dtype (contiguous); each tensor is taken at
  most once and released from the reader as it is taken;
* in place: :meth:`~WeightReader.fill` copies tensors straight into
  preallocated (slices of fused) weights as they stream in, so loading never
  holds more than the model plus one checkpoint tensor;
* every problem — missing, unexpected, duplicated, misshapen or non-float
  tensors — is one :class:`~agentd.errors.ModelLoadError` naming the weights
  (the checkpoint's weight file, or its shard index) and the tensor;
* :attr:`~WeightReader.parameters` counts what was taken (a tied tensor, taken
  once, counts once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from agentd.checkpoint import Checkpoint
from agentd.errors import ModelLoadError
from agentd.safetensors_header import SHARD_INDEX, SINGLE_WEIGHTS


def weights_location(checkpoint: Checkpoint) -> Path:
    """What an error about a tensor names: the weight file, the shard index, or the single-file model."""
    if checkpoint.path.is_dir() and checkpoint.read_text(SHARD_INDEX) is not None:
        return checkpoint.where(SHARD_INDEX)
    return checkpoint.where(SINGLE_WEIGHTS)


class WeightReader:
    """Checked access to a checkpoint's tensors (see the module docstring)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        dtype: torch.dtype = torch.float32,
        rename: Callable[[str], str] | None = None,
    ):
        #: What errors name.
        self.source = weights_location(checkpoint)
        #: The dtype :meth:`take` converts to unless told otherwise.
        self.dtype = dtype
        #: Parameters taken so far.
        self.parameters = 0
        self._stream: Iterable[tuple[str, torch.Tensor]] | None = checkpoint.tensors("pt")
        self._rename = rename or (lambda name: name)
        self._tensors: dict[str, torch.Tensor] = {}
        self._taken: set[str] = set()

    @classmethod
    def from_stream(cls, tensors: Iterable[tuple[str, torch.Tensor]], source: Path, **options) -> "WeightReader":
        """A reader over ``(name, tensor)`` pairs already taken from ``checkpoint.tensors("pt")``;
        errors name ``source``."""
        reader = cls.__new__(cls)
        reader.source, reader.dtype, reader.parameters = Path(source), options.get("dtype", torch.float32), 0
        reader._stream, reader._rename = tensors, options.get("rename") or (lambda name: name)
        reader._tensors, reader._taken = {}, set()
        return reader

    # -- by name -------------------------------------------------------------------
    def _all(self) -> dict[str, torch.Tensor]:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            for name, tensor in stream:
                self._add(self._rename(name), tensor)
        return self._tensors

    def _add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._tensors or name in self._taken:
            raise ModelLoadError(self.source, f"tensor {name!r} appears twice")
        self._tensors[name] = tensor

    def names(self) -> list[str]:
        """Names not taken yet."""
        return list(self._all())

    def has(self, name: str) -> bool:
        return name in self._all()

    def peek(self, name: str) -> torch.Tensor | None:
        """The tensor ``name`` as stored, without taking it (None when absent)."""
        return self._all().get(name)

    def raw(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Take ``name`` as stored (any dtype), checking ``shape`` when given."""
        tensor = self._all().pop(name, None)
        if tensor is None:
            if name in self._taken:
                raise ModelLoadError(self.source, f"tensor {name!r} is needed twice (a loader bug)")
            raise ModelLoadError(self.source, f"missing tensor {name!r}")
        self._check(name, tensor, shape)
        self._taken.add(name)
        self.parameters += tensor.numel()
        return tensor

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
        """Take ``name`` with ``shape`` (as ``config.json`` implies), as contiguous ``dtype`` (default: :attr:`dtype`)."""
        return self.raw(name, shape).to(dtype or self.dtype).contiguous()

    def take_optional(self, name: str, shape: tuple[int, ...], present: bool) -> torch.Tensor | None:
        """:meth:`take` when the config says the tensor exists (``present``), else None."""
        return self.take(name, shape) if present else None

    def check_all_used(self, architecture: str, ignore: Callable[[str], bool] = lambda name: False) -> None:
        """Refuse leftovers: a checkpoint of another variant fails here instead of computing nonsense."""
        unused = sorted(name for name in self._all() if not ignore(name))
        if unused:
            more = f" (and {len(unused) - 3} more)" if len(unused) > 3 else ""
            raise ModelLoadError(self.source, f"unexpected tensors for {architecture}: {', '.join(unused[:3])}{more}")

    # -- in place ------------------------------------------------------------------
    def fill(
        self,
        destinations: Mapping[str, torch.Tensor],
        *,
        architecture: str,
        skip: Callable[[str], bool] = lambda name: False,
    ) -> None:
        """Copy each streamed tensor into ``destinations[name]`` (converting dtype) as it arrives.

        Tensors ``skip`` names are dropped; any other name not in ``destinations``,
        a duplicate, a wrong shape or a non-float tensor raises, and so does a
        destination left unfilled.
        """
        if self._stream is None:
            raise RuntimeError("fill() must be the reader's first use")
        stream, self._stream = self._stream, None
        for name, tensor in stream:
            name = self._rename(name)
            if skip(name):
                continue
            target = destinations.get(name)
            if target is None:
                raise ModelLoadError(self.source, f"unexpected tensor {name!r} for {architecture}")
            if name in self._taken:
                raise ModelLoadError(self.source, f"tensor {name!r} appears twice")
            self._check(name, tensor, tuple(target.shape))
            target.copy_(tensor)  # bf16/fp16 -> fp32 here
            self._taken.add(name)
            self.parameters += tensor.numel()
        missing = [name for name in destinations if name not in self._taken]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ModelLoadError(self.source, f"missing tensor {missing[0]!r}{more}")

    def _check(self, name: str, tensor: torch.Tensor, shape: tuple[int, ...] | None) -> None:
        if shape is not None and tuple(tensor.shape) != tuple(shape):
            raise ModelLoadError(
                self.source, f"tensor {name!r} has shape {tuple(tensor.shape)}, config.json implies {tuple(shape)}"
            )
        if not tensor.is_floating_point():
            raise ModelLoadError(self.source, f"tensor {name!r} has non-float dtype {tensor.dtype}")


def resident_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes the ``tensors`` hold in memory, each storage once.

    Views and tied tensors share a storage and count once; a oneDNN-packed
    weight (:func:`agentd.plugins.projection.pack_weight`) is its own copy and
    counts at its own size.
    """
    storages: dict[int, int] = {}
    packed = 0
    for tensor in tensors:
        if tensor is None:
            continue
        if tensor.is_mkldnn:
            packed += tensor.numel() * tensor.element_size()
        else:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) + packed


def layer_tensors(*objects: object) -> list[torch.Tensor]:
    """Every tensor in ``objects``: tensors themselves, the fields of dataclass/plain objects (and of the
    objects in those fields, such as a quantised weight's codes and scales), tuples and lists."""
    found: list[torch.Tensor] = []
    seen: set[int] = set()

    def visit(value: object) -> None:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif id(value) in seen:
            return
        elif isinstance(value, (tuple, list)):
            seen.add(id(value))
            for item in value:
                visit(item)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            seen.add(id(value))
            for item in vars(value).values():
                if isinstance(item, (torch.Tensor, tuple, list)) or (hasattr(item, "__dict__") and not callable(item)):
                    visit(item)

    for obj in objects:
        visit(obj)
    return found
