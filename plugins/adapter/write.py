"""``write_adapter``: save fine-tuned tensors as an adapter directory, all at once.

The files are written into a hidden staging directory next to ``out_dir``,
opened as an adapter there (so a shape that does not fit the base fails before
anything is replaced), then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentd.errors import InvalidArgument

from .checkpoint import ADAPTER_CONFIG, ADAPTER_FORMAT, ADAPTER_VERSION, AdapterCheckpoint

#: The tensor file ``write_adapter`` writes.
TENSORS_FILE = "adapter.safetensors"


def write_adapter(
    out_dir: str | Path,
    base_model: str | Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, Any],
    *,
    overwrite: bool = True,
) -> Path:
    """Write an adapter over ``base_model`` to ``out_dir``; returns its absolute path.

    ``base_model`` is a default model's name (``all-minilm-l6-v2``) or a path,
    stored as given (a relative path is read relative to ``out_dir``).
    ``config`` is the composed model's full ``config.json``; ``tensors`` maps
    Hugging Face names (``classifier.weight``, ``bert.encoder.layer.5...``) to
    NumPy arrays or torch tensors. An existing adapter at ``out_dir`` is
    replaced when ``overwrite``; any other existing path is refused.
    """
    destination = Path(out_dir).expanduser().absolute()
    if destination.exists() and not (overwrite and (destination / ADAPTER_CONFIG).is_file()):
        why = "is not an adapter directory" if overwrite else "already exists"
        raise InvalidArgument("out_dir", f"{destination} {why}; refusing to replace it")
    if not tensors:
        raise InvalidArgument("tensors", "is empty: an adapter carries at least one tensor")
    if not isinstance(config.get("architectures"), list):
        raise InvalidArgument("config", "needs an 'architectures' list (the composed model's full config.json)")

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.writing")
    staging.mkdir()
    try:
        settings = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "base_model": str(base_model), "tensors": TENSORS_FILE}
        _write_json(staging / ADAPTER_CONFIG, settings)
        _write_json(staging / "config.json", dict(config))
        _save_tensors(tensors, staging / TENSORS_FILE)
        AdapterCheckpoint(staging)  # checks the base resolves and every shape fits it
        _replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_tensors(tensors: Mapping[str, Any], path: Path) -> None:
    """NumPy arrays through ``safetensors.numpy``; anything with torch tensors through ``safetensors.torch``."""
    if all(hasattr(value, "__array_interface__") for value in tensors.values()):
        import numpy as np
        from safetensors.numpy import save_file

        save_file({name: np.ascontiguousarray(value) for name, value in tensors.items()}, str(path))
        return
    import torch
    from safetensors.torch import save_file as save_torch

    converted = {
        name: (value if isinstance(value, torch.Tensor) else torch.from_numpy(value)).detach().cpu().contiguous()
        for name, value in tensors.items()
    }
    save_torch(converted, str(path))


def _replace(staging: Path, destination: Path) -> None:
    """Rename ``staging`` to ``destination``; an old adapter there is moved aside first, then removed."""
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.replaced")
        os.rename(destination, old)
    try:
        os.rename(staging, destination)
    except BaseException:
        if old is not None:
            os.rename(old, destination)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
