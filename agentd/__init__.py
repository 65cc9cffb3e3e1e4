"""agentd: a plugin-based inference server for on-device personal agents."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path, quant=None):  # noqa: ANN001 - documented in agentd.model
    """Load a model in any format a plugin reads, computing in ``quant`` (``fp32``, ``int8``, ``int4``;
    None: the checkpoint's own encoding). See :func:`agentd.model.load_model`."""
    from agentd.model import load_model as _load_model

    return _load_model(path, quant)
