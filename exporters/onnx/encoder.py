"""The BERT-family sentence encoder as one ONNX graph: token ids in, pooled embedding out
(and, for a ``BertForTokenClassification``, per-token label logits).

Built with ``onnx.helper`` on onnxruntime's fused CPU kernels::

    word + position + type embeddings ─ LayerNorm ─┬─ Attention (fused QKV, key padding mask)
                                                   └─ SkipLayerNorm(+bias) ─ MatMul ─ act ─ MatMul ─ SkipLayerNorm(+bias) ...
    ... ─ pooling over real tokens (mean / cls / max / mean_sqrt_len) ─ [L2 normalise] ─ sentence_embedding
        └─ [token classifier] MatMul ─ Add ─ token_logits (batch, sequence, labels)

The weights, pooling mode and normalisation come from agentd's own BERT loader
(:mod:`agentd.plugins.transformer.bert`), so the graph computes what the torch
backend computes. Inputs are a right-padded batch: ``input_ids`` and
``attention_mask`` (1 at real tokens), both ``(batch, sequence)`` int64.
A token classifier's manifest section lists its ``labels`` (in id order); its
head's MatMul stays float32 under ``--quant int8/int4`` (it is tiny, and it is
where labels are decided).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agentd.checkpoint import Checkpoint
from agentd.errors import UnsupportedArchitecture

from .graph import CONTRIB, GraphBuilder

ARCHITECTURES = ("BertModel", "BertForTokenClassification")
#: The token-classification head's MatMul (kept float32 by the quantiser).
CLASSIFIER_MATMUL = "/classifier/MatMul"
#: ``torch.finfo(torch.float32).min``: what max pooling fills padding with.
_FLOAT32_MIN = float(np.finfo(np.float32).min)


def build_encoder_graph(checkpoint: Checkpoint, *, weight_dtype: str) -> tuple[Any, dict[str, Any]]:
    """The encoder ModelProto and the manifest's description of it."""
    from agentd.plugins.transformer.bert import load

    backend = load(checkpoint)
    encoder = backend.encoder
    config = encoder.config
    weights = {name: tensor.detach().float().numpy() for name, tensor in encoder.state_dict().items()}
    hidden, eps = config.hidden_size, float(config.layer_norm_eps)

    g = GraphBuilder("agentd_encoder", weight_dtype)
    input_ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    attention_mask = g.input("attention_mask", "int64", ["batch_size", "sequence_length"])

    words = g.node("Gather", [g.weight("embeddings.word_embeddings.weight", weights["word_embeddings.weight"]), input_ids], name="/embeddings/word/Gather", axis=0)
    length = g.node("Shape", [input_ids], name="/embeddings/length/Shape", start=1, end=2)  # [T]
    position_table = g.param("embeddings.position_embeddings.weight", weights["position_embeddings.weight"])
    # The first T rows of the table: positions 0..T-1 (a Slice, which ORT's fusions leave intact).
    position_vectors = g.node("Slice", [position_table, g.const_i64([0]), length, g.const_i64([0])], name="/embeddings/position/Slice")  # (T, C)
    # Single-segment input: every token has type 0, so its embedding is one constant row.
    type_row = weights["token_type_embeddings.weight"][0]
    x = g.node("Add", [words, position_vectors], name="/embeddings/Add")
    x = g.node("Add", [x, g.param("embeddings.token_type_embeddings.row0", type_row)], name="/embeddings/type/Add")
    x = g.node(
        "LayerNormalization",
        [x, g.param("embeddings.LayerNorm.weight", weights["embedding_norm.weight"]), g.param("embeddings.LayerNorm.bias", weights["embedding_norm.bias"])],
        name="/embeddings/LayerNorm",
        axis=-1,
        epsilon=eps,
    )
    mask_index = g.node("Cast", [attention_mask], name="/attention_mask/Cast", to=6)  # int32 raw (B, T) mask

    for i in range(config.num_hidden_layers):
        p, base = f"layers.{i}.", f"/encoder/layer.{i}"

        def w(name: str) -> np.ndarray:
            return weights[p + name]

        attended = g.node(
            "Attention",
            [x, g.weight(f"{base}/attention/qkv.weight", w("qkv.weight").T), g.param(f"{base}/attention/qkv.bias", w("qkv.bias")), mask_index],
            name=f"{base}/attention/Attention",
            domain=CONTRIB,
            num_heads=config.num_attention_heads,
        )  # (B, T, C)
        projected = g.node("MatMul", [attended, g.weight(f"{base}/attention/output.weight", w("attention_out.weight").T)], name=f"{base}/attention/output/MatMul")
        x = _skip_layer_norm(g, f"{base}/attention/output/SkipLayerNorm", projected, x, w, "attention_norm", "attention_out.bias", eps)
        inner = g.node("MatMul", [x, g.weight(f"{base}/intermediate.weight", w("intermediate.weight").T)], name=f"{base}/intermediate/MatMul")
        inner = g.node("Add", [inner, g.param(f"{base}/intermediate.bias", w("intermediate.bias"))], name=f"{base}/intermediate/Add")
        inner = _activation(g, f"{base}/intermediate/act", inner, config.hidden_act)
        out = g.node("MatMul", [inner, g.weight(f"{base}/output.weight", w("output.weight").T)], name=f"{base}/output/MatMul")
        x = _skip_layer_norm(g, f"{base}/output/SkipLayerNorm", out, x, w, "output_norm", "output.bias", eps)

    pooled = _pool(g, x, attention_mask, backend.pooling)
    if backend.normalize:
        pooled = g.node("LpNormalization", [pooled], name="/pooling/LpNormalization", axis=-1, p=2)
    g.node("Identity", [pooled], name="/output/Identity", outputs=["sentence_embedding"])
    g.output("sentence_embedding", "float32", ["batch_size", hidden])
    labels = backend.info.labels
    if backend.classifier is not None:
        head = {name: tensor.detach().float().numpy() for name, tensor in backend.classifier.state_dict().items()}
        logits = g.node("MatMul", [x, g.weight("classifier.weight", head["weight"].T)], name=CLASSIFIER_MATMUL)
        g.node("Add", [logits, g.param("classifier.bias", head["bias"])], name="/classifier/Add", outputs=["token_logits"])
        g.output("token_logits", "float32", ["batch_size", "sequence_length", len(labels)])

    description = {
        "kind": "encoder",
        "pooling": backend.pooling,
        "normalize": backend.normalize,
        "embedding_dim": hidden,
        "vocab_size": config.vocab_size,
        "context_length": config.max_position_embeddings,
        "parameters": backend.info.parameters,
        "state": [],
    }
    if labels:
        description["labels"] = list(labels)
        description["keep_float32_nodes"] = [CLASSIFIER_MATMUL]
    return g.model("agentd"), description


