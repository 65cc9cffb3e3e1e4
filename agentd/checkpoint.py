"""A model on disk: a Hugging Face checkpoint directory or an agentd bundle.

Both share one layout (``config.json``, ``*.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``generation_config.json``); a bundle adds
``manifest.json`` (see :mod:`agentd.bundle`), which is verified on open.
Every problem is raised as :class:`ModelLoadError` naming the file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from agentd.errors import ModelLoadError, NotFound

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
# dtypes ``safe_open(framework="np")`` can return.
_NUMPY_DTYPES = frozenset({"BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "I64", "U64", "F64", "C64"})
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


class Checkpoint:
    """Read access to one model directory. Cheap to open; weights load lazily."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            raise NotFound(f"{path}: no such model directory")
        if not self.path.is_dir():
            raise ModelLoadError(path, "not a directory (expected a checkpoint or bundle directory)")
        self.manifest: dict[str, Any] | None = None
        if (self.path / "manifest.json").exists():
            from agentd.bundle import verify_manifest

            self.manifest = verify_manifest(self.path)

    # -- files ---------------------------------------------------------------
    def file(self, relative: str, *, required: bool = True) -> Path | None:
        """Resolve ``relative`` inside the checkpoint; refuse paths that escape it."""
        candidate = (self.path / relative).resolve()
        if not candidate.is_relative_to(self.path):
            raise ModelLoadError(self.path / relative, "path points outside the model directory")
        if not candidate.is_file():
            if required:
                raise ModelLoadError(candidate, "required file is missing")
            return None
        return candidate

    def read_json(self, relative: str, *, required: bool = True) -> dict[str, Any] | None:
        """Parse a JSON object file; ``None`` if absent and not ``required``."""
        path = self.file(relative, required=required)
        if path is None:
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(path, f"invalid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ModelLoadError(path, "expected a JSON object")
        return value

    # -- metadata ------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.json`` (required)."""
        return self.read_json("config.json")  # type: ignore[return-value]

    @cached_property
    def architecture(self) -> str:
        """``config.json`` ``architectures[0]``, e.g. ``LlamaForCausalLM``."""
        archs = self.config.get("architectures")
        if not archs or not isinstance(archs, list) or not isinstance(archs[0], str):
            raise ModelLoadError(self.path / "config.json", "no 'architectures' entry")
        return archs[0]

    @cached_property
    def generation_config(self) -> dict[str, Any]:
        """``generation_config.json``, or ``{}`` when the model has none."""
        return self.read_json("generation_config.json", required=False) or {}

    @cached_property
    def weight_files(self) -> list[Path]:
        """The safetensors files, single or sharded (via the index); headers validated."""
        return [weights.path for weights in self.weight_headers]

    @cached_property
    def weight_headers(self) -> list[WeightFile]:
        """Every weight file's parsed header, checked against the shard index.

        Reading headers is cheap (no tensor data) and turns a missing shard,
        a truncated or garbage file into one ModelLoadError naming it before
        a backend allocates anything.
        """
        index_path = self.file(SHARD_INDEX, required=False)
        if index_path is None:
            single = self.file(SINGLE_WEIGHTS, required=False)
            if single is None:
                raise ModelLoadError(
                    self.path / SINGLE_WEIGHTS, f"required file is missing (nor is there {SHARD_INDEX})"
                )
            return [read_safetensors_header(single)]

        weight_map = self.read_json(SHARD_INDEX).get("weight_map")  # type: ignore[union-attr]
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(index_path, "no 'weight_map' in shard index")
        if not all(isinstance(shard, str) for shard in weight_map.values()):
            raise ModelLoadError(index_path, "'weight_map' values must be shard file names")
        shards = {name: self.file(name) for name in sorted(set(weight_map.values()))}
        headers = [read_safetensors_header(path) for path in shards.values()]  # type: ignore[arg-type]

        # Every tensor the index names must be in its shard, and only once overall.
        owner: dict[str, Path] = {}
        for weights in headers:
            for entry in weights.tensors:
                if entry.name in owner:
                    raise ModelLoadError(weights.path, f"tensor {entry.name!r} is also in {owner[entry.name].name}")
                owner[entry.name] = weights.path
        for name, shard in weight_map.items():
            if owner.get(name) != shards[shard]:
                raise ModelLoadError(shards[shard], f"tensor {name!r} named by {SHARD_INDEX} is not in this file")
        return headers

    # -- weights -------------------------------------------------------------
    def tensors(self, framework: str = "pt") -> Iterator[tuple[str, Any]]:
        """Yield ``(name, tensor)`` for every weight; ``framework`` is ``pt`` or ``np``.

        A truncated or corrupt file raises ModelLoadError naming it.
        """
        from safetensors import SafetensorError, safe_open

        if framework == "np":
            for weights in self.weight_headers:
                for entry in weights.tensors:
                    if entry.dtype not in _NUMPY_DTYPES:
                        raise ModelLoadError(
                            weights.path, f"tensor {entry.name!r} is {entry.dtype}, which numpy cannot represent"
                        )
        for path in self.weight_files:
            try:
                with safe_open(str(path), framework=framework) as handle:
                    for name in handle.keys():
                        yield name, handle.get_tensor(name)
            except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
                raise ModelLoadError(path, f"corrupt or truncated safetensors file ({exc})") from None

    def load_tensors(self, framework: str = "pt") -> dict[str, Any]:
        """Every weight as ``{name: tensor}`` (see :meth:`tensors`)."""
        return dict(self.tensors(framework))
