"""onnxruntime: the ONNX bundle format and the backend that serves it with no torch installed.

A bundle whose ``manifest.json`` has an ``onnx`` section (what ``agentd
export`` writes) is claimed here and served under the pseudo-architecture
``onnx:<architecture>`` (e.g. ``onnx:LlamaForCausalLM``). Only numpy and
onnxruntime are imported, and only when a model is loaded.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Callable

from agentd.backend import Backend, BackendSpec
from agentd.checkpoint import Checkpoint
from agentd.directory_checkpoint import DirectoryCheckpoint
from agentd.hookspecs import hookimpl
from agentd.manifest import MANIFEST_FILE, read_manifest, verify_manifest

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
    "BertForTokenClassification",
)


class OnnxBundle(DirectoryCheckpoint):
    """An exported bundle: the model's own architecture, served by this backend."""

    @cached_property
    def architecture(self) -> str:
        return ARCHITECTURE_PREFIX + super().architecture

    @property
    def source_architecture(self) -> str:
        """The architecture the graphs were exported from, e.g. ``LlamaForCausalLM``."""
        return self.architecture.removeprefix(ARCHITECTURE_PREFIX)


@hookimpl
def open_checkpoint(path: Path) -> Checkpoint | None:
    if not (path.is_dir() and (path / MANIFEST_FILE).is_file()) or "onnx" not in read_manifest(path):
        return None
    return OnnxBundle(path, format="onnx", manifest=verify_manifest(path))


def _load(checkpoint: Checkpoint, quant: str) -> Backend:
    from agentd.plugins.onnxrt.session import load

    return load(checkpoint)  # quant is the bundle's own: fixed when it was exported (spec: quantizations=())


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="onnxrt",
            architectures=tuple(ARCHITECTURE_PREFIX + arch for arch in SERVED),
            load=_load,
            quantizations=(),
            requires=("onnxruntime",),
            description="onnxruntime over an exported ONNX bundle (no torch; KV cache updated in place, SSM/RWKV state as graph I/O)",
        )
    )
