"""agentd: a plugin-based inference server for on-device personal agents."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path):  # noqa: ANN001 - documented in agentd.model
    """Load a Hugging Face checkpoint directory or an agentd bundle (see :mod:`agentd.model`)."""
    from agentd.model import load_model as _load_model

    return _load_model(path)
