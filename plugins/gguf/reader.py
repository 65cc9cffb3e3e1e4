"""One GGUF file: its metadata and its tensors, dequantised to float32 on demand.

Parsing and dequantisation are the ``gguf`` package's (maintained with
llama.cpp, numpy only); this module puts agentd's error contract around it.
``gguf.GGUFReader`` memory-maps the file and checks a truncated file only by
failing to reshape a slice, and an unknown tensor type only by a bare
``ValueError``; both would reach the user as a traceback. So every tensor's
type and byte range are checked here first and any problem becomes one
:class:`ModelLoadError` naming the file and the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentd.errors import ModelLoadError

#: First four bytes of every GGUF file.
MAGIC = b"GGUF"

#: Tensor types agentd dequantises: what llama.cpp, Ollama and Hugging Face
#: files actually use. ``gguf.quants`` implements each one block-for-block as
#: ggml does; the rest (IQ*, TQ*, MXFP4, integer tensors) are refused by name.
SUPPORTED_TYPES = frozenset(
    {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the file describes it (no data read)."""

    name: str
    #: ggml type name, e.g. ``Q4_K``.
    type_name: str
    #: numpy (row-major) shape: GGUF's dimensions reversed, so a weight is ``(out, in)``.
    shape: tuple[int, ...]
    #: Bytes of (quantised) data in the file.
    n_bytes: int


def _checked_reader_class() -> type:
    """``gguf.GGUFReader`` with every tensor's type and extent checked before it is mapped."""
    import gguf

    class CheckedReader(gguf.GGUFReader):
        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            size = len(self.data)
            for field in fields:
                _name_len, name_data, _n_dims, dims, raw_dtype, offset = field.parts
                name = bytes(name_data).decode("utf-8", errors="replace")
                try:
                    qtype = gguf.GGMLQuantizationType(int(raw_dtype[0]))
                except ValueError:
                    raise _TensorProblem(name, f"has unknown ggml type id {int(raw_dtype[0])}") from None
                if qtype.name not in SUPPORTED_TYPES:
                    raise _TensorProblem(
                        name, f"has type {qtype.name}, which agentd cannot dequantise "
                        f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})"
                    )
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                n_elements = int(np.prod(dims.astype(np.int64)))
                if int(dims[0]) % block:
                    raise _TensorProblem(name, f"row length {int(dims[0])} is not a multiple of the {qtype.name} block {block}")
                end = int(start_offs) + int(offset[0]) + n_elements * type_size // block
                if end > size:
                    raise _TensorProblem(name, f"data ends at byte {end} but the file has {size} bytes (truncated file)")
            super()._build_tensors(start_offs, fields)

    return CheckedReader


class _TensorProblem(Exception):
    def __init__(self, tensor: str, problem: str):
        super().__init__(f"tensor {tensor!r} {problem}")


def _shortest_float32(value: Any) -> Any:
    """A float32 metadata value as the shortest decimal that is that float32 (1e-05, not 9.99999974e-06)."""
    if isinstance(value, list):
        return [_shortest_float32(item) for item in value]
    return float(str(np.float32(value)))


class GgufFile:
    """A parsed GGUF file: ``metadata`` (key -> Python value) and tensors by GGUF name."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._reader = _checked_reader_class()(str(path), "r")
        except _TensorProblem as exc:
            raise ModelLoadError(path, str(exc)) from None
        except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, OSError) as exc:
            raise ModelLoadError(path, f"corrupt or truncated GGUF file ({exc})") from None
        import gguf

        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}
        #: Every metadata entry: ints, floats, bools, strings, or lists of them.
        self.metadata: dict[str, Any] = {}
        for key, field in self._reader.fields.items():
            if key.startswith("GGUF."):
                continue
            try:
                value = field.contents()
                if field.types[-1] == gguf.GGUFValueType.FLOAT32:
                    value = _shortest_float32(value)
                self.metadata[key] = value
            except (ValueError, IndexError, UnicodeDecodeError) as exc:
                raise ModelLoadError(path, f"metadata {key!r} is unreadable ({exc})") from None

    @property
    def tensor_infos(self) -> list[TensorInfo]:
        """Every tensor, in file order."""
        return [
            TensorInfo(t.name, t.tensor_type.name, tuple(int(d) for d in reversed(t.shape.tolist())), int(t.n_bytes))
            for t in self._reader.tensors
        ]

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def dequantize(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a new, writable float32 array in numpy (row-major) shape."""
        from gguf.quants import dequantize

        tensor = self._tensors.get(name)
        if tensor is None:
            raise ModelLoadError(self.path, f"missing tensor {name!r}")
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
            # F32 comes back as a view of the read-only map; a backend may write into its copy.
            return np.array(values, dtype=np.float32, copy=True).reshape(shape)
        except (ValueError, NotImplementedError, OSError) as exc:
            raise ModelLoadError(self.path, f"tensor {name!r} ({tensor.tensor_type.name}) cannot be read ({exc})") from None
