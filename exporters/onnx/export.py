"""``export_onnx``: a checkpoint -> an agentd bundle carrying ONNX graphs, written atomically.

The bundle is the usual agentd layout (``config.json``, tokenizer files, chat
template, ``manifest.json`` with sizes and sha256 of every file) with the weights
replaced by ``model.onnx`` + ``model.onnx.data``, plus, for decoders,
``genai_config.json`` so onnxruntime-genai loads the same directory. The manifest
gains an ``onnx`` section the torch-free runtime (:mod:`agentd.plugins.onnxrt`)
reads::

    "onnx": {"format_version": 1, "quantization": "int4", "block_size": 32, "opset": 23,
             "kind": "decoder", "graphs": {"model": {"file": "model.onnx", "inputs": [...], "outputs": [...]}},
             "state": [{"input": "past_key_values.0.key", "output": "present.0.key", "dtype": "float32",
                        "shape": ["batch_size", 2, "past_sequence_length", 64], "sequence_axis": 2}, ...],
             "num_hidden_layers": 30, ...}

A fixed-state bundle's section (Mamba, Mamba-2, RWKV-4, RWKV-7) says
``"cache": "recurrent"`` and lists its state tensors (e.g. ``past_conv.i`` /
``past_ssm.i`` in, ``present_*`` out, shapes ``["batch_size", ...]``, an
optional ``initial`` value); it carries no ``genai_config.json``
(onnxruntime-genai serves transformer decoders only).

Everything is written into a hidden staging directory next to the output and
renamed into place at the end; any failure or interrupt removes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentd import __version__
from agentd.bundle import file_entry, write_atomically, write_json, write_support_files
from agentd.manifest import FORMAT, FORMAT_VERSION
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument
from agentd.exporter_registry import ExportOptions, Progress

from . import decoder, encoder, mamba, mamba2, rwkv4, rwkv7
from .graph import OPSET, save_model, value_infos

#: Version of the manifest's ``onnx`` section.
ONNX_SECTION_VERSION = 1
GRAPH_FILE = "model.onnx"
GENAI_CONFIG_FILE = "genai_config.json"
#: Manifest ``dtype`` of each ``--quant`` value.
QUANT_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8", "int4": "int4"}
STAGES = 5


def export_onnx(checkpoint: Checkpoint, out: Path, options: ExportOptions, progress: Progress) -> Path:
    """Write the ONNX bundle of ``checkpoint`` to ``out``; returns its path."""
    if options.quant not in QUANT_DTYPES:
        raise InvalidArgument("quant", f"must be one of {', '.join(QUANT_DTYPES)} (got {options.quant!r})")
    destination = write_atomically(
        checkpoint.path, out, options.force, lambda staging: _write_bundle(checkpoint, staging, options, progress), purpose="exporting"
    )
    progress("done", STAGES, STAGES)
    return destination


def _write_bundle(checkpoint: Checkpoint, staging: Path, options: ExportOptions, progress: Progress) -> dict[str, Any]:
    architecture = checkpoint.architecture
    weight_dtype = "float16" if options.quant == "fp16" else "float32"
    quantised = options.quant in ("int8", "int4")
    progress("loading weights and building the graph", 0, STAGES)
    if architecture in decoder.ARCHITECTURES:
        model, description = decoder.build_decoder_graph(
            checkpoint, weight_dtype=weight_dtype, separate_lm_head=quantised
        )
    elif architecture in mamba.ARCHITECTURES:
        model, description = mamba.build_mamba_graph(checkpoint, weight_dtype=weight_dtype, separate_lm_head=quantised)
    elif architecture in mamba2.ARCHITECTURES:
        model, description = mamba2.build_mamba2_graph(checkpoint, weight_dtype=weight_dtype, separate_lm_head=quantised)
    elif architecture in rwkv4.ARCHITECTURES:
        model, description = rwkv4.build_rwkv4_graph(checkpoint, weight_dtype=weight_dtype)
    elif architecture in rwkv7.ARCHITECTURES:
        model, description = rwkv7.build_rwkv7_graph(checkpoint, weight_dtype=weight_dtype)
    else:
        model, description = encoder.build_encoder_graph(checkpoint, weight_dtype=weight_dtype)
    keep_float32 = description.pop("keep_float32_nodes", [])
    tied = description.pop("tied_weights", None)  # (embedding, LM head) initializers of a tied model
    inputs, outputs = value_infos(model.graph.input), value_infos(model.graph.output)

    progress("saving the graph", 1, STAGES)
    graph_path = staging / GRAPH_FILE
    save_model(model, graph_path)
    del model  # the weights can be large; the quantiser reloads from disk
    # A 4-bit source (GGUF Q4_0, Q4_1, Q4_K) keeps its grid; re-quantising it would compound the error.
    keep_grid = checkpoint.stored_quant == "int4"
    int4_blocks = None
    if options.quant in ("int8", "int4"):
        from .quantize import quantize_model

        progress(f"quantising to {options.quant}", 2, STAGES)
        int4_blocks = quantize_model(graph_path, options.quant, options.block_size, keep_float32, tuple(tied) if tied else None, keep_grid)

    progress("writing tokenizer, configs and manifest", 3, STAGES)
    files = write_support_files(checkpoint, staging)
    if architecture in decoder.ARCHITECTURES:  # onnxruntime-genai loads transformer decoders only
        files[GENAI_CONFIG_FILE] = write_json(staging / GENAI_CONFIG_FILE, decoder.genai_config(checkpoint, description, GRAPH_FILE))
    progress("hashing", 4, STAGES)
    graph_files = sorted(path.name for path in staging.iterdir() if path.name.startswith(GRAPH_FILE))
    for name in graph_files:
        files[name] = file_entry(staging / name)

    section: dict[str, Any] = {
        "format_version": ONNX_SECTION_VERSION,
        "quantization": options.quant,
        "opset": OPSET,
        "providers": ["CPUExecutionProvider"],
        "graphs": {
            "model": {
                "file": GRAPH_FILE,
                "external_data": [name for name in graph_files if name != GRAPH_FILE],
                "inputs": inputs,
                "outputs": outputs,
            }
        },
        **description,
    }
    if options.quant == "int4":
        section["block_size"] = options.block_size
        # zero_point (a float source); symmetric (a kept Q4_0 grid); offset (a kept Q4_1 / Q4_K grid).
        section["int4_blocks"] = int4_blocks
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "dtype": QUANT_DTYPES[options.quant],
        "created_by": f"agentd {__version__}",
        "source": checkpoint.path.name,
        "parameters": description["parameters"],
        "files": dict(sorted(files.items())),
        "onnx": section,
    }

