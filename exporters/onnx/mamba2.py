"""Mamba-2 (state-space duality) as one ONNX graph with explicit state I/O.

Per layer ``i`` the graph takes ``past_conv.i`` ``(batch, K-1, conv_dim)`` (the
last inputs of the causal conv over ``x|B|C``) and ``past_ssm.i`` ``(batch, H, P,
N)`` and returns ``present_conv.i`` / ``present_ssm.i``::

    input_ids ─ Gather(embed) ─┬─ RMSNorm ─ MatMul(in_proj) ─ Split ─ z, xBC, dt
                               │   xBC ─ Concat(past_conv) ─ depthwise conv (K shifted Mul/Add) ─ SiLU ─ Split ─ x (H·P), B, C (G·N)
                               │   dt ─ + dt_bias ─ Softplus [─ Clip(time_step_limit)]
                               │   ─ Scan over time: S = exp(dt·A)·S + dt·x⊗B ; y = S·C   (past_ssm in, present_ssm out)
                               │   ─ y + x·D ─ gated RMSNorm (norm(y·silu(z)) per group) ─ MatMul(out_proj)
                               └──────────────── Add (residual) ─ next layer ... ─ RMSNorm ─ Slice(logits_to_keep) ─ MatMul(lm_head)

The scan is the exact recurrence (what the torch backend's ``ssd_step`` does
per token; its chunked prefill is the same sum reordered). ``A``, ``D``,
``dt_bias`` and the state stay float32 whatever the quantisation. Weights come
from agentd's own Mamba-2 loader (:mod:`agentd.plugins.ssm.mamba2`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder
from .layers import StateIO, causal_conv, finish_recurrent, head_weight, linear, np32, rms_norm, scan, silu

ARCHITECTURES = ("Mamba2ForCausalLM",)


def build_mamba2_graph(checkpoint: Checkpoint, *, weight_dtype: str, separate_lm_head: bool) -> tuple[Any, dict[str, Any]]:
    """The Mamba-2 ModelProto and the manifest's description of it (state layout included).

    A tied LM head is a Transpose of the embedding unless ``separate_lm_head``
    (the quantisers only rewrite a MatMul over its own initializer).
    """
    from agentd.plugins.ssm.mamba2 import load

    backend = load(checkpoint)
    c = backend.config
    H, P, N, G, K = c.num_heads, c.head_dim, c.state_size, c.n_groups, c.conv_kernel
    d_inner, conv_dim = c.intermediate_size, c.conv_dim
    eps = float(c.layer_norm_epsilon)


    g = GraphBuilder("agentd_mamba2", weight_dtype)
    input_ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    state = StateIO(g)
    for i in range(c.num_hidden_layers):
        state.declare(f"past_conv.{i}", f"present_conv.{i}", [K - 1, conv_dim])
        state.declare(f"past_ssm.{i}", f"present_ssm.{i}", [H, P, N])

    embed = g.weight("backbone.embeddings.weight", np32(backend.embeddings))  # (V, hidden)
    hidden = g.node("Gather", [embed, input_ids], name="/model/embed/Gather", axis=0)  # (B, T, hidden)
    heads_per_group = H // G
    # (B, T, G·N) -> (B, T, H, N): each head reads its group's B and C.
    by_head = g.const_i64([0, 0, G, 1, N])
    expand_heads = g.const_i64([1, 1, 1, heads_per_group, 1])
    to_heads = g.const_i64([0, 0, H, N])
    for i, layer in enumerate(backend.layers):
        base, key = f"/model/layers.{i}", f"backbone.layers.{i}.mixer"
        normed = rms_norm(g, f"{base}/norm", hidden, np32(layer.norm), eps)
        projected = linear(g, f"{base}/in_proj", normed, np32(layer.in_proj), np32(layer.in_proj_bias))
        z, xbc, dt = g.node(
            "Split", [projected, g.const_i64([d_inner, conv_dim, H])], name=f"{base}/in_proj/Split", outputs=3, axis=-1
        )
        conv = causal_conv(
            g, f"{base}/conv", xbc, f"past_conv.{i}", f"present_conv.{i}",
            np32(layer.conv_weight).T, np32(layer.conv_bias),
        )  # conv_weight is stored (K, conv_dim); causal_conv takes (conv_dim, K)
        xbc = silu(g, f"{base}/conv/act", conv)
        xs, b_mat, c_mat = g.node(
            "Split", [xbc, g.const_i64([d_inner, G * N, G * N])], name=f"{base}/xBC/Split", outputs=3, axis=-1
        )
        dt = g.node("Add", [dt, g.param(f"{key}.dt_bias", np32(layer.dt_bias))], name=f"{base}/dt/Add")
        dt = g.node("Softplus", [dt], name=f"{base}/dt/Softplus")  # (B, T, H)
        if c.clamps_dt:
            low, high = c.time_step_limit
            dt = g.node("Clip", [dt, g.const_f32(low), g.const_f32(min(high, 3.0e38))], name=f"{base}/dt/Clip")

        x_heads = g.node("Reshape", [xs, g.const_i64([0, 0, H, P])], name=f"{base}/x/Reshape")  # (B, T, H, P)
        decay = g.node(
            "Exp", [g.node("Mul", [dt, g.param(f"{key}.A", np32(layer.A))], name=f"{base}/ssm/dtA")], name=f"{base}/ssm/decay"
        )  # (B, T, H)
        dt4 = g.node("Unsqueeze", [dt, g.const_i64([-1])], name=f"{base}/ssm/dt_Unsqueeze")  # (B, T, H, 1)
        dtx = g.node("Mul", [x_heads, dt4], name=f"{base}/ssm/dtx")  # (B, T, H, P)
        per_head = []
        for label, mat in (("B", b_mat), ("C", c_mat)):
            grouped = g.node("Reshape", [mat, by_head], name=f"{base}/ssm/{label}_groups")  # (B, T, G, 1, N)
            spread = g.node("Expand", [grouped, expand_heads], name=f"{base}/ssm/{label}_Expand")  # (B, T, G, H/G, N)
            per_head.append(g.node("Reshape", [spread, to_heads], name=f"{base}/ssm/{label}_heads"))  # (B, T, H, N)
        (y,) = scan(
            g,
            f"{base}/ssm/Scan",
            [(f"past_ssm.{i}", f"present_ssm.{i}")],
            [decay, dtx, *per_head],
            _ssd_body(g.const_i64([-1]), g.const_i64([-2])),
            ([("h_in", 4), ("decay_t", 2), ("dtx_t", 3), ("b_t", 3), ("c_t", 3)], [("h_out", 4), ("y_t", 3)]),
            outputs=1,
        )  # (B, T, H, P)

        skip = g.node("Mul", [x_heads, g.param(f"{key}.D", np32(layer.D).reshape(H, 1))], name=f"{base}/skip/Mul")
        y = g.node("Add", [y, skip], name=f"{base}/skip/Add")
        y = g.node("Reshape", [y, g.const_i64([0, 0, d_inner])], name=f"{base}/y/Reshape")  # (B, T, d_inner)
        out = _gated_rms_norm(g, f"{base}/gate_norm", y, z, np32(layer.gate_norm), G, eps)
        out = linear(g, f"{base}/out_proj", out, np32(layer.out_proj), np32(layer.out_proj_bias))
        hidden = g.node("Add", [hidden, out], name=f"{base}/residual/Add")

    final = rms_norm(g, "/model/norm_f", hidden, np32(backend.norm_f), eps)
    head = head_weight(g, backend.lm_head, embed if c.tie_word_embeddings and not separate_lm_head else None)
    return finish_recurrent(g, state, final, head, backend, layers=c.num_hidden_layers, hidden_size=c.hidden_size, tied_weights=["backbone.embeddings.weight", "lm_head.MatMul.weight"] if c.tie_word_embeddings else None)


def _ssd_body(last_axis: str, second_last_axis: str) -> list[Any]:
    """One step for every row: ``h = decay·h + dtx⊗B``; ``y = h·C`` (``h`` ``(B, H, P, N)``)."""
    n = lambda op, inputs, out: helper.make_node(op, inputs, [out], name=f"ssd/{out}")  # noqa: E731
    return [
        n("Unsqueeze", ["decay_t", last_axis], "decay_3"),  # (B, H, 1)
        n("Unsqueeze", ["decay_3", last_axis], "decay_4"),  # (B, H, 1, 1)
        n("Mul", ["h_in", "decay_4"], "decayed"),
        n("Unsqueeze", ["dtx_t", last_axis], "dtx_4"),  # (B, H, P, 1)
        n("Unsqueeze", ["b_t", second_last_axis], "b_4"),  # (B, H, 1, N)
        n("Mul", ["dtx_4", "b_4"], "inject"),  # (B, H, P, N)
        n("Add", ["decayed", "inject"], "h_out"),
        n("Unsqueeze", ["c_t", last_axis], "c_4"),  # (B, H, N, 1)
        n("MatMul", ["h_out", "c_4"], "y_4"),  # (B, H, P, 1)
        n("Squeeze", ["y_4", last_axis], "y_t"),  # (B, H, P)
    ]


def _gated_rms_norm(g: GraphBuilder, name: str, y: str, z: str, weight: np.ndarray, groups: int, eps: float) -> str:
    """``norm(y · silu(z)) · weight`` with the RMS taken within each of ``groups`` channel groups."""
    gated = g.node("Mul", [y, silu(g, f"{name}/silu", z)], name=f"{name}/gate")
    size = weight.shape[0] // groups
    grouped = g.node("Reshape", [gated, g.const_i64([0, 0, groups, size])], name=f"{name}/Reshape")  # (B, T, G, d/G)
    unit = g.param(f"{name.lstrip('/').replace('/', '.')}.unit", np.ones(size, dtype=np.float32))
    normed = g.node("RMSNormalization", [grouped, unit], name=f"{name}/RMSNorm", axis=-1, epsilon=eps, stash_type=1)
    flat = g.node("Reshape", [normed, g.const_i64([0, 0, weight.shape[0]])], name=f"{name}/Reshape_back")
    return g.node("Mul", [flat, g.param(f"{name.lstrip('/').replace('/', '.')}.weight", weight)], name=f"{name}/Mul")
