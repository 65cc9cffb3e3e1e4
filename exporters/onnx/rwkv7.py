"""RWKV-7 "Goose" (x070) as one ONNX graph with explicit state I/O.

Per layer ``i`` the state is the time mix's and the channel mix's previous
(normed) input, ``past_att_x.i`` / ``past_ffn_x.i`` ``(batch, hidden)``, and the
WKV matrix ``past_wkv.i`` ``(batch, heads, head_size, head_size)`` indexed
``[value, key]`` as in :mod:`agentd.plugins.linear.wkv7`::

    input_ids ─ Gather(embed, ln0 folded in) ─┬─ LayerNorm ─ token shift ─ 6 lerps (r, k, v, w, a, g)
        ─ r, k, v = MatMul ; log decay = -e^-½·sigmoid(w0 + tanh(x_w W1) W2) ; iclr = sigmoid(a0 + x_a A1 A2)
        ─ kk = normalize(k·k_k per head) ; k = k·(1 + (iclr-1)·k_a) ; v lerps to block 0's v (blocks > 0)
        ─ Scan over time: S = S·diag(e^w) + (S·a) b^T + v k^T ; y = S r   (a = -kk, b = kk·iclr)
        ─ per-head GroupNorm + (Σ r·k·r_k)·v bonus ─ · (sigmoid(x_g G1) G2) ─ MatMul(output) ─ Add
        ─ LayerNorm ─ token shift ─ lerp ─ MatMul(value, relu(MatMul(key))²) ─ Add ... ─ LayerNorm ─ MatMul(head)

The scan is the exact recurrence (``wkv7_step`` per token; the torch backend's
chunked prefill is the same sums reordered). Everything that does not read the
state (the projections, the decay ``e^w``, the vectors' shaping) runs once over
all ``T`` tokens outside it; its body is one token's update and readout, seven
ops. The decay's low-rank projection
(``w0``, ``w1``, ``w2``) and the state stay float32 whatever the quantisation.
Weights come from agentd's own RWKV-7 backend (:mod:`agentd.plugins.linear.rwkv7`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder
from .layers import StateIO, finish_recurrent, layer_norm, lerp, linear, np32, scan, token_shift

ARCHITECTURES = ("Rwkv7ForCausalLM",)


def build_rwkv7_graph(checkpoint: Checkpoint, *, weight_dtype: str) -> tuple[Any, dict[str, Any]]:
    """The RWKV-7 ModelProto and the manifest's description of it (state layout included)."""
    import torch

    from agentd.plugins.linear import rwkv7

    backend = rwkv7.load(checkpoint)
    c = backend.config
    C, H, N = c.hidden_size, c.num_heads, c.head_size
    eps = rwkv7._LAYER_NORM_EPS


    g = GraphBuilder("agentd_rwkv7", weight_dtype)
    input_ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    state = StateIO(g)
    for i in range(c.num_hidden_layers):
        state.declare(f"past_att_x.{i}", f"present_att_x.{i}", [C])
        state.declare(f"past_wkv.{i}", f"present_wkv.{i}", [H, N, N])
        state.declare(f"past_ffn_x.{i}", f"present_ffn_x.{i}", [C])

    to_heads, to_flat = g.const_i64([0, 0, H, N]), g.const_i64([0, 0, C])
    last_axis = g.const_i64([-1])
    excluded: list[str] = []  # the decay's MatMuls stay float32 when quantised
    embed = g.weight("emb.folded_weight", np32(backend.embeddings))  # (V, C)
    x = g.node("Gather", [embed, input_ids], name="/model/embed/Gather", axis=0)  # (B, T, C)
    v_first: str | None = None
    for i, layer in enumerate(backend.layers):
        base, key = f"/model/blocks.{i}", f"blocks.{i}.att"

        def param(name: str, tensor: torch.Tensor) -> str:
            return g.param(f"{key}.{name}", np32(tensor))

        def low_rank(name: str, x_in: str, first: torch.Tensor, second: torch.Tensor, inner: str | None, keep: bool) -> str:
            """``inner(x_in @ first) @ second`` with the factors as stored ``(C, r)``, ``(r, C)``."""
            names = (f"{base}/att/{name}/MatMul_0", f"{base}/att/{name}/MatMul_1")
            add = g.param if keep else g.weight
            h = g.node("MatMul", [x_in, add(f"{key}.{name}1", np32(first))], name=names[0])
            if inner is not None:
                h = g.node(inner, [h], name=f"{base}/att/{name}/{inner}")
            if keep:
                excluded.extend(names)
            return g.node("MatMul", [h, add(f"{key}.{name}2", np32(second))], name=names[1])

        # -- time mix --
        xn = layer_norm(g, f"{base}/ln1", x, np32(layer.ln1[0]), np32(layer.ln1[1]), eps)
        shifted = token_shift(g, f"{base}/att/shift", xn, f"past_att_x.{i}", f"present_att_x.{i}")
        mixes = np32(layer.mix).reshape(6, C)
        xr, xk, xv, xw, xa, xg = (
            lerp(g, f"{base}/att/mix_{n}", xn, shifted, g.param(f"{key}.x_{n}", mixes[j])) for j, n in enumerate("rkvwag")
        )
        r = linear(g, f"{base}/att/receptance", xr, np32(layer.receptance))  # (B, T, C)
        k = linear(g, f"{base}/att/key", xk, np32(layer.key))
        v = linear(g, f"{base}/att/value", xv, np32(layer.value))

        decay_in = g.node("Add", [param("w0", layer.w0), low_rank("w", xw, layer.w1, layer.w2, "Tanh", True)], name=f"{base}/att/w/Add")
        log_decay = g.node(
            "Mul", [g.node("Sigmoid", [decay_in], name=f"{base}/att/w/Sigmoid"), g.const_f32(-rwkv7._DECAY_SCALE)],
            name=f"{base}/att/w/scale",
        )  # (B, T, C), in (-e^-½, 0)
        iclr = g.node(
            "Sigmoid",
            [g.node("Add", [param("a0", layer.a0), low_rank("a", xa, layer.a1, layer.a2, None, False)], name=f"{base}/att/a/Add")],
            name=f"{base}/att/a/Sigmoid",
        )
        gate = low_rank("g", xg, layer.g1, layer.g2, "Sigmoid", False)

        # kk = F.normalize(k·k_k per head): x / max(||x||, 1e-12).
        kk = g.node("Mul", [k, param("k_k", layer.k_k)], name=f"{base}/att/kk/Mul")
        kk = g.node("Reshape", [kk, to_heads], name=f"{base}/att/kk/Reshape")  # (B, T, H, N)
        norm = g.node("ReduceL2", [kk, last_axis], name=f"{base}/att/kk/ReduceL2", keepdims=1)
        norm = g.node("Max", [norm, g.const_f32(1e-12)], name=f"{base}/att/kk/Max")
        kk = g.node("Div", [kk, norm], name=f"{base}/att/kk/Div")
        # k = k · (1 + (iclr - 1) · k_a)
        scale = g.node("Sub", [iclr, g.const_f32(1.0)], name=f"{base}/att/k_scale/Sub")
        scale = g.node("Mul", [scale, param("k_a", layer.k_a)], name=f"{base}/att/k_scale/Mul")
        scale = g.node("Add", [scale, g.const_f32(1.0)], name=f"{base}/att/k_scale/Add")
        k = g.node("Mul", [k, scale], name=f"{base}/att/k/Mul")
        if layer.v_lora is None:
            v_first = v
        else:
            v0, v1, v2 = layer.v_lora
            mix = g.node(
                "Sigmoid",
                [g.node("Add", [param("v0", v0), low_rank("v", xv, v1, v2, None, False)], name=f"{base}/att/v/Add")],
                name=f"{base}/att/v/Sigmoid",
            )
            v = lerp(g, f"{base}/att/v/lerp", v, v_first, mix)  # type: ignore[arg-type]

        iclr_heads = g.node("Reshape", [iclr, to_heads], name=f"{base}/att/iclr/Reshape")
        r_h, w_h, k_h, v_h = (
            g.node("Reshape", [t, to_heads], name=f"{base}/att/{n}/heads") for t, n in ((r, "r"), (log_decay, "w"), (k, "k"), (v, "v"))
        )  # (B, T, H, N) each
        # The Scan's inputs are shaped here, over all T tokens, so that one step's slice
        # broadcasts against the (B, H, N, N) state as is: the body is only the update and readout.
        column, row = g.const_i64([-1]), g.const_i64([-2])

        def shaped(label: str, x: str, axis: str) -> str:
            return g.node("Unsqueeze", [x, axis], name=f"{base}/att/wkv/{label}")  # (B, T, H, N, 1) or (B, T, H, 1, N)

        a_col = shaped("a_col", g.node("Neg", [kk], name=f"{base}/att/a_vec"), column)
        b_row = shaped("b_row", g.node("Mul", [kk, iclr_heads], name=f"{base}/att/b_vec"), row)
        decay_row = shaped("decay_row", g.node("Exp", [w_h], name=f"{base}/att/decay"), row)  # scales the key axis
        (y,) = scan(
            g,
            f"{base}/att/wkv/Scan",
            [(f"past_wkv.{i}", f"present_wkv.{i}")],
            [shaped("r_col", r_h, column), decay_row, shaped("k_row", k_h, row), shaped("v_col", v_h, column), a_col, b_row],
            _wkv_body(),
            ([("s_in", 4), ("r_t", 4), ("decay_t", 4), ("k_t", 4), ("v_t", 4), ("a_t", 4), ("b_t", 4)], [("s_out", 4), ("y_t", 4)]),
            outputs=1,
        )  # (B, T, H, N, 1)
        y = g.node("Squeeze", [y, column], name=f"{base}/att/wkv/y_Squeeze")  # (B, T, H, N)

        # Per-head GroupNorm: normalise within each head, then the (C,) affine.
        unit = g.param(f"{key}.ln_x.unit", np.ones(N, dtype=np.float32))
        y = g.node("LayerNormalization", [y, unit], name=f"{base}/att/ln_x/LayerNorm", axis=-1, epsilon=rwkv7._HEAD_NORM_EPS)
        y = g.node("Reshape", [y, to_flat], name=f"{base}/att/ln_x/Reshape")  # (B, T, C)
        y = g.node("Mul", [y, param("ln_x.weight", layer.head_norm[0])], name=f"{base}/att/ln_x/Mul")
        y = g.node("Add", [y, param("ln_x.bias", layer.head_norm[1])], name=f"{base}/att/ln_x/Add")
        rk = g.node("Mul", [g.node("Mul", [r, k], name=f"{base}/att/bonus/rk"), param("r_k", layer.r_k)], name=f"{base}/att/bonus/rkr")
        rk = g.node("Reshape", [rk, to_heads], name=f"{base}/att/bonus/Reshape")
        weight = g.node("ReduceSum", [rk, last_axis], name=f"{base}/att/bonus/ReduceSum", keepdims=1)  # (B, T, H, 1)
        bonus = g.node("Mul", [weight, v_h], name=f"{base}/att/bonus/Mul")
        bonus = g.node("Reshape", [bonus, to_flat], name=f"{base}/att/bonus/flat")
        y = g.node("Mul", [g.node("Add", [y, bonus], name=f"{base}/att/bonus/Add"), gate], name=f"{base}/att/gate/Mul")
        x = g.node("Add", [x, linear(g, f"{base}/att/output", y, np32(layer.output))], name=f"{base}/att/residual")

        # -- channel mix --
        xn = layer_norm(g, f"{base}/ln2", x, np32(layer.ln2[0]), np32(layer.ln2[1]), eps)
        shifted = token_shift(g, f"{base}/ffn/shift", xn, f"past_ffn_x.{i}", f"present_ffn_x.{i}")
        mixed = lerp(g, f"{base}/ffn/mix", xn, shifted, g.param(f"blocks.{i}.ffn.x_k", np32(layer.ffn_mix)))
        hidden = g.node("Relu", [linear(g, f"{base}/ffn/key", mixed, np32(layer.ffn_key))], name=f"{base}/ffn/Relu")
        hidden = g.node("Mul", [hidden, hidden], name=f"{base}/ffn/Square")
        x = g.node("Add", [x, linear(g, f"{base}/ffn/value", hidden, np32(layer.ffn_value))], name=f"{base}/ffn/residual")

    final = layer_norm(g, "/model/ln_out", x, np32(backend.ln_out[0]), np32(backend.ln_out[1]), eps)
    head = g.weight("head.MatMul.weight", np.ascontiguousarray(np32(backend.head).T))  # (C, V)
    return finish_recurrent(g, state, final, head, backend, layers=c.num_hidden_layers, hidden_size=C, keep_float32_nodes=excluded)


def _wkv_body() -> list[Any]:
    """One delta-rule step per row: ``S' = S·diag(e^w) + (S a) b^T + v k^T``; ``y = S' r`` (``S`` ``(B, H, N, N)``).

    Its inputs come shaped: ``a_t``, ``v_t``, ``r_t`` columns ``(B, H, N, 1)``;
    ``decay_t = e^w``, ``b_t``, ``k_t`` rows ``(B, H, 1, N)``.
    """
    n = lambda op, inputs, out: helper.make_node(op, inputs, [out], name=f"wkv/{out}")  # noqa: E731
    return [
        n("MatMul", ["s_in", "a_t"], "removed"),  # (B, H, N, 1): S a, before the decay
        n("Mul", ["s_in", "decay_t"], "decayed"),
        n("Mul", ["removed", "b_t"], "correction"),  # (S a) b^T
        n("Mul", ["v_t", "k_t"], "write"),  # v k^T
        n("Add", ["decayed", "correction"], "corrected"),
        n("Add", ["corrected", "write"], "s_out"),
        n("MatMul", ["s_out", "r_t"], "y_t"),  # (B, H, N, 1)
    ]
