"""Helpers for the ONNX export and onnxruntime-backend tests (import it; it is not a conftest).

Checkpoints are tiny random-weight models made with Hugging Face ``transformers``
(see :mod:`_llama_fixtures`); the exporter and the onnxrt backend are reached
through the plugin registries, exactly as ``agentd export`` / ``load_model`` do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agentd.backend import Backend
from agentd.formats import open_checkpoint
from agentd.exporter_registry import ExportOptions, exporter_for

ONNX_PLUGINS = (("onnx_export", "agentd.exporters.onnx"), ("onnxrt", "agentd.plugins.onnxrt"))


def register_onnx_plugins() -> None:
    """Make sure the exporter and runtime plugins are registered (entry points or, failing that, by hand)."""
    import importlib

    from agentd import exporter_registry, registry
    from agentd.plugin_manager import load_plugins, pm

    load_plugins()
    changed = False
    for name, module_name in ONNX_PLUGINS:
        module = importlib.import_module(module_name)
        if not pm.is_registered(module) and not pm.has_plugin(name):
            pm.register(module, name=name)
            changed = True
    if changed:
        registry.reset()
        exporter_registry.reset()


def export(src: Path, out: Path, quant: str = "fp32", block_size: int = 32, force: bool = False) -> Path:
    """Export ``src`` to ``out`` through the registered exporter (no progress output)."""
    register_onnx_plugins()
    checkpoint = open_checkpoint(src)
    spec = exporter_for("onnx", checkpoint.architecture)
    return spec.export(checkpoint, out, ExportOptions(quant=quant, block_size=block_size, force=force), lambda *_: None)


def onnx_backend(bundle: Path) -> Backend:
    """The onnxrt backend of an exported bundle, found as ``onnx:<architecture>`` in the registry."""
    from agentd.plugins.onnxrt import ARCHITECTURE_PREFIX
    from agentd.registry import spec_for

    register_onnx_plugins()
    checkpoint = open_checkpoint(bundle)
    architecture = checkpoint.architecture
    assert architecture.startswith(ARCHITECTURE_PREFIX), f"{bundle} has no onnx section"
    spec = spec_for(architecture)
    return spec.load(checkpoint, spec.choose_quant(checkpoint))


def teacher_forced_agreement(reference: Backend, candidate: Backend, prompt: list[int], tokens: list[int]) -> float:
    """Fraction of the positions of ``tokens`` (the reference's greedy output) where ``candidate``'s argmax agrees.

    Both models read the same text, so one early disagreement does not make every
    later position count as wrong (as a prefix-agreement count would).
    """
    ids = np.asarray(prompt + tokens[:-1], dtype=np.int64)
    ref = reference.prefill(ids, reference.new_state(), all_logits=True)[len(prompt) - 1 :]
    got = candidate.prefill(ids, candidate.new_state(), all_logits=True)[len(prompt) - 1 :]
    return float((ref.argmax(-1) == got.argmax(-1)).mean())


def prefix_agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy outputs share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
