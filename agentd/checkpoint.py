"""A model on disk: a Hugging Face checkpoint directory or an agentd bundle.

Both share one layout (``config.json``, ``*.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``generation_config.json``); a bundle adds
``manifest.json`` (see :mod:`agentd.bundle`), which is verified on open.
Every problem is raised as :class:`ModelLoadError` naming the file.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from agentd.errors import ModelLoadError, NotFound

SINGLE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


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
        return self.read_json("config.json")  # type: ignore[return-value]

    @cached_property
    def architecture(self) -> str:
        archs = self.config.get("architectures")
        if not archs or not isinstance(archs, list) or not isinstance(archs[0], str):
            raise ModelLoadError(self.path / "config.json", "no 'architectures' entry")
        return archs[0]

    @cached_property
    def generation_config(self) -> dict[str, Any]:
        return self.read_json("generation_config.json", required=False) or {}

    @cached_property
    def weight_files(self) -> list[Path]:
        """The safetensors files, single or sharded (via the index)."""
        index_path = self.file(SHARD_INDEX, required=False)
        if index_path is not None:
            index = self.read_json(SHARD_INDEX)
            weight_map = index.get("weight_map")  # type: ignore[union-attr]
            if not isinstance(weight_map, dict) or not weight_map:
                raise ModelLoadError(index_path, "no 'weight_map' in shard index")
            return [self.file(name) for name in sorted(set(weight_map.values()))]  # type: ignore[misc]
        single = self.file(SINGLE_WEIGHTS, required=False)
        if single is not None:
            return [single]
        raise ModelLoadError(self.path / SINGLE_WEIGHTS, f"required file is missing (nor is there {SHARD_INDEX})")

    # -- weights -------------------------------------------------------------
    def tensors(self, framework: str = "pt") -> Iterator[tuple[str, Any]]:
        """Yield ``(name, tensor)`` for every weight; ``framework`` is ``pt`` or ``np``.

        A truncated or corrupt file raises ModelLoadError naming it.
        """
        from safetensors import SafetensorError, safe_open

        for path in self.weight_files:
            try:
                with safe_open(str(path), framework=framework) as handle:
                    for name in handle.keys():
                        yield name, handle.get_tensor(name)
            except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
                raise ModelLoadError(path, f"corrupt or truncated safetensors file ({exc})") from None

    def load_tensors(self, framework: str = "pt") -> dict[str, Any]:
        return dict(self.tensors(framework))