def _skip_layer_norm(g: GraphBuilder, name: str, sublayer: str, residual: str, w: Any, norm: str, bias: str, eps: float) -> str:
    """``LayerNorm(residual + sublayer + bias)`` in one fused contrib op."""
    key = name.lstrip("/").replace("/", ".")
    inputs = [sublayer, residual, g.param(f"{key}.gamma", w(f"{norm}.weight")), g.param(f"{key}.beta", w(f"{norm}.bias")), g.param(f"{key}.bias", w(bias))]
    return g.node("SkipLayerNormalization", inputs, name=name, domain=CONTRIB, epsilon=eps)


def _activation(g: GraphBuilder, name: str, x: str, kind: str) -> str:
    if kind == "gelu":
        return g.node("Gelu", [x], name=f"{name}/Gelu", approximate="none")
    if kind in ("gelu_new", "gelu_pytorch_tanh"):
        return g.node("Gelu", [x], name=f"{name}/Gelu", approximate="tanh")
    if kind == "relu":
        return g.node("Relu", [x], name=f"{name}/Relu")
    if kind in ("silu", "swish"):
        return g.node("Mul", [x, g.node("Sigmoid", [x], name=f"{name}/Sigmoid")], name=f"{name}/Mul")
    raise UnsupportedArchitecture(kind, f"activation {kind!r} has no ONNX export")


def _pool(g: GraphBuilder, hidden: str, attention_mask: str, mode: str) -> str:
    """Sentence vectors ``(B, C)`` from hidden states ``(B, T, C)`` over real tokens."""
    if mode == "cls":
        return g.node("Gather", [hidden, g.const_i64(0)], name="/pooling/cls/Gather", axis=1)
    weights = g.node("Cast", [attention_mask], name="/pooling/mask/Cast", to=1)
    weights = g.node("Unsqueeze", [weights, g.const_i64([-1])], name="/pooling/mask/Unsqueeze")  # (B, T, 1)
    if mode == "max":
        real = g.node("Cast", [weights], name="/pooling/mask/Bool", to=9)
        filled = g.node("Where", [real, hidden, g.const_f32(_FLOAT32_MIN)], name="/pooling/max/Where")
        return g.node("ReduceMax", [filled, g.const_i64([1])], name="/pooling/max/ReduceMax", keepdims=0)
    masked = g.node("Mul", [hidden, weights], name="/pooling/mean/Mul")
    summed = g.node("ReduceSum", [masked, g.const_i64([1])], name="/pooling/mean/ReduceSum", keepdims=0)  # (B, C)
    counts = g.node("ReduceSum", [weights, g.const_i64([1])], name="/pooling/count/ReduceSum", keepdims=0)  # (B, 1)
    counts = g.node("Max", [counts, g.const_f32(1e-9)], name="/pooling/count/Clamp")
    if mode == "mean_sqrt_len":
        counts = g.node("Sqrt", [counts], name="/pooling/count/Sqrt")
    return g.node("Div", [summed, counts], name="/pooling/mean/Div")
