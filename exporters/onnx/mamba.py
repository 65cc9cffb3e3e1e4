"""Mamba (selective SSM) as one ONNX graph with explicit recurrent state I/O.

Per layer ``i`` the graph takes ``past_conv.i`` ``(batch, K-1, D)`` (the last
inputs of the causal conv) and ``past_ssm.i`` ``(batch, D, N)`` and returns
``present_conv.i`` / ``present_ssm.i``. One graph serves a prompt chunk and a
decode step (the sequence axis is dynamic)::

    input_ids ─ Gather(embed) ─┬─ RMSNorm ─ MatMul(in_proj) ─ Split ─ x ─ Concat(past_conv, x) ─ depthwise conv (K shifted Mul/Add) ─ SiLU
                               │                               └─ z                 └─ Slice(last K-1) ─ present_conv
                               │    ─ MatMul(x_proj) ─ Split ─ dt_low ─ MatMul(dt_proj) + bias ─ Softplus ─ dt
                               │                          ├─ B, C
                               │    ─ Scan over time: h = exp(dt·A)·h + dt·x·B ; y = h·C   (past_ssm in, present_ssm out)
                               │    ─ (y + x·D)·silu(z) ─ MatMul(out_proj)
                               └──────────────── Add (residual) ─ next layer ... ─ RMSNorm ─ Slice(logits_to_keep) ─ MatMul(lm_head)

The recurrence runs as an ONNX ``Scan`` (the exact sequential form, one fused
body per step), so prefill and decode compute what the torch backend's
reference scan computes. Weights come from agentd's own Mamba loader
(:mod:`agentd.plugins.ssm.mamba`). ``A``, ``D``, ``dt_proj`` and the state stay
float32 whatever the quantisation.
"""

from __future__ import annotations

from typing import Any

from onnx import helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder
from .layers import StateIO, causal_conv, finish_recurrent, head_weight, linear, np32, rms_norm, scan, silu

ARCHITECTURES = ("MambaForCausalLM",)
PAST_CONV, PAST_SSM = "past_conv.%d", "past_ssm.%d"
PRESENT_CONV, PRESENT_SSM = "present_conv.%d", "present_ssm.%d"


