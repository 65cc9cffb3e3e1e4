"""agentd bundles: an imported model directory that proves its own integrity.

A bundle is the Hugging Face layout agentd reads anyway (``config.json``, one
merged ``model.safetensors``, tokenizer files, chat template, sentence-encoder
pooling config) plus ``manifest.json``::

    {"format": "agentd.bundle", "format_version": 1,
     "architecture": "LlamaForCausalLM", "dtype": "float32",
     "created_by": "agentd 0.1.0", "source": "<directory basename>",
     "parameters": 1234,
     "files": {"config.json": {"sha256": "...", "size": 123}, ...}}

This module writes bundles; :mod:`agentd.manifest` reads and verifies them.

``import_checkpoint`` builds one atomically from any checkpoint a format plugin
opens (a Hugging Face directory, a GGUF file, an RWKV ``.pth``); exporters
build theirs with the same public pieces: :func:`write_atomically`,
:func:`write_support_files`, :func:`file_entry`, :func:`write_json`. The core
stays torch-free: safetensors weights are streamed as raw bytes, other formats
arrive as NumPy arrays, and dtype conversion (bfloat16 included) is done with
NumPy bit arithmetic, one chunk at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from agentd import __version__
from agentd.checkpoint import Checkpoint
from agentd.directory_checkpoint import DirectoryCheckpoint
from agentd.errors import AgentdError, InvalidArgument, ModelLoadError, ResourceExhausted, is_storage_full
from agentd.manifest import FORMAT, FORMAT_VERSION, MANIFEST_FILE, sha256_file
from agentd.safetensors_header import SAFETENSORS_DTYPE_BITS, SINGLE_WEIGHTS, TensorEntry, WeightFile, read_safetensors_header
from agentd.staging import remove_stale, staging_name

#: Read/write/hash granularity: large enough to amortise syscalls, small enough to stream.
CHUNK_BYTES = 1 << 20

#: Files copied verbatim when the source has them (``config.json`` is handled apart).
OPTIONAL_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)

#: ``--dtype`` choices and their safetensors codes.
TARGET_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_DTYPE_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "F16": "float16",
    "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32", "I64": "int64",
    "U64": "uint64", "F64": "float64", "C64": "complex64", "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu", "F4": "float4_e2m1fn_x2",
    "F6_E2M3": "float6_e2m3fn", "F6_E3M2": "float6_e3m2fn",
}
# Float dtypes import may convert; 8-bit and smaller floats are quantised data, kept as is.
_CONVERTIBLE = frozenset({"F16", "BF16", "F32", "F64"})


# -- import ------------------------------------------------------------------------


def import_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    dtype: str | None = None,
) -> Path:
    """Turn any checkpoint a format plugin opens into a bundle at ``out``; returns its path.

    The checkpoint is validated first (a registered backend serves its
    architecture, weights are intact, the tokenizer parses). The bundle is
    written to a temporary directory next to ``out`` and renamed into place,
    so an interrupted import leaves nothing at ``out``. ``dtype`` (``float32``,
    ``float16``, ``bfloat16``) converts floating-point weights; ``None`` keeps them.
    """
    from agentd.formats import open_checkpoint
    from agentd.registry import spec_for

    if dtype is not None and dtype not in TARGET_DTYPES:
        raise InvalidArgument("dtype", f"must be one of {', '.join(TARGET_DTYPES)} (got {dtype!r})")
    checkpoint = open_checkpoint(src)
    spec_for(checkpoint.architecture, checkpoint.where("config.json"))
    if isinstance(checkpoint, DirectoryCheckpoint):
        headers = checkpoint.weight_headers
        if not any(weights.tensors for weights in headers):
            raise ModelLoadError(headers[0].path, "contains no tensors")
    checkpoint.tokenizer()  # refuse now what loading would refuse later

    target = TARGET_DTYPES.get(dtype or "")
    return write_atomically(
        checkpoint.path, out, force, lambda staging: _write_bundle(checkpoint, staging, target), purpose="importing"
    )


# -- writing a bundle (public: exporters build bundles with these too) ----------------


def write_atomically(
    source: Path, out: str | Path, force: bool, fill: Callable[[Path], dict[str, Any]], *, purpose: str
) -> Path:
    """Create the bundle at ``out`` all at once; returns its absolute path.

    ``fill(staging)`` writes every file into an empty hidden directory next to
    ``out`` and returns the manifest describing them; this writes
    ``manifest.json``, flushes and renames the directory into place. Any
    failure or interrupt removes the staging directory, so ``out`` is either
    the old content (or nothing) or the complete new bundle. ``source`` is the
    checkpoint read, which ``out`` must not be or contain; an existing ``out``
    is replaced only with ``force``.
    """
    destination = Path(out).expanduser().absolute()
    check_destination(source, destination, force)
    # Not mkdtemp: its 0700 mode would end up on the bundle; mkdir honours the umask.
    staging = staging_name(destination, purpose)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(destination.parent, destination.name)  # what a killed earlier run left
        staging.mkdir()
    except OSError as exc:
        raise _write_error(destination, exc) from None
    try:
        manifest = fill(staging)
        write_json(staging / MANIFEST_FILE, manifest)
        _fsync(staging)
        _move_into_place(staging, destination, force)
    except BaseException as exc:  # KeyboardInterrupt too: never leave a half-written bundle
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):  # disk full, permissions: the user's to fix, not a bug
            raise _write_error(destination, exc) from None
        raise
    return destination


def write_support_files(checkpoint: Checkpoint, staging: Path, config: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Copy what every bundle carries besides weights; returns their manifest entries.

    ``config.json`` (or ``config`` written in its place), the tokenizer files,
    generation config, sentence-transformers module configs and the chat
    template (moved out of ``tokenizer_config.json`` into ``chat_template.jinja``).
    """
    files: dict[str, dict[str, Any]] = {}
    if config is not None:
        files["config.json"] = write_json(staging / "config.json", config)
    else:
        files["config.json"] = _write_document(checkpoint, "config.json", staging)  # type: ignore[assignment]
        checkpoint.config  # noqa: B018 - a config that does not parse is refused, not copied
    for relative in (*OPTIONAL_FILES, *_module_configs(checkpoint)):
        if relative not in files and (entry := _write_document(checkpoint, relative, staging)) is not None:
            files[relative] = entry
    # Newer checkpoints keep the template in chat_template.jinja; older ones inline a
    # single one in tokenizer_config.json. A list of named templates stays where it is,
    # since chat_template.jinja would shadow the other names.
    if "chat_template.jinja" not in files:
        tokenizer_config = checkpoint.read_json("tokenizer_config.json", required=False) or {}
        template = tokenizer_config.get("chat_template")
        if isinstance(template, str):
            files["chat_template.jinja"] = _write_bytes(staging / "chat_template.jinja", template.encode("utf-8"))
    return files


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest entry (sha256 and size) of a file already written."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def write_json(target: Path, value: dict[str, Any]) -> dict[str, Any]:
    """Write ``value`` as indented UTF-8 JSON; returns its manifest entry."""
    return _write_bytes(target, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _write_error(destination: Path, exc: OSError) -> AgentdError:
    """Source-side errors are ModelLoadErrors raised where files are read; this is the output side
    (a full disk is ResourceExhausted, as everywhere: exit 75)."""
    kind = ResourceExhausted if is_storage_full(exc) else AgentdError
    return kind(f"{exc.filename or destination}: cannot write the bundle ({exc.strerror or exc})")


def check_destination(source: Path, destination: Path, force: bool) -> None:
    """Refuse an output that is (or contains) the source, exists without ``force``, or sits under a file."""
    if source.is_relative_to(destination.resolve()):
        raise InvalidArgument(str(destination), "is the source checkpoint or contains it; choose another directory")
    if (destination.exists() or destination.is_symlink()) and not force:
        raise InvalidArgument(str(destination), "already exists; pass --force to replace it")
    if force and (destination.exists() or destination.is_symlink()) and not _replaceable(destination):
        # --force moves the old output aside and deletes it: never a home directory, a file, a device.
        raise InvalidArgument(
            str(destination), "is not a bundle (no manifest.json); --force replaces only a bundle or an empty directory"
        )
    ancestor = destination.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidArgument(str(ancestor), "is not a directory; cannot create the bundle inside it")


def _replaceable(destination: Path) -> bool:
    """Whether ``--force`` may delete ``destination``: a real directory holding a bundle, or nothing."""
    if destination.is_symlink() or not destination.is_dir():
        return False
    return (destination / MANIFEST_FILE).is_file() or not any(destination.iterdir())


def _write_bundle(checkpoint: Checkpoint, staging: Path, target: str | None) -> dict[str, Any]:
    """Write every bundle file into ``staging``; returns the manifest describing them."""
    config = checkpoint.config
    dtype_keys = [key for key in ("dtype", "torch_dtype") if key in config]
    updated = None
    if target is not None and dtype_keys:
        # Keep config.json truthful for tools (transformers) that read the dtype from it.
        updated = dict(config, **{key: _DTYPE_NAMES[target] for key in dtype_keys})
    files = write_support_files(checkpoint, staging, updated)
    if isinstance(checkpoint, DirectoryCheckpoint):  # safetensors: stream the bytes through
        headers = checkpoint.weight_headers
        files[SINGLE_WEIGHTS] = _write_weights(headers, staging / SINGLE_WEIGHTS, target)
    else:  # any other format hands over arrays
        files[SINGLE_WEIGHTS], headers = _write_arrays(checkpoint, staging / SINGLE_WEIGHTS, target)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": checkpoint.architecture,
        "dtype": _DTYPE_NAMES[target] if target else _dominant_dtype(headers),
        "created_by": f"agentd {__version__}",
        "source": checkpoint.path.name,
        "parameters": sum(weights.parameters for weights in headers),
        "files": dict(sorted(files.items())),
    }


