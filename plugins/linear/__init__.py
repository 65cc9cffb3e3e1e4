"""Linear-attention backends (RWKV-4, RWKV-7) and the RWKV-7 ``.pth`` format.

Both backends keep a fixed-size recurrent state per sequence instead of a KV
cache (``state_bytes_per_token == 0``). RWKV-7 checkpoints ship as ``.pth``
state dicts; the ``rwkv-pth`` format (:mod:`agentd.plugins.linear.pth_format`)
opens one directly, with the RWKV World tokenizer. Registered through the
``agentd`` entry-point group like any third-party plugin; torch is imported
only when a model is loaded or a ``.pth`` opened.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from agentd.backend import TORCH_QUANTS, BackendSpec
from agentd.checkpoint import Checkpoint
from agentd.errors import BackendUnavailable
from agentd.hookspecs import hookimpl
from agentd.plugins import packed_loader

#: What reading a ``.pth`` needs (``torch.load``); checked before anything is imported.
PTH_REQUIRES = ("torch",)


@hookimpl
def open_checkpoint(path: Path) -> Checkpoint | None:
    """Claim ``*.pth`` files in torch's zip serialisation; anything in one that is not
    an RWKV-7 state dict is a ModelLoadError naming the file."""
    from agentd.plugins.linear.pth_format import FORMAT, RwkvPthCheckpoint, is_pth_zip

    if not is_pth_zip(path):
        return None
    missing = [module for module in PTH_REQUIRES if importlib.util.find_spec(module) is None]
    if missing:
        raise BackendUnavailable(
            f"{path}: reading the {FORMAT} format needs {', '.join(missing)}, which is not installed"
        )
    return RwkvPthCheckpoint(path)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="rwkv4",
            architectures=("RwkvForCausalLM",),
            load=packed_loader("agentd.plugins.linear.rwkv4"),
            quantizations=TORCH_QUANTS,
            requires=("torch",),
            description="RWKV-4 linear attention (chunked-parallel prefill, fixed-size recurrent state)",
        )
    )
    register(
        BackendSpec(
            name="rwkv7",
            architectures=("Rwkv7ForCausalLM",),
            load=packed_loader("agentd.plugins.linear.rwkv7"),
            quantizations=TORCH_QUANTS,
            requires=("torch",),
            description="RWKV-7 'Goose' generalised delta rule (chunked prefill, fixed-size recurrent state)",
        )
    )
