"""One GGUF file: its metadata and its tensors, dequantised to float32 on demand.

The header (metadata and tensor table) is parsed here, straight from a
memory map; dequantisation is ``gguf.quants.dequantize`` (the ``gguf``
package, maintained with llama.cpp, numpy only). ``gguf.GGUFReader`` would
parse the header too, but it keeps two numpy views per string, which for
SmolLM2's 49k-token vocabulary and 49k merges measured 3-5 s and ~170 MB of
resident memory before a single weight was read; this parser takes ~0.1 s
and keeps plain Python strings. Reading the header ourselves also lets every
tensor's type and byte range be checked up front, so a truncated file or an
unsupported type is one :class:`ModelLoadError` naming the file and the
tensor rather than a numpy reshape error.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentd.errors import ModelLoadError

#: First four bytes of every GGUF file.
MAGIC = b"GGUF"
#: Header versions read (2 and 3 share a layout; 1 used 32-bit counts and is long gone).
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

#: Tensor types agentd dequantises: what llama.cpp, Ollama and Hugging Face
#: files actually use. ``gguf.quants`` implements each block-for-block as
#: ggml does; the rest (IQ*, TQ*, MXFP4, integer tensors) are refused by name.
SUPPORTED_TYPES = frozenset(
    {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
)

#: GGUF metadata value type -> struct format of a scalar (8 string, 9 array handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY, _FLOAT32 = 8, 9, 6


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the file's table describes it (no data read)."""

    name: str
    #: ggml type name, e.g. ``Q4_K``.
    type_name: str
    #: numpy (row-major) shape: GGUF's dimensions reversed, so a weight is ``(out, in)``.
    shape: tuple[int, ...]
    #: Absolute offset of its data in the file.
    offset: int
    #: Bytes of (quantised) data.
    n_bytes: int


class _Cursor:
    """Little-endian reads over the mapped header; running off the end is a truncated file."""

    def __init__(self, buffer: mmap.mmap):
        self.buffer = buffer
        self.pos = 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from("<" + fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("Q")
        end = self.pos + length
        if end > len(self.buffer):
            raise struct.error("string runs past the end of the file")
        text = self.buffer[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end
        return text

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            value = self.scalar(_SCALARS[kind])
            return float(str(np.float32(value))) if kind == _FLOAT32 else value
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.scalar("I"), self.scalar("Q")
            if item_kind in _SCALARS:  # numbers in bulk: one numpy read, not count struct calls
                dtype = np.dtype("<" + _SCALARS[item_kind])
                values = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.pos)
                self.pos += dtype.itemsize * count
                if item_kind == _FLOAT32:
                    return [float(str(v)) for v in values] if count <= 64 else values.astype(np.float64).tolist()
                return values.tolist()
            return [self.value(item_kind) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {kind}")


class GgufFile:
    """A parsed GGUF file: ``metadata`` (key -> Python value) and its tensor table."""

    def __init__(self, path: Path):
        import gguf

        self.path = path
        try:
            with path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(path, f"cannot map the file ({exc})") from None
        cursor = _Cursor(self._map)
        try:
            if self._map[:4] != MAGIC:
                raise ValueError("no GGUF magic")
            cursor.pos = 4
            version = cursor.scalar("I")
            if version not in VERSIONS:
                raise ValueError(f"GGUF version {version} (big-endian or unknown) is not supported")
            tensor_count, kv_count = cursor.scalar("Q"), cursor.scalar("Q")
            #: Every metadata entry: ints, floats, bools, strings, or lists of them.
            self.metadata: dict[str, Any] = {}
            for _ in range(kv_count):
                key = cursor.string()
                self.metadata[key] = cursor.value(cursor.scalar("I"))
            table = []
            for _ in range(tensor_count):
                name = cursor.string()
                dims = [cursor.scalar("Q") for _ in range(cursor.scalar("I"))]
                table.append((name, dims, cursor.scalar("I"), cursor.scalar("Q")))
        except (struct.error, ValueError, OverflowError, MemoryError) as exc:
            raise ModelLoadError(path, f"corrupt or truncated GGUF header ({exc})") from None

        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise ModelLoadError(path, f"general.alignment {alignment!r} is not a power of two")
        data_start = -(-cursor.pos // alignment) * alignment
        self._tensors: dict[str, TensorInfo] = {}
        for name, dims, type_id, offset in table:
            self._tensors[name] = self._check(gguf, name, dims, type_id, data_start + offset)

    def _check(self, gguf: Any, name: str, dims: list[int], type_id: int, offset: int) -> TensorInfo:
        """The table entry of one tensor, refused unless its type is supported and its data is in the file."""
        def refuse(problem: str) -> ModelLoadError:
            return ModelLoadError(self.path, f"tensor {name!r} {problem}")

        if name in self._tensors:
            raise refuse("appears twice")
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
        except ValueError:
            raise refuse(f"has unknown ggml type id {type_id}") from None
        if qtype.name not in SUPPORTED_TYPES:
            raise refuse(f"has type {qtype.name}, which agentd cannot dequantise (supported: {', '.join(sorted(SUPPORTED_TYPES))})")
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if not dims or dims[0] % block:
            raise refuse(f"row length {dims[0] if dims else None} is not a multiple of the {qtype.name} block {block}")
        n_bytes = math.prod(dims) // block * type_size  # Python ints: a corrupt dimension cannot wrap around
        if offset + n_bytes > len(self._map):
            raise refuse(f"data ends at byte {offset + n_bytes} but the file has {len(self._map)} bytes (truncated file)")
        return TensorInfo(name, qtype.name, tuple(reversed(dims)), offset, n_bytes)

    @property
    def tensor_infos(self) -> list[TensorInfo]:
        """Every tensor, in file order."""
        return list(self._tensors.values())

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def dequantize(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a new, writable float32 array in numpy (row-major) shape."""
        import gguf
        from gguf.quants import dequantize, quant_shape_to_byte_shape

        info = self._tensors.get(name)
        if info is None:
            raise ModelLoadError(self.path, f"missing tensor {name!r}")
        qtype = gguf.GGMLQuantizationType[info.type_name]
        try:
            raw = np.frombuffer(self._map, dtype=np.uint8, count=info.n_bytes, offset=info.offset)
            values = dequantize(raw.reshape(quant_shape_to_byte_shape(info.shape, qtype)), qtype)
            # F32 comes back as a view of the read-only map; a backend may write into its copy.
            return np.array(values, dtype=np.float32, copy=True).reshape(info.shape)
        except (ValueError, NotImplementedError, OSError) as exc:
            raise ModelLoadError(self.path, f"tensor {name!r} ({info.type_name}) cannot be read ({exc})") from None
