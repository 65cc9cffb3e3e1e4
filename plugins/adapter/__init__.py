"""Adapters: a directory of fine-tuned tensors served over a base model (``adapter_config.json``).

A fine-tune that changes a few tensors of a model (a new classification
head, the top encoder layers) ships only those tensors, over a base model
already installed (e.g. the default MiniLM)::

    adapter_config.json   {"format": "agentd-adapter", "version": 1,
                           "base_model": "all-minilm-l6-v2", "tensors": "adapter.safetensors"}
    config.json           the composed model's full Hugging Face config
    adapter.safetensors   tensors under their Hugging Face names

``base_model`` is a path (relative to the adapter directory, or absolute) or
the name of a default model (:mod:`agentd.default_models`). The composed
:class:`~.checkpoint.AdapterCheckpoint` reads like any checkpoint, so
``agentd serve``, ``load_model`` and ``agentd export`` take an adapter
directory as they take a full one. :func:`~.write.write_adapter` writes one.
"""

from __future__ import annotations

from pathlib import Path

from agentd.checkpoint import Checkpoint
from agentd.hookspecs import hookimpl

from .checkpoint import ADAPTER_CONFIG, AdapterCheckpoint
from .write import write_adapter

__all__ = ["ADAPTER_CONFIG", "AdapterCheckpoint", "open_checkpoint", "write_adapter"]


@hookimpl
def open_checkpoint(path: Path) -> Checkpoint | None:
    if not (path.is_dir() and (path / ADAPTER_CONFIG).is_file()):
        return None
    return AdapterCheckpoint(path)
