"""safetensors headers, read and checked without touching tensor data.

A header that lies (truncated file, overlapping offsets, a size that does not
match shape and dtype) becomes one :class:`ModelLoadError` naming the file,
before any backend allocates memory for it.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentd.errors import ModelLoadError

SINGLE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"

#: Bits per element of every safetensors dtype (sub-byte float types included).
SAFETENSORS_DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
#: dtypes ``safe_open(framework="np")`` can return.
NUMPY_DTYPES = frozenset({"BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "I64", "U64", "F64", "C64"})
# The safetensors library refuses larger headers; so do we, before reading one.
_MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as a safetensors header describes it."""

    name: str
    #: safetensors dtype code, e.g. ``F32``, ``BF16``.
    dtype: str
    shape: tuple[int, ...]
    #: Absolute byte range ``[start, end)`` of the data in the file.
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class WeightFile:
    """A validated safetensors file: its header, without the tensor data."""

    path: Path
    #: The ``__metadata__`` string map (e.g. ``{"format": "pt"}``).
    metadata: dict[str, str]
    #: Tensors in the order their data appears in the file.
    tensors: tuple[TensorEntry, ...]

    @property
    def parameters(self) -> int:
        return sum(entry.numel for entry in self.tensors)


def read_safetensors_header(path: Path) -> WeightFile:
    """Parse and check a safetensors header without reading tensor data.

    Catches what would otherwise surface as an opaque error deep inside a
    backend: a truncated file, garbage bytes, offsets that overlap or leave
    gaps, a tensor whose byte size does not match its shape and dtype.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(path, f"not a safetensors file ({size} bytes, too short for a header)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > _MAX_HEADER_BYTES or header_len + 8 > size:
                raise ModelLoadError(
                    path, f"corrupt safetensors header (declares {header_len} header bytes; file has {size})"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise ModelLoadError(path, f"unreadable safetensors file ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(path, "corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise ModelLoadError(path, "corrupt safetensors header (expected a JSON object)")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelLoadError(path, "corrupt safetensors header ('__metadata__' must map strings to strings)")
    data_start = 8 + header_len
    entries = [_tensor_entry(path, name, info, data_start) for name, info in header.items()]
    entries.sort(key=lambda entry: (entry.start, entry.end))

    # Data must tile the buffer exactly: what the safetensors loader enforces too.
    position = data_start
    for entry in entries:
        if entry.start != position:
            raise ModelLoadError(path, f"corrupt safetensors header (tensor {entry.name!r} data offsets overlap or leave a gap)")
        position = entry.end
    if position != size:
        if position > size:
            raise ModelLoadError(
                path, f"truncated safetensors file (header needs {position} bytes; file has {size})"
            )
        raise ModelLoadError(path, f"corrupt safetensors file ({size - position} trailing bytes after the last tensor)")
    return WeightFile(path=path, metadata=dict(metadata), tensors=tuple(entries))


def _tensor_entry(path: Path, name: str, info: Any, data_start: int) -> TensorEntry:
    """One header entry, checked: known dtype, sane shape, byte size matching both."""
    problem = f"corrupt safetensors header (tensor {name!r}"
    if not isinstance(info, dict):
        raise ModelLoadError(path, f"{problem} is not an object)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    bits = SAFETENSORS_DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        raise ModelLoadError(path, f"{problem} has unknown dtype {dtype!r})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ModelLoadError(path, f"{problem} has an invalid shape {shape!r})")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ModelLoadError(path, f"{problem} has invalid data_offsets {offsets!r})")
    expected_bits = math.prod(shape) * bits
    if expected_bits != (offsets[1] - offsets[0]) * 8:
        raise ModelLoadError(
            path, f"{problem} {dtype}{shape} needs {expected_bits / 8:g} bytes; offsets give {offsets[1] - offsets[0]})"
        )
    return TensorEntry(name, dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