def _write_document(checkpoint: Checkpoint, relative: str, staging: Path) -> dict[str, Any] | None:
    """Write one layout document of ``checkpoint`` into ``staging``; None if it has none."""
    text = checkpoint.read_text(relative)
    if text is None:
        return None
    return _write_bytes(staging / relative, text.encode("utf-8"))


def _module_configs(checkpoint: Checkpoint) -> list[str]:
    """``<dir>/config.json`` of each sentence-transformers module ``modules.json`` lists.

    The pooling module usually lives in ``1_Pooling`` but ``modules.json`` is
    what names it, so copy whatever it points at.
    """
    text = checkpoint.read_text("modules.json")
    if text is None:
        return []
    path = checkpoint.where("modules.json")
    try:
        modules = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(path, f"invalid JSON ({exc})") from None
    if not isinstance(modules, list) or not all(isinstance(module, dict) for module in modules):
        raise ModelLoadError(path, "expected a list of module objects")
    return [f"{module['path']}/config.json" for module in modules if isinstance(module.get("path"), str) and module["path"]]


def _dominant_dtype(headers: list[WeightFile]) -> str:
    """The dtype holding most elements, preferring floating point (the weights proper)."""
    counts: Counter[str] = Counter()
    for weights in headers:
        for entry in weights.tensors:
            counts[entry.dtype] += entry.numel
    floats = Counter({code: n for code, n in counts.items() if code in _CONVERTIBLE})
    return _DTYPE_NAMES[(floats or counts).most_common(1)[0][0]]


