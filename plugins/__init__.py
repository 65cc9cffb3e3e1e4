"""Built-in agentd plugins, installed as ``agentd.plugins``."""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from agentd.backend import Backend
    from agentd.checkpoint import Checkpoint


def packed_loader(module: str) -> Callable[["Checkpoint", str], "Backend"]:
    """A ``BackendSpec.load`` that imports ``module`` lazily, loads, then prepares the weights for
    serving in the requested encoding (``backend.pack_weights(quant)``).

    Packing happens after ``module.load`` because the ONNX exporter calls
    ``load`` itself and reads the dense ``(out, in)`` weights.
    """

    def load(checkpoint: "Checkpoint", quant: str) -> "Backend":
        from agentd.plugins.quantized import QUANT_DTYPES

        backend = importlib.import_module(module).load(checkpoint)
        backend.pack_weights(quant)
        backend.info = dataclasses.replace(backend.info, dtype=QUANT_DTYPES[quant])
        return backend

    return load
