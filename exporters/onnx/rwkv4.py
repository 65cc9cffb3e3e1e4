"""RWKV-4 (Hugging Face ``RwkvForCausalLM``) as one ONNX graph with explicit state I/O.

Per layer ``i`` the state is five ``(batch, hidden)`` tensors: the time mix's and
the channel mix's previous (normed) input, and the WKV running sums
``(num, den, max)`` of :mod:`agentd.plugins.linear.wkv4` (the true sums are
``num·e^max``, ``den·e^max``, so nothing overflows)::

    input_ids ─ Gather(embed, block 0's pre-LayerNorm folded in) ─┬─ LayerNorm ─ token shift (past_att_x.i) ─ 3 lerps
        ─ MatMul(key), MatMul(value), MatMul(receptance)                                                    │
        ─ Scan over time: wkv_t from (num, den, max) and the bonus u; decay w  (past_wkv_* in, present_wkv_* out)
        ─ sigmoid(r)·wkv ─ MatMul(output) ─ Add (residual)
        ─ LayerNorm ─ token shift (past_ffn_x.i) ─ sigmoid(MatMul(receptance)) · MatMul(value, relu(MatMul(key))²) ─ Add
        ─ ×½ every ``rescale_every`` blocks ... ─ LayerNorm ─ Slice(logits_to_keep) ─ MatMul(head)

The weights are taken from agentd's own RWKV-4 backend after it has folded the
first LayerNorm into the embedding and applied Hugging Face's inference-time
rescaling, so the graph computes exactly what the torch backend does. The
decay ``-exp(time_decay)`` and bonus ``time_first`` stay float32 whatever the
quantisation (they are not MatMul weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder
from .layers import StateIO, finish_recurrent, layer_norm, lerp, linear, np32, scan, token_shift

ARCHITECTURES = ("RwkvForCausalLM",)
#: The running maximum of an empty WKV state (``wkv4.EMPTY_MAX``).
EMPTY_MAX = -1e38


def build_rwkv4_graph(checkpoint: Checkpoint, *, weight_dtype: str) -> tuple[Any, dict[str, Any]]:
    """The RWKV-4 ModelProto and the manifest's description of it (state layout included)."""
    from agentd.plugins.linear.rwkv4 import load

    backend = load(checkpoint)
    c = backend.config
    C = c.hidden_size
    eps = float(c.layer_norm_epsilon)


    g = GraphBuilder("agentd_rwkv4", weight_dtype)
    input_ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    state = StateIO(g)
    for i in range(c.num_hidden_layers):
        state.declare(f"past_att_x.{i}", f"present_att_x.{i}", [C])
        state.declare(f"past_wkv_num.{i}", f"present_wkv_num.{i}", [C])
        state.declare(f"past_wkv_den.{i}", f"present_wkv_den.{i}", [C])
        state.declare(f"past_wkv_max.{i}", f"present_wkv_max.{i}", [C], initial=EMPTY_MAX)
        state.declare(f"past_ffn_x.{i}", f"present_ffn_x.{i}", [C])

    embed = g.weight("rwkv.embeddings.folded_weight", np32(backend.embeddings))  # (V, C)
    x = g.node("Gather", [embed, input_ids], name="/model/embed/Gather", axis=0)  # (B, T, C)
    for i, layer in enumerate(backend.layers):
        base, key = f"/model/blocks.{i}", f"rwkv.blocks.{i}"
        # -- time mix --
        xn = layer_norm(g, f"{base}/ln1", x, np32(layer.ln1[0]), np32(layer.ln1[1]), eps)
        shifted = token_shift(g, f"{base}/att/shift", xn, f"past_att_x.{i}", f"present_att_x.{i}")
        mixes = np32(layer.att_mix).reshape(3, C)
        k_in, v_in, r_in = (
            lerp(g, f"{base}/att/mix_{n}", shifted, xn, g.param(f"{key}.attention.time_mix_{n}", mixes[j]))
            for j, n in enumerate(("key", "value", "receptance"))
        )
        k = linear(g, f"{base}/att/key", k_in, np32(layer.att_key))  # (B, T, C)
        v = linear(g, f"{base}/att/value", v_in, np32(layer.att_value))
        r = linear(g, f"{base}/att/receptance", r_in, np32(layer.att_receptance))
        decay = g.param(f"{key}.attention.decay", np32(layer.decay))  # -exp(time_decay)
        bonus = g.param(f"{key}.attention.time_first", np32(layer.bonus))
        (wkv,) = scan(
            g,
            f"{base}/att/wkv/Scan",
            [(f"past_wkv_{part}.{i}", f"present_wkv_{part}.{i}") for part in ("num", "den", "max")],
            [k, v],
            _wkv_body(decay, bonus),
            ([("num", 2), ("den", 2), ("max", 2), ("k_t", 2), ("v_t", 2)], [("num_out", 2), ("den_out", 2), ("max_out", 2), ("wkv_t", 2)]),
            outputs=1,
        )  # (B, T, C)
        gated = g.node("Mul", [g.node("Sigmoid", [r], name=f"{base}/att/Sigmoid"), wkv], name=f"{base}/att/Mul")
        x = g.node("Add", [x, linear(g, f"{base}/att/output", gated, np32(layer.att_out))], name=f"{base}/att/residual")

        # -- channel mix --
        xn = layer_norm(g, f"{base}/ln2", x, np32(layer.ln2[0]), np32(layer.ln2[1]), eps)
        shifted = token_shift(g, f"{base}/ffn/shift", xn, f"past_ffn_x.{i}", f"present_ffn_x.{i}")
        ffn_mixes = np32(layer.ffn_mix).reshape(2, C)
        k_in, r_in = (
            lerp(g, f"{base}/ffn/mix_{n}", shifted, xn, g.param(f"{key}.feed_forward.time_mix_{n}", ffn_mixes[j]))
            for j, n in enumerate(("key", "receptance"))
        )
        hidden = g.node("Relu", [linear(g, f"{base}/ffn/key", k_in, np32(layer.ffn_key))], name=f"{base}/ffn/Relu")
        hidden = g.node("Mul", [hidden, hidden], name=f"{base}/ffn/Square")
        value = linear(g, f"{base}/ffn/value", hidden, np32(layer.ffn_value))
        gate = g.node("Sigmoid", [linear(g, f"{base}/ffn/receptance", r_in, np32(layer.ffn_receptance))], name=f"{base}/ffn/Sigmoid")
        x = g.node("Add", [x, g.node("Mul", [gate, value], name=f"{base}/ffn/Mul")], name=f"{base}/ffn/residual")
        if c.rescale_every > 0 and (i + 1) % c.rescale_every == 0:
            x = g.node("Mul", [x, g.const_f32(0.5)], name=f"{base}/rescale")  # exact, as Hugging Face halves

    final = layer_norm(g, "/model/ln_out", x, np32(backend.ln_out[0]), np32(backend.ln_out[1]), 1e-5)
    head = g.weight("head.MatMul.weight", np.ascontiguousarray(np32(backend.head).T))  # (C, V)
    return finish_recurrent(g, state, final, head, backend, layers=c.num_hidden_layers, hidden_size=C)