def _move_into_place(staging: Path, destination: Path, force: bool) -> None:
    """Rename the finished bundle to ``destination``, replacing the old one if ``force``."""
    replaced: Path | None = None
    if destination.exists() or destination.is_symlink():
        if not force:  # appeared while we were writing
            raise InvalidArgument(str(destination), "already exists; pass --force to replace it")
        replaced = staging_name(destination, "replaced")
        os.rename(destination, replaced)
    try:
        os.rename(staging, destination)
    except BaseException:
        if replaced is not None:
            os.rename(replaced, destination)
        raise
    _fsync(destination.parent)
    if replaced is not None:
        if replaced.is_dir() and not replaced.is_symlink():
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            replaced.unlink()


# -- file writing ------------------------------------------------------------------


class _HashingWriter:
    """A binary sink that hashes and counts what passes through it."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)

    def entry(self) -> dict[str, Any]:
        """The manifest entry for what was written."""
        return {"sha256": self.digest.hexdigest(), "size": self.size}


def _open_source(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read ({exc.strerror or exc})") from None


def _read(reader: BinaryIO, count: int, path: Path) -> bytes:
    try:
        return reader.read(count)
    except OSError as exc:
        raise ModelLoadError(path, f"read error ({exc.strerror or exc})") from None


def _write_bytes(target: Path, data: bytes) -> dict[str, Any]:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _fsync(path: Path) -> None:
    """Flush a file or directory entry so a rename after it is durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- weights -----------------------------------------------------------------------


