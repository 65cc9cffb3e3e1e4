"""Path -> checkpoint: whichever format plugin claims the path opens it.

``load_model``, ``agentd import``, ``agentd export`` and the server open models
only through :func:`open_checkpoint`; each format (Hugging Face directory,
agentd bundle, ONNX bundle, GGUF, RWKV ``.pth``) is a plugin implementing the
``open_checkpoint`` hook, so core holds no format special case.
"""

from __future__ import annotations

from pathlib import Path

from agentd.checkpoint import Checkpoint
from agentd.errors import ModelLoadError, NotFound
from agentd.plugin_manager import load_plugins


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``, opened by the first format plugin that claims it."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise NotFound(f"{path}: no such model file or directory")
    try:
        checkpoint = load_plugins().hook.open_checkpoint(path=resolved)
    except PermissionError as exc:
        raise ModelLoadError(resolved, f"cannot read ({exc.strerror or exc})") from None
    if checkpoint is None:
        kind = "directory" if resolved.is_dir() else "file"
        raise ModelLoadError(resolved, f"not a model {kind} any installed format reads ({known_formats()})")
    return checkpoint


def known_formats() -> str:
    """What the installed format plugins read, for error messages."""
    names = sorted(
        name for name, plugin in load_plugins().list_name_plugin()
        if plugin is not None and hasattr(plugin, "open_checkpoint")
    )
    return "format plugins: " + (", ".join(names) or "none")
