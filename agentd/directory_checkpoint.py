"""A model directory in the Hugging Face layout: a checkpoint or an agentd bundle.

``config.json``, ``*.safetensors`` (single, or sharded with its index),
``tokenizer.json``, ``tokenizer_config.json``, ``generation_config.json``. A
bundle adds ``manifest.json``, which the ``bundle`` format verifies before it
hands the directory over (see :mod:`agentd.manifest`).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from agentd.checkpoint import Checkpoint, Framework
from agentd.errors import ModelLoadError, NotFound
from agentd.safetensors_header import (
    NUMPY_DTYPES,
    SHARD_INDEX,
    SINGLE_WEIGHTS,
    WeightFile,
    read_safetensors_header,
)


class DirectoryCheckpoint(Checkpoint):
    """Files of one model directory; weights are read lazily from safetensors."""

    def __init__(self, path: str | Path, *, format: str = "hf", manifest: dict[str, Any] | None = None):
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            raise NotFound(f"{path}: no such model directory")
        if not self.path.is_dir():
            raise ModelLoadError(path, "not a directory (expected a checkpoint or bundle directory)")
        self.format = format
        self.manifest = manifest

    # -- files ---------------------------------------------------------------
    def file(self, relative: str, *, required: bool = True) -> Path | None:
        """Resolve ``relative`` inside the directory; refuse paths that escape it."""
        candidate = (self.path / relative).resolve()
        if not candidate.is_relative_to(self.path):
            raise ModelLoadError(self.path / relative, "path points outside the model directory")
        if not candidate.is_file():
            if required:
                raise ModelLoadError(candidate, "required file is missing")
            return None
        return candidate

    def read_text(self, relative: str) -> str | None:
        path = self.file(relative, required=False)
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(path, f"unreadable ({exc})") from None

    # -- weights -------------------------------------------------------------
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

        weight_map = self.read_json(SHARD_INDEX, required=True).get("weight_map")  # type: ignore[union-attr]
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

    @property
    def weight_bytes(self) -> int:
        return sum(entry.end - entry.start for weights in self.weight_headers for entry in weights.tensors)

    @property
    def stored_quant(self) -> str:
        """An exported bundle's weight encoding (its manifest says), else ``fp32``."""
        onnx = (self.manifest or {}).get("onnx")
        return str(onnx.get("quantization", "fp32")) if isinstance(onnx, dict) else "fp32"

    def tensors(self, framework: Framework = "pt") -> Iterator[tuple[str, Any]]:
        from safetensors import SafetensorError, safe_open

        if framework == "np":
            for weights in self.weight_headers:
                for entry in weights.tensors:
                    if entry.dtype not in NUMPY_DTYPES:
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