def _write_weights(headers: list[WeightFile], target: Path, dtype: str | None) -> dict[str, Any]:
    """Merge all shards into one safetensors file, one tensor (or chunk) in memory at a time.

    The output header is computed from the input headers alone, so the data
    can then be streamed straight through: copied byte for byte, or converted
    chunk by chunk when ``dtype`` asks for another float type.
    """
    plan: list[tuple[Path, TensorEntry, str]] = []
    header: dict[str, Any] = {"__metadata__": headers[0].metadata or {"format": "pt"}}
    offset = 0
    for weights in headers:
        for entry in weights.tensors:
            out_dtype = dtype if dtype and entry.dtype in _CONVERTIBLE else entry.dtype
            nbytes = entry.numel * SAFETENSORS_DTYPE_BITS[out_dtype] // 8 if out_dtype != entry.dtype else entry.end - entry.start
            header[entry.name] = {"dtype": out_dtype, "shape": list(entry.shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            plan.append((weights.path, entry, out_dtype))
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned, as safetensors writes it

    with target.open("wb") as handle:
        writer = _HashingWriter(handle)
        writer.write(struct.pack("<Q", len(encoded)))
        writer.write(encoded)
        open_path: Path | None = None
        reader: BinaryIO | None = None
        try:
            for path, entry, out_dtype in plan:
                if path != open_path:  # shards are consumed one after another
                    if reader is not None:
                        reader.close()
                    reader, open_path = _open_source(path), path
                reader.seek(entry.start)
                if out_dtype == entry.dtype:
                    _copy_range(reader, writer, entry.end - entry.start, path)
                else:
                    _convert_range(reader, writer, entry, out_dtype, path)
        finally:
            if reader is not None:
                reader.close()
        handle.flush()
        os.fsync(handle.fileno())
    read_safetensors_header(target)  # self-check: the file we wrote parses and tiles exactly
    return writer.entry()


#: NumPy dtype -> safetensors code, for weights that arrive as arrays.
_ARRAY_CODES = {
    np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("int16"): "I16", np.dtype("int32"): "I32",
    np.dtype("int64"): "I64", np.dtype("bool"): "BOOL",
}


def _write_arrays(checkpoint: Checkpoint, target: Path, dtype: str | None) -> tuple[dict[str, Any], list[WeightFile]]:
    """One safetensors file from ``checkpoint.tensors("np")``, one tensor in memory at a time.

    The header must precede the data but the shapes are only known as tensors
    arrive, so the data goes to a side file first and is appended after the header.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data_path = target.with_name(f".{target.name}.data")
    offset = 0
    try:
        with data_path.open("wb") as data:
            for name, array in checkpoint.tensors("np"):
                array = np.ascontiguousarray(array)
                code = _ARRAY_CODES.get(array.dtype)
                if code is None:
                    raise ModelLoadError(checkpoint.path, f"tensor {name!r} has dtype {array.dtype}, which a bundle cannot hold")
                if dtype and code in _CONVERTIBLE:
                    raw, code = _encode_floats(array.reshape(-1), dtype), dtype
                else:
                    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
                if name in header:
                    raise ModelLoadError(checkpoint.path, f"tensor {name!r} appears twice")
                header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
                data.write(raw)
                offset += len(raw)
        if offset == 0:
            raise ModelLoadError(checkpoint.path, "contains no tensors")
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)
        with target.open("wb") as handle, data_path.open("rb") as data:
            writer = _HashingWriter(handle)
            writer.write(struct.pack("<Q", len(encoded)))
            writer.write(encoded)
            while chunk := data.read(CHUNK_BYTES):
                writer.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        data_path.unlink(missing_ok=True)
    return writer.entry(), [read_safetensors_header(target)]


def _read_exact(reader: BinaryIO, count: int, path: Path) -> bytes:
    data = _read(reader, count, path)
    if len(data) != count:
        raise ModelLoadError(path, "file shrank while it was being read")
    return data


def _copy_range(reader: BinaryIO, writer: _HashingWriter, count: int, path: Path) -> None:
    while count:
        chunk = _read_exact(reader, min(count, CHUNK_BYTES), path)
        writer.write(chunk)
        count -= len(chunk)


def _convert_range(reader: BinaryIO, writer: _HashingWriter, entry: TensorEntry, out_dtype: str, path: Path) -> None:
    """Convert one float tensor elementwise, :data:`CHUNK_BYTES` of float32 at a time."""
    in_size = SAFETENSORS_DTYPE_BITS[entry.dtype] // 8
    per_chunk = CHUNK_BYTES // 4
    remaining = entry.numel
    while remaining:
        count = min(remaining, per_chunk)
        values = _decode_floats(_read_exact(reader, count * in_size, path), entry.dtype)
        writer.write(_encode_floats(values, out_dtype))
        remaining -= count


def _decode_floats(raw: bytes, code: str) -> np.ndarray:
    """Little-endian float bytes -> float32 (float64 kept wide until encoding)."""
    if code == "BF16":
        # bfloat16 is the top half of a float32: shift the bits back into place.
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[code])


def _encode_floats(values: np.ndarray, code: str) -> bytes:
    """float array -> little-endian bytes of ``code``, rounding to nearest even like torch."""
    with np.errstate(over="ignore"):  # out-of-range values become inf, as in torch
        if code == "F32":
            return values.astype("<f4").tobytes()
        if code == "F16":
            return values.astype("<f2").tobytes()
        bits = values.astype("<f4").view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    # Rounding could carry a NaN's payload into the exponent (or to zero): use quiet NaN.
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) & 0x8000 | 0x7FC0).astype("<u2")
    return rounded.tobytes()
