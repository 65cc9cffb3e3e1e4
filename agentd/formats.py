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
from agentd.staging import is_staging


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``, opened by the first format plugin that claims it."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise NotFound(f"{path}: no such model file or directory")
    if is_staging(resolved):  # half an export or import, or the old copy a --force run set aside
        raise ModelLoadError(resolved, "is an unfinished export or import's staging copy, not a model")
    try:
        checkpoint = load_plugins().hook.open_checkpoint(path=resolved)
    except PermissionError as exc:
        raise ModelLoadError(resolved, f"cannot read ({exc.strerror or exc})") from None
    if checkpoint is None:
        kind = "directory" if resolved.is_dir() else "file"
        raise ModelLoadError(resolved, f"not a model {kind} any installed format reads ({known_formats()})")
    return checkpoint


def format_plugins() -> list[tuple[str, str]]:
    """``(plugin name, first line of its docstring)`` of every plugin implementing ``open_checkpoint``,
    in the order they are asked."""
    plugins = []
    for impl in reversed(load_plugins().hook.open_checkpoint.get_hookimpls()):  # pluggy calls the last first
        doc = (getattr(impl.plugin, "__doc__", None) or "").strip().splitlines()
        plugins.append((impl.plugin_name, doc[0] if doc else ""))
    return plugins


def known_formats() -> str:
    """What the installed format plugins read, for error messages."""
    return "format plugins: " + (", ".join(name for name, _ in format_plugins()) or "none")
