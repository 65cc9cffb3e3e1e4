"""ONNX exporter plugin: ``agentd export --target onnx`` for every architecture agentd serves.

Registered through the ``register_exporters`` hook like any third-party
exporter. onnx, onnxruntime's quantisers and torch (to read the weights with
agentd's own loaders) are imported only when an export runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from agentd.checkpoint import Checkpoint
from agentd.exporter_registry import ExporterSpec, ExportOptions, Progress
from agentd.hookspecs import hookimpl

QUANTIZATIONS = ("fp32", "fp16", "int8", "int4")


def _export(checkpoint: Checkpoint, out: Path, options: ExportOptions, progress: Progress) -> Path:
    from agentd.exporters.onnx.export import export_onnx

    return export_onnx(checkpoint, out, options, progress)


@hookimpl
def register_exporters(register: Callable[[ExporterSpec], None]) -> None:
    register(
        ExporterSpec(
            name="onnx-decoder",
            target="onnx",
            architectures=("LlamaForCausalLM", "Qwen2ForCausalLM"),
            export=_export,
            quantizations=QUANTIZATIONS,
            description="Llama-family decoder: one GroupQueryAttention graph with explicit KV cache, genai_config.json",
        )
    )
    register(
        ExporterSpec(
            name="onnx-mamba",
            target="onnx",
            architectures=("MambaForCausalLM",),
            export=_export,
            quantizations=QUANTIZATIONS,
            description="Mamba selective SSM: Scan-based recurrence with explicit conv and ssm state I/O",
        )
    )
    register(
        ExporterSpec(
            name="onnx-mamba2",
            target="onnx",
            architectures=("Mamba2ForCausalLM",),
            export=_export,
            quantizations=QUANTIZATIONS,
            description="Mamba-2 SSD: Scan-based recurrence with explicit conv and (heads, P, N) ssm state I/O",
        )
    )
    register(
        ExporterSpec(
            name="onnx-rwkv",
            target="onnx",
            architectures=("RwkvForCausalLM", "Rwkv7ForCausalLM"),
            export=_export,
            quantizations=QUANTIZATIONS,
            description="RWKV-4 / RWKV-7: Scan-based WKV with explicit token-shift and wkv state I/O",
        )
    )
    register(
        ExporterSpec(
            name="onnx-encoder",
            target="onnx",
            architectures=("BertModel", "BertForTokenClassification"),
            export=_export,
            quantizations=QUANTIZATIONS,
            description="BERT-family sentence encoder: pooled, normalised embeddings (and per-token label logits)",
        )
    )