def _wkv_body(decay: str, bonus: str) -> list[Any]:
    """One WKV step for every row: output from the state and the current token, then the state update.

    ``decay`` (w < 0) and ``bonus`` (u) are outer-scope initializers ``(C,)``.
    """
    n = lambda op, inputs, out: helper.make_node(op, inputs, [out], name=f"wkv/{out}")  # noqa: E731
    return [
        n("Add", [bonus, "k_t"], "with_bonus"),  # u + k
        n("Max", ["max", "with_bonus"], "peak"),
        n("Sub", ["max", "peak"], "state_shift"),
        n("Exp", ["state_shift"], "e_state"),
        n("Sub", ["with_bonus", "peak"], "token_shift"),
        n("Exp", ["token_shift"], "e_token"),
        n("Mul", ["e_state", "num"], "num_scaled"),
        n("Mul", ["e_token", "v_t"], "v_scaled"),
        n("Add", ["num_scaled", "v_scaled"], "numerator"),
        n("Mul", ["e_state", "den"], "den_scaled"),
        n("Add", ["den_scaled", "e_token"], "denominator"),
        n("Div", ["numerator", "denominator"], "wkv_t"),
        # State update: decay the sums one step, then add the token (without the bonus).
        n("Add", ["max", decay], "decayed"),
        n("Max", ["decayed", "k_t"], "max_out"),
        n("Sub", ["decayed", "max_out"], "decay_shift"),
        n("Exp", ["decay_shift"], "e_decay"),
        n("Sub", ["k_t", "max_out"], "key_shift"),
        n("Exp", ["key_shift"], "e_key"),
        n("Mul", ["e_decay", "num"], "num_decayed"),
        n("Mul", ["e_key", "v_t"], "v_keyed"),
        n("Add", ["num_decayed", "v_keyed"], "num_out"),
        n("Mul", ["e_decay", "den"], "den_decayed"),
        n("Add", ["den_decayed", "e_key"], "den_out"),
    ]
