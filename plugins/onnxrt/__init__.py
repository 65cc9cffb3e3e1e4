"""onnxruntime backend: serves bundles made by ``agentd export`` with no torch installed.

A bundle whose ``manifest.json`` has an ``onnx`` section is served under the
pseudo-architecture ``onnx:<architecture>`` (e.g. ``onnx:LlamaForCausalLM``);
:func:`agentd.load_model` picks that name for such bundles. Only numpy and
onnxruntime are imported, and only when a model is loaded.
"""

from __future__ import annotations

from typing import Callable

from agentd.backend import Backend, BackendSpec
from agentd.checkpoint import Checkpoint
from agentd.hookspecs import hookimpl

#: Prefix of the architecture names this backend serves.
ARCHITECTURE_PREFIX = "onnx:"
SERVED = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "MambaForCausalLM",
    "Mamba2ForCausalLM",
    "RwkvForCausalLM",
    "Rwkv7ForCausalLM",
    "BertModel",
)


def onnx_architecture(checkpoint: Checkpoint) -> str | None:
    """``onnx:<architecture>`` for an exported bundle, else None."""
    if checkpoint.manifest is not None and "onnx" in checkpoint.manifest:
        return ARCHITECTURE_PREFIX + checkpoint.architecture
    return None


def _load(checkpoint: Checkpoint) -> Backend:
    from agentd.plugins.onnxrt.session import load

    return load(checkpoint)


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="onnxrt",
            architectures=tuple(ARCHITECTURE_PREFIX + arch for arch in SERVED),
            load=_load,
            description="onnxruntime over an exported ONNX bundle (no torch; KV cache updated in place, SSM/RWKV state as graph I/O)",
        )
    )
