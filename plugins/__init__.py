"""Built-in agentd plugins, installed as ``agentd.plugins``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from agentd.backend import Backend
    from agentd.checkpoint import Checkpoint


def packed_loader(module: str) -> Callable[["Checkpoint"], "Backend"]:
    """A ``BackendSpec.load`` that imports ``module`` lazily, loads, then packs the weights for serving.

    Packing happens after ``module.load`` because the ONNX exporter calls
    ``load`` itself and reads the dense ``(out, in)`` weights.
    """

    def load(checkpoint: "Checkpoint") -> "Backend":
        backend = importlib.import_module(module).load(checkpoint)
        backend.pack_weights()
        return backend

    return load
