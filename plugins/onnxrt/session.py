"""Open an exported bundle: check its ``onnx`` manifest section and start an onnxruntime session.

Torch-free by construction: this module and the backends it builds import
numpy, onnxruntime and agentd's torch-free core only.
"""

from __future__ import annotations

from typing import Any

from agentd.backend import Backend
from agentd.checkpoint import Checkpoint
from agentd.errors import ModelLoadError
from agentd.threads import intra_op_threads

#: Newest ``onnx`` section layout this runtime reads.
SECTION_VERSION = 1


def load(checkpoint: Checkpoint) -> Backend:
    """The decoder or encoder backend for an exported bundle."""
    section = read_section(checkpoint)
    session = open_session(checkpoint, section)
    check_graph(checkpoint, section, session)
    if section["kind"] == "decoder" and section.get("cache") == "recurrent":
        from .recurrent import OnnxRecurrentBackend

        return OnnxRecurrentBackend(checkpoint, section, session)
    if section["kind"] == "decoder":
        from .decoder import OnnxDecoderBackend

        return OnnxDecoderBackend(checkpoint, section, session)
    from .encoder import OnnxEncoderBackend

    return OnnxEncoderBackend(checkpoint, section, session)


def read_section(checkpoint: Checkpoint) -> dict[str, Any]:
    """The manifest's ``onnx`` section, checked for what the runtime relies on."""
    manifest_path = checkpoint.path / "manifest.json"
    section = (checkpoint.manifest or {}).get("onnx")
    if not isinstance(section, dict):
        raise ModelLoadError(manifest_path, "no 'onnx' section (not a bundle made by agentd export)")
    version = section.get("format_version")
    if type(version) is not int or not 1 <= version <= SECTION_VERSION:
        raise ModelLoadError(manifest_path, f"'onnx.format_version' {version!r} is not supported (this agentd reads {SECTION_VERSION})")
    if section.get("kind") not in ("decoder", "encoder"):
        raise ModelLoadError(manifest_path, f"'onnx.kind' must be decoder or encoder, got {section.get('kind')!r}")
    graph = (section.get("graphs") or {}).get("model")
    if not isinstance(graph, dict) or not isinstance(graph.get("file"), str):
        raise ModelLoadError(manifest_path, "'onnx.graphs.model.file' is missing")
    if section.get("cache", "kv") not in ("kv", "recurrent"):
        raise ModelLoadError(manifest_path, f"'onnx.cache' must be kv or recurrent, got {section.get('cache')!r}")
    if section["kind"] == "encoder":
        required: tuple[str, ...] = ("embedding_dim", "vocab_size", "context_length", "parameters")
    elif section.get("cache") == "recurrent":  # state shapes come from 'onnx.state'
        required = ("num_hidden_layers", "vocab_size", "context_length", "parameters")
    else:
        required = ("num_hidden_layers", "num_key_value_heads", "head_dim", "vocab_size", "context_length", "parameters")
    for key in required:
        if type(section.get(key)) is not int or section[key] <= 0:
            raise ModelLoadError(manifest_path, f"'onnx.{key}' must be a positive integer")
    return section


def open_session(checkpoint: Checkpoint, section: dict[str, Any]) -> Any:
    """An ``InferenceSession`` on the bundle's graph (its sha256 already verified by Checkpoint)."""
    import onnxruntime as ort

    path = checkpoint.file(section["graphs"]["model"]["file"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The process's one thread setting (agentd.threads), shared with torch. Its
    # default on a 2-core box is one thread, what closed the decode gap to
    # onnxruntime-genai there (docs/bench_onnx.md): no pool to wake per kernel.
    options.intra_op_num_threads = intra_op_threads()
    options.log_severity_level = 3  # errors only: the overridable logits_to_keep initializer warns at every load
    # Idle worker threads sleep instead of spinning: on a phone (or any box where the
    # daemon shares few cores) spinning burns battery and starves the thread doing
    # the work; measured on 2 shared cores it made decode ~2x slower (docs/bench_onnx.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelLoadError(path, f"onnxruntime cannot load the graph ({exc})") from None


def check_graph(checkpoint: Checkpoint, section: dict[str, Any], session: Any) -> None:
    """Refuse a section whose sizes disagree with the graph or ``config.json``.

    The manifest holds every other file's sha256 but nothing covers the
    manifest itself, so a corrupted ``num_hidden_layers`` or ``vocab_size``
    would otherwise load and fail at the first run inside onnxruntime. The
    graph and ``config.json`` are hashed, so they are the reference here.
    """
    manifest_path = checkpoint.path / "manifest.json"
    inputs = {value.name: value.shape for value in session.get_inputs()}
    outputs = {value.name: value.shape for value in session.get_outputs()}

    def refuse(problem: str) -> ModelLoadError:
        return ModelLoadError(manifest_path, f"{problem}; the manifest does not describe its graph (corrupted?)")

    def expect_dim(key: str, shape: list[Any] | None, axis: int, what: str) -> None:
        value = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
        if isinstance(value, int) and value != section[key]:
            raise refuse(f"'onnx.{key}' is {section[key]} but {what} has {value}")

    for entry in section.get("state") or []:  # shapes without their batch axis; names as the graph has them
        if not isinstance(entry, dict) or entry.get("input") not in inputs or entry.get("output") not in outputs:
            raise refuse(f"'onnx.state' entry {entry!r} names no input and output of the graph")
        graph_shape, shape = inputs[entry["input"]], entry.get("shape")
        if not isinstance(shape, list) or len(shape) != len(graph_shape) or any(
            isinstance(want, int) and isinstance(have, int) and want != have for want, have in zip(shape, graph_shape)
        ):
            raise refuse(f"'onnx.state' shape {shape!r} of {entry['input']!r} is not the graph's {graph_shape}")
    if section["kind"] == "encoder":
        expect_dim("embedding_dim", outputs.get("sentence_embedding"), -1, "the graph's sentence_embedding")
        labels, classes = section.get("labels"), (outputs.get("token_logits") or [None])[-1]
        if isinstance(labels, list) and isinstance(classes, int) and labels and len(labels) != classes:
            raise refuse(f"'onnx.labels' has {len(labels)} labels but the graph's token_logits has {classes}")
    else:
        if "logits" not in outputs:
            raise refuse("the graph has no logits output")
        expect_dim("vocab_size", outputs["logits"], -1, "the graph's logits")
    if section["kind"] == "decoder" and section.get("cache", "kv") == "kv":
        layers = sum(1 for name in inputs if name.startswith("past_key_values.") and name.endswith(".key"))
        if layers != section["num_hidden_layers"]:
            raise refuse(f"'onnx.num_hidden_layers' is {section['num_hidden_layers']} but the graph has {layers} layers")
        for layer in range(layers):
            shape = inputs.get(f"past_key_values.{layer}.key")
            expect_dim("num_key_value_heads", shape, 1, f"layer {layer}'s key cache")
            expect_dim("head_dim", shape, 3, f"layer {layer}'s key cache")
    if section.get("cache", "kv") == "kv":  # the exporter took these from config.json (hashed): positions, vocabulary
        config = checkpoint.config
        for key, field in (("context_length", "max_position_embeddings"), ("vocab_size", "vocab_size")):
            if isinstance(config.get(field), int) and config[field] != section[key]:
                raise refuse(f"'onnx.{key}' is {section[key]} but config.json's {field} is {config[field]}")


def has_input(session: Any, name: str) -> bool:
    """Whether the graph takes ``name``: a plain input or an overridable initializer (an optional input)."""
    return any(value.name == name for value in (*session.get_inputs(), *session.get_overridable_initializers()))