def build_mamba_graph(checkpoint: Checkpoint, *, weight_dtype: str, separate_lm_head: bool) -> tuple[Any, dict[str, Any]]:
    """The Mamba ModelProto and the manifest's description of it (state layout included).

    A tied LM head is a Transpose of the embedding unless ``separate_lm_head``
    (the quantisers only rewrite a MatMul over its own initializer; int4 shares
    the two again afterwards).
    """
    from agentd.plugins.ssm.mamba import load

    backend = load(checkpoint)
    c = backend.config
    d_inner, n, r, k = c.intermediate_size, c.state_size, c.dt_rank, c.conv_kernel


    g = GraphBuilder("agentd_mamba", weight_dtype)
    input_ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    state = StateIO(g)
    for i in range(c.num_hidden_layers):
        state.declare(PAST_CONV % i, PRESENT_CONV % i, [k - 1, d_inner])
        state.declare(PAST_SSM % i, PRESENT_SSM % i, [d_inner, n])

    embed = g.weight("backbone.embeddings.weight", np32(backend.embeddings))  # (V, C)
    hidden = g.node("Gather", [embed, input_ids], name="/model/embed/Gather", axis=0)  # (B, T, C)
    eps = float(c.layer_norm_epsilon)
    excluded: list[str] = []  # MatMuls that stay float32 when quantised
    for i, layer in enumerate(backend.layers):
        base = f"/model/layers.{i}"
        key = f"backbone.layers.{i}.mixer"
        normed = rms_norm(g, f"{base}/norm", hidden, np32(layer.norm), eps)
        xz = linear(g, f"{base}/in_proj", normed, np32(layer.in_proj), np32(layer.in_proj_bias))  # (B, T, 2D)
        xs, z = g.node("Split", [xz, g.const_i64([d_inner, d_inner])], name=f"{base}/in_proj/Split", outputs=2, axis=-1)
        # conv_weight is stored (K, D) to match the conv state; causal_conv takes (D, K).
        conv = causal_conv(g, f"{base}/conv", xs, PAST_CONV % i, PRESENT_CONV % i, np32(layer.conv_weight).T, np32(layer.conv_bias))
        xc = silu(g, f"{base}/conv/act", conv)

        x_dbl = linear(g, f"{base}/x_proj", xc, np32(layer.x_proj))  # (B, T, R+2N)
        dt_low, b_mat, c_mat = g.node("Split", [x_dbl, g.const_i64([r, n, n])], name=f"{base}/x_proj/Split", outputs=3, axis=-1)
        dt_name = f"{base}/dt_proj/MatMul"
        excluded.append(dt_name)
        dt = g.node("MatMul", [dt_low, g.param(f"{key}.dt_proj.weight", np32(layer.dt_proj).T)], name=dt_name)
        dt = g.node("Add", [dt, g.param(f"{key}.dt_proj.bias", np32(layer.dt_bias))], name=f"{base}/dt_proj/Add")
        dt = g.node("Softplus", [dt], name=f"{base}/dt/Softplus")  # (B, T, D)

        # Scan inputs, all (B, T, D, N): the decay exp(dt·A) and the input dt·x·B of every step.
        dt4 = g.node("Unsqueeze", [dt, g.const_i64([-1])], name=f"{base}/scan/dt_Unsqueeze")  # (B, T, D, 1)
        decay = g.node("Exp", [g.node("Mul", [dt4, g.param(f"{key}.A", np32(layer.A))], name=f"{base}/scan/dtA")], name=f"{base}/scan/decay")
        dtx = g.node("Mul", [dt, xc], name=f"{base}/scan/dtx")  # (B, T, D)
        dtx4 = g.node("Unsqueeze", [dtx, g.const_i64([-1])], name=f"{base}/scan/dtx_Unsqueeze")  # (B, T, D, 1)
        b4 = g.node("Unsqueeze", [b_mat, g.const_i64([2])], name=f"{base}/scan/B_Unsqueeze")  # (B, T, 1, N)
        inject = g.node("Mul", [dtx4, b4], name=f"{base}/scan/inject")  # (B, T, D, N)
        (y,) = scan(
            g,
            f"{base}/scan/Scan",
            [(PAST_SSM % i, PRESENT_SSM % i)],
            [decay, inject, c_mat],
            _scan_body(g.const_i64([1]), g.const_i64([-1])),
            ([("h_in", 3), ("decay_t", 3), ("inject_t", 3), ("c_t", 2)], [("h_out", 3), ("y_t", 2)]),
            outputs=1,
        )  # (B, T, D)

        skip = g.node("Mul", [xc, g.param(f"{key}.D", np32(layer.D))], name=f"{base}/skip/Mul")
        y = g.node("Add", [y, skip], name=f"{base}/skip/Add")
        y = g.node("Mul", [y, silu(g, f"{base}/gate/silu", z)], name=f"{base}/gate/Mul")
        out = linear(g, f"{base}/out_proj", y, np32(layer.out_proj), np32(layer.out_proj_bias))
        hidden = g.node("Add", [hidden, out], name=f"{base}/residual/Add")

    final = rms_norm(g, "/model/norm_f", hidden, np32(backend.norm_f), eps)
    head = head_weight(g, backend.lm_head, embed if c.tie_word_embeddings and not separate_lm_head else None)
    return finish_recurrent(g, state, final, head, backend, layers=c.num_hidden_layers, hidden_size=c.hidden_size, keep_float32_nodes=excluded, tied_weights=["backbone.embeddings.weight", "lm_head.MatMul.weight"] if c.tie_word_embeddings else None)


def _scan_body(axis_1: str, last_axis: str) -> list[Any]:
    """One step: ``h = decay·h + inject``; ``y = Σ_n h·C`` for every row of the batch (``h`` ``(B, D, N)``)."""
    node = lambda op, inputs, out, **kw: helper.make_node(op, inputs, [out], name=f"ssm/{out}", **kw)  # noqa: E731
    return [
        node("Mul", ["decay_t", "h_in"], "decayed"),
        node("Add", ["decayed", "inject_t"], "h_out"),
        node("Unsqueeze", ["c_t", axis_1], "c_b"),  # (B, 1, N)
        node("Mul", ["h_out", "c_b"], "hc"),
        node("ReduceSum", ["hc", last_axis], "y_t", keepdims=0),  # (B, D)
    ]
