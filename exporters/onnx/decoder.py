"""The Llama-family decoder (Llama, Qwen2) as one ONNX graph with explicit KV-cache I/O.

Built node by node with ``onnx.helper`` in the layout onnxruntime-genai's model
builder emits for CPU, so ORT runs its fused contrib kernels:

    input_ids ─ Gather(embed) ─┬─ RMSNormalization ─ MatMul(qkv) [+bias] ─ GroupQueryAttention ─ MatMul(o)
                               │                          (rotary fused; past_key_values.i.* in, present.i.* out)
                               └─────────── SkipSimplifiedLayerNorm (residual add + norm) ─ MatMul(gate), MatMul(up)
                                            ─ x·sigmoid(x)·up ─ MatMul(down) ─ SkipSimplifiedLayerNorm (next layer) ...
    ... ─ SkipSimplifiedLayerNorm(final norm) ─ Slice(last logits_to_keep positions) ─ MatMul(lm_head) ─ logits

One graph serves a prefill chunk and a single-token decode: the sequence axis is
dynamic, ``attention_mask`` covers past + new tokens (GQA derives the KV lengths
from it) and ``position_ids`` give the rotary positions. The weights come from
agentd's own Llama loader (:mod:`agentd.plugins.transformer.llama`), so the
graph computes exactly what the torch backend does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agentd.checkpoint import Checkpoint
from agentd.errors import UnsupportedArchitecture

from .graph import CONTRIB, GraphBuilder
from .layers import np32

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
#: onnxruntime's CPU GroupQueryAttention kernel needs head sizes in multiples of 16.
HEAD_DIM_MULTIPLE = 16

PAST_KEY = "past_key_values.%d.key"
PAST_VALUE = "past_key_values.%d.value"
PRESENT_KEY = "present.%d.key"
PRESENT_VALUE = "present.%d.value"
#: Optional graph input (an initializer by default): how many trailing positions get logits.
LOGITS_TO_KEEP = "logits_to_keep"


def build_decoder_graph(checkpoint: Checkpoint, *, weight_dtype: str, separate_lm_head: bool) -> tuple[Any, dict[str, Any]]:
    """The decoder ModelProto and the manifest's description of its shape.

    ``separate_lm_head`` stores a tied LM head as its own transposed weight
    (quantisers only rewrite MatMuls over an initializer); otherwise a tied head
    is a Transpose of the embedding that ORT folds at load.
    """
    import torch

    from agentd.plugins.transformer.llama import LlamaConfig, LlamaModel, rope_inverse_frequencies

    config = LlamaConfig.from_hf(checkpoint.config, checkpoint.where("config.json"))
    if config.head_dim % HEAD_DIM_MULTIPLE:
        raise UnsupportedArchitecture(
            checkpoint.where("config.json"),
            f"head_dim {config.head_dim} is not a multiple of {HEAD_DIM_MULTIPLE} (onnxruntime GroupQueryAttention needs it)",
        )
    model = LlamaModel(config, checkpoint.path)
    model.load(checkpoint.tensors("pt"))

    c = config
    g = GraphBuilder("agentd_decoder", weight_dtype)
    input_ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    attention_mask = g.input("attention_mask", "int64", ["batch_size", "total_sequence_length"])
    position_ids = g.input("position_ids", "int64", ["batch_size", "sequence_length"])
    kv_shape_in = ["batch_size", c.num_key_value_heads, "past_sequence_length", c.head_dim]
    kv_shape_out = ["batch_size", c.num_key_value_heads, "total_sequence_length", c.head_dim]
    for i in range(c.num_hidden_layers):
        g.input(PAST_KEY % i, "float32", kv_shape_in)
        g.input(PAST_VALUE % i, "float32", kv_shape_in)

    # GQA wants per-row "last valid index" (seqlens_k) and the total length, both int32.
    mask_sum = g.node("ReduceSum", [attention_mask, g.const_i64([1])], name="/model/attn_mask/ReduceSum", keepdims=0)
    last_index = g.node("Sub", [mask_sum, g.const_i64(1)], name="/model/attn_mask/Sub")
    seqlens_k = g.node("Cast", [last_index], name="/model/attn_mask/seqlens_k", to=6)  # int32
    mask_shape = g.node("Shape", [attention_mask], name="/model/attn_mask/Shape")
    total = g.node("Gather", [mask_shape, g.const_i64(1)], name="/model/attn_mask/Gather", axis=0)
    total_len = g.node("Cast", [total], name="/model/attn_mask/total_seq_len", to=6)

    # Rotary tables exactly as the torch backend builds them, for every position of the context.
    inv_freq = rope_inverse_frequencies(c)
    angles = torch.outer(torch.arange(c.max_position_embeddings, dtype=torch.float32), inv_freq)  # (P, D/2)
    cos_cache = g.param("cos_cache", angles.cos().numpy())
    sin_cache = g.param("sin_cache", angles.sin().numpy())

    embed = g.weight("model.embed_tokens.weight", np32(model.embed))  # (V, C)
    x = g.node("Gather", [embed, input_ids], name="/model/embed_tokens/Gather", axis=0)  # (B, S, C)
    eps = float(c.rms_norm_eps)
    residual = x
    pending: str | None = None  # the sublayer output still to be added into the residual
    for i, layer in enumerate(model.layers):
        base = f"/model/layers.{i}"
        h, residual = _norm(g, f"{base}/input_layernorm", pending, residual, np32(layer.attn_norm), eps)
        qkv = _linear(g, f"{base}/attn/qkv_proj", h, np32(layer.qkv_weight), layer.qkv_bias, np32)
        attn, _, _ = g.node(
            "GroupQueryAttention",
            [qkv, "", "", PAST_KEY % i, PAST_VALUE % i, seqlens_k, total_len, cos_cache, sin_cache, position_ids],
            name=f"{base}/attn/GroupQueryAttention",
            outputs=[f"{base}/attn/GroupQueryAttention/output_0", PRESENT_KEY % i, PRESENT_VALUE % i],
            domain=CONTRIB,
            num_heads=c.num_attention_heads,
            kv_num_heads=c.num_key_value_heads,
            do_rotary=1,
            rotary_interleaved=0,
            scale=float(c.head_dim**-0.5),
        )
        attn_out = _linear(g, f"{base}/attn/o_proj", attn, np32(layer.o_weight), layer.o_bias, np32)
        h, residual = _norm(g, f"{base}/post_attention_layernorm", attn_out, residual, np32(layer.mlp_norm), eps)
        # Separate gate and up MatMuls, as the builder emits: measured faster than one
        # fused (C, 2I) MatMul + Split with ORT's CPU kernels (MatMulNBits above all).
        inter = c.intermediate_size
        gate_up_w, gate_up_b = np32(layer.gate_up_weight), layer.gate_up_bias  # (2I, C): gate rows, then up rows
        gate = _linear(g, f"{base}/mlp/gate_proj", h, gate_up_w[:inter], None if gate_up_b is None else gate_up_b[:inter], np32)
        up = _linear(g, f"{base}/mlp/up_proj", h, gate_up_w[inter:], None if gate_up_b is None else gate_up_b[inter:], np32)
        sigmoid = g.node("Sigmoid", [gate], name=f"{base}/mlp/act_fn/Sigmoid")
        silu = g.node("Mul", [gate, sigmoid], name=f"{base}/mlp/act_fn/Mul")
        product = g.node("Mul", [silu, up], name=f"{base}/mlp/Mul")
        pending = _linear(g, f"{base}/mlp/down_proj", product, np32(layer.down_weight), layer.down_bias, np32)
    final, _ = _norm(g, "/model/norm", pending, residual, np32(model.norm), eps)

    if c.tie_word_embeddings and not separate_lm_head:
        head = g.node("Transpose", [embed], name="/lm_head/Transpose", perm=[1, 0])  # (C, V)
    else:
        head = g.weight("lm_head.MatMul.weight", np32(model.lm_head).T)  # (C, V)
    # Only the last ``logits_to_keep`` positions reach the head (0 = all, the default
    # onnxruntime-genai gets as it never feeds the input): a prompt pays for one
    # vocabulary projection, not one per token, as transformers' generate does.
    keep = g.input(LOGITS_TO_KEEP, "int64", [1])
    g.initializer(LOGITS_TO_KEEP, np.zeros(1, dtype=np.int64))
    first = g.node("Neg", [keep], name="/lm_head/keep/Neg")
    kept = g.node(
        "Slice", [final, first, g.const_i64([np.iinfo(np.int64).max]), g.const_i64([1])], name="/lm_head/keep/Slice"
    )  # (B, K, C)
    g.node("MatMul", [kept, head], name="/lm_head/MatMul", outputs=["logits"])
    g.output("logits", "float32", ["batch_size", "logits_length", c.vocab_size])
    for i in range(c.num_hidden_layers):
        g.output(PRESENT_KEY % i, "float32", kv_shape_out)
        g.output(PRESENT_VALUE % i, "float32", kv_shape_out)

    description = {
        "kind": "decoder",
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_size": c.hidden_size,
        "vocab_size": c.vocab_size,
        "context_length": c.max_position_embeddings,
        "parameters": model.parameter_count(),
        # A tied head stored apart (for the quantisers) is shared again after int4.
        "tied_weights": ["model.embed_tokens.weight", "lm_head.MatMul.weight"] if c.tie_word_embeddings else None,
        "state": [
            {"input": names[0] % i, "output": names[1] % i, "dtype": "float32", "shape": kv_shape_in, "sequence_axis": 2}
            for i in range(c.num_hidden_layers)
            for names in ((PAST_KEY, PRESENT_KEY), (PAST_VALUE, PRESENT_VALUE))
        ],
    }
    return g.model("agentd"), description


def _norm(
    g: GraphBuilder, name: str, sublayer: str | None, residual: str, weight: np.ndarray, eps: float
) -> tuple[str, str]:
    """RMSNorm of ``residual + sublayer`` (just ``residual`` at the first layer); returns (normed, new residual)."""
    gamma = g.param(f"{name.lstrip('/').replace('/', '.')}.weight", weight)
    if sublayer is None:
        normed = g.node("RMSNormalization", [residual, gamma], name=f"{name}/RMSNorm", axis=-1, epsilon=eps, stash_type=1)
        return normed, residual
    out = g.node(
        "SkipSimplifiedLayerNormalization",
        [sublayer, residual, gamma],
        name=f"{name}/SkipLayerNorm",
        outputs=[f"{name}/SkipLayerNorm/output_0", "", "", f"{name}/SkipLayerNorm/output_3"],
        domain=CONTRIB,
        epsilon=eps,
    )
    return out[0], out[3]


def _linear(g: GraphBuilder, name: str, x: str, weight: np.ndarray, bias: Any, np32: Any) -> str:
    """``x @ weight.T (+ bias)``; weight stored transposed ``(in, out)`` as ORT's MatMul wants."""
    key = name.lstrip("/").replace("/", ".")
    y = g.node("MatMul", [x, g.weight(f"{key}.MatMul.weight", weight.T)], name=f"{name}/MatMul")
    if bias is not None:
        y = g.node("Add", [y, g.param(f"{key}.Add.bias", np32(bias))], name=f"{name}/Add")
    return y


