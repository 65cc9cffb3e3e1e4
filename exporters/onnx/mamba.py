"""Mamba (selective SSM) as one ONNX graph with explicit recurrent state I/O.

Per layer ``i`` the graph takes ``past_conv.i`` ``(batch, K-1, D)`` (the last
inputs of the causal conv) and ``past_ssm.i`` ``(batch, N, D)`` and returns
``present_conv.i`` / ``present_ssm.i``. One graph serves a prompt chunk and a
decode step (the sequence axis is dynamic)::

    input_ids ─ Gather(embed) ─┬─ RMSNorm ─ MatMul(in_proj) ─ Split ─ x ─ Concat(past_conv, x) ─ depthwise conv (K shifted Mul/Add) ─ SiLU
                               │                               └─ z                 └─ Slice(last K-1) ─ present_conv
                               │    ─ MatMul(x_proj) ─ Split ─ dt_low ─ MatMul(dt_proj) + bias ─ softplus ─ dt, dt·x
                               │                          ├─ B, C
                               │    ─ Scan over time: h = exp(dt·A)·h + B⊗(dt·x) ; y = C·h   (past_ssm in, present_ssm out)
                               │    ─ (y + x·D)·silu(z) ─ MatMul(out_proj)
                               └──────────────── Add (residual) ─ next layer ... ─ RMSNorm ─ Slice(logits_to_keep) ─ MatMul(lm_head)

Prefill is the parallel form: every projection, the conv, the softplus and
``dt·x`` run once over all ``T`` prompt tokens as batched ops; only the
recurrence itself steps through time, in an ONNX ``Scan`` whose body is the
``(N, D)`` work of one token (decay, input, state update, readout: six ops).
The state is laid out ``(N, D)``, not torch's ``(D, N)``, so every broadcast
in that body runs over contiguous rows of ``D`` and the readout ``C·h`` is one
GEMV: with ``(D, N)`` rows of 16 the same ops ran 4-5x slower. (A chunked body,
``L`` tokens' decays and inputs at once and the ``L`` updates unrolled, measured
no faster at mamba-130m's size: onnxruntime copies every slice it takes. See
docs/bench_recurrent_prefill.md.) Decode is the same graph with ``T = 1``.

The Scan computes the exact sequential recurrence, what the torch backend's
reference scan computes. Weights come from agentd's own Mamba loader
(:mod:`agentd.plugins.ssm.mamba`). ``A``, ``D``, ``dt_proj`` and the state stay
float32 whatever the quantisation.
"""

from __future__ import annotations

from typing import Any

from onnx import helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder
from .layers import StateIO, causal_conv, finish_recurrent, head_weight, linear, np32, rms_norm, scan, silu, softplus

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
        state.declare(PAST_SSM % i, PRESENT_SSM % i, [n, d_inner])

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
        dt = softplus(g, f"{base}/dt/softplus", dt)  # (B, T, D)
        dtx = g.node("Mul", [dt, xc], name=f"{base}/scan/dtx")  # (B, T, D)

        # Scan inputs, shaped so each step's slice broadcasts against the (B, N, D) state as is.
        rows = g.const_i64([2])
        dt4 = g.node("Unsqueeze", [dt, rows], name=f"{base}/scan/dt_Unsqueeze")  # (B, T, 1, D)
        dtx4 = g.node("Unsqueeze", [dtx, rows], name=f"{base}/scan/dtx_Unsqueeze")  # (B, T, 1, D)
        b4 = g.node("Unsqueeze", [b_mat, g.const_i64([-1])], name=f"{base}/scan/B_Unsqueeze")  # (B, T, N, 1)
        c4 = g.node("Unsqueeze", [c_mat, rows], name=f"{base}/scan/C_Unsqueeze")  # (B, T, 1, N)
        a_t = g.param(f"{key}.A", np32(layer.A).T)  # (N, D)
        (y,) = scan(
            g,
            f"{base}/scan/Scan",
            [(PAST_SSM % i, PRESENT_SSM % i)],
            [dt4, dtx4, b4, c4],
            _scan_body(a_t),
            ([("h_in", 3), ("dt_t", 3), ("dtx_t", 3), ("b_t", 3), ("c_t", 3)], [("h_out", 3), ("y_t", 3)]),
            outputs=1,
        )  # (B, T, 1, D)
        y = g.node("Squeeze", [y, rows], name=f"{base}/scan/y_Squeeze")  # (B, T, D)

        skip = g.node("Mul", [xc, g.param(f"{key}.D", np32(layer.D))], name=f"{base}/skip/Mul")
        y = g.node("Add", [y, skip], name=f"{base}/skip/Add")
        y = g.node("Mul", [y, silu(g, f"{base}/gate/silu", z)], name=f"{base}/gate/Mul")
        out = linear(g, f"{base}/out_proj", y, np32(layer.out_proj), np32(layer.out_proj_bias))
        hidden = g.node("Add", [hidden, out], name=f"{base}/residual/Add")

    final = rms_norm(g, "/model/norm_f", hidden, np32(backend.norm_f), eps)
    head = head_weight(g, backend.lm_head, embed if c.tie_word_embeddings and not separate_lm_head else None)
    return finish_recurrent(g, state, final, head, backend, layers=c.num_hidden_layers, hidden_size=c.hidden_size, keep_float32_nodes=excluded, tied_weights=["backbone.embeddings.weight", "lm_head.MatMul.weight"] if c.tie_word_embeddings else None)


def _scan_body(a_t: str) -> list[Any]:
    """One step for every row: ``h = exp(dt·A)·h + B⊗(dt·x)``; ``y = C·h`` (``h`` ``(B, N, D)``).

    ``a_t`` is the outer-scope initializer ``A`` transposed, ``(N, D)``.
    """
    node = lambda op, inputs, out: helper.make_node(op, inputs, [out], name=f"ssm/{out}")  # noqa: E731
    return [
        node("Mul", ["dt_t", a_t], "dtA"),  # (B, 1, D) * (N, D) -> (B, N, D)
        node("Exp", ["dtA"], "decay"),
        node("Mul", ["b_t", "dtx_t"], "inject"),  # (B, N, 1) * (B, 1, D) -> (B, N, D)
        node("Mul", ["decay", "h_in"], "decayed"),
        node("Add", ["decayed", "inject"], "h_out"),
        node("MatMul", ["c_t", "h_out"], "y_t"),  # (B, 1, N) @ (B, N, D) -> (B, 1, D)
    ]