def genai_config(checkpoint: Checkpoint, description: dict[str, Any], filename: str) -> dict[str, Any]:
    """``genai_config.json`` so onnxruntime-genai loads the bundle (fields as its builder writes them)."""
    config, generation = checkpoint.config, checkpoint.generation_config

    def token(name: str) -> Any:
        value = generation.get(name, config.get(name))
        return value if value is not None else (-1 if name != "eos_token_id" else [])

    eos = token("eos_token_id")
    pad = token("pad_token_id")
    if pad == -1:
        pad = eos[0] if isinstance(eos, list) and eos else eos if isinstance(eos, int) else 0
    context = description["context_length"]
    return {
        "model": {
            "bos_token_id": token("bos_token_id"),
            "context_length": context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": description["head_dim"],
                "hidden_size": description["hidden_size"],
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": PAST_KEY,
                    "past_value_names": PAST_VALUE,
                },
                "outputs": {"logits": "logits", "present_key_names": PRESENT_KEY, "present_value_names": PRESENT_VALUE},
                "num_attention_heads": description["num_attention_heads"],
                "num_hidden_layers": description["num_hidden_layers"],
                "num_key_value_heads": description["num_key_value_heads"],
            },
            "eos_token_id": eos,
            "pad_token_id": pad,
            "type": checkpoint.architecture.split("For")[0].lower(),
            "vocab_size": description["vocab_size"],
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": bool(generation.get("do_sample", False)),
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": context,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,  # GroupQueryAttention updates the cache in place
            "repetition_penalty": float(generation.get("repetition_penalty", 1.0)),
            "temperature": float(generation.get("temperature", 1.0)),
            "top_k": int(generation.get("top_k", 50) or 50),
            "top_p": float(generation.get("top_p", 1.0) or 1.0),
        },
    }

