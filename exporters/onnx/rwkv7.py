"""RWKV-7 "Goose" (x070) as one ONNX graph with explicit state I/O.

Per layer ``i`` the state is the time mix's and the channel mix's previous
(normed) input, ``past_att_x.i`` / ``past_ffn_x.i`` ``(batch, hidden)``, and the
WKV matrix ``past_wkv.i`` ``(batch, heads, head_size, head_size)`` indexed
``[value, key]`` as in :mod:`agentd.plugins.linear.wkv7`::

    input_ids ─ Gather(embed, ln0 folded in) ─┬─ LayerNorm ─ token shift ─ 6 lerps (r, k, v, w, a, g)
        ─ r, k, v = MatMul ; log decay = -e^-½·sigmoid(w0 + tanh(x_w W1) W2) ; iclr = sigmoid(a0 + x_a A1 A2)
        ─ kk = normalize(k·k_k per head) ; k = k·(1 + (iclr-1)·k_a) ; v lerps to block 0's v (blocks > 0)
        ─ If T = 1: one step  S = S·diag(e^w) + (S·a) b^T + v k^T ; y = S r   (a = -kk, b = kk·iclr)
          else:     chunked delta rule (below)
        ─ per-head GroupNorm + (Σ r·k·r_k)·v bonus ─ · (sigmoid(x_g G1) G2) ─ MatMul(output) ─ Add
        ─ LayerNorm ─ token shift ─ lerp ─ MatMul(value, relu(MatMul(key))²) ─ Add ... ─ LayerNorm ─ MatMul(head)

A prompt (``T > 1``) runs the WKV in the chunked form of the torch backend's
``wkv7_chunked``: ``ceil(T / CHUNK)`` equal chunks (the padding has zero decay
and inputs, so it leaves the state unchanged), each chunk's triangular system
and its outputs' affine dependence on the entering state as batched MatMuls
over all chunks, and only ``S <- S·G + F`` stepping from chunk to chunk in a
Scan. A decode token takes the one-step branch, inline. Both are the same sums
as the torch backend's, in float32. The decay's low-rank projection (``w0``,
``w1``, ``w2``) and the state stay float32 whatever the quantisation. Weights
come from agentd's own RWKV-7 backend (:mod:`agentd.plugins.linear.rwkv7`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder
from .layers import (
    INT64_MAX, StateIO, finish_recurrent, layer_norm, lerp, linear, np32, scan, step_or_chunked, token_shift,
)

ARCHITECTURES = ("Rwkv7ForCausalLM",)
#: Prefill chunk (tokens). Half the torch backend's 32: the triangular inverse is a product of
#: powers of the in-chunk matrix, whose terms grow with the chunk and cancel in float32 (a tiny
#: model's 101 repeated tokens: 2e-4 off the rwkv package at 32, 1e-5..5e-5 at 16; same speed).
CHUNK = 16


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
        a_h = g.node("Neg", [kk], name=f"{base}/att/a_vec")
        b_h = g.node("Mul", [kk, iclr_heads], name=f"{base}/att/b_vec")
        y = _wkv(g, f"{base}/att/wkv", [r_h, w_h, k_h, v_h, a_h, b_h], f"past_wkv.{i}", f"present_wkv.{i}", H, N)  # (B, T, H, N)

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


def _wkv(g: GraphBuilder, name: str, vectors: list[str], past: str, present: str, H: int, N: int) -> str:
    """The WKV over ``T`` tokens of ``vectors`` ``[r, w, k, v, a, b]`` (each ``(B, T, H, N)``); the final state goes to ``present``.

    An ``If`` on ``T`` runs one recurrent step (decode) or the chunked form
    (prefill). The six are packed into one tensor first: the branches read
    only that from this graph, and the quantisers re-sort nodes by explicit
    inputs only, so the ``If``'s condition is computed from it.
    """
    packed = g.node("Concat", vectors, name=f"{name}/pack", axis=-1)  # (B, T, H, 6N)
    return step_or_chunked(
        g, name, packed, present,
        lambda: _wkv_step(g, f"{name}/step", packed, past, H, N),
        lambda: _wkv_chunked(g, f"{name}/chunked", packed, past, H, N),
    )


def _wkv_step(g: GraphBuilder, name: str, packed: str, past: str, H: int, N: int) -> tuple[str, str]:
    """One token's delta-rule step, inline (no Scan: a Scan inside the If cost decode ~10%); returns ``(y, new state)``.

    ``S' = S·diag(e^w) + (S a) bᵀ + v kᵀ``; ``y = S' r`` (``S`` ``(B, H, N, N)``).
    """
    column, row = g.const_i64([0, H, N, 1]), g.const_i64([0, H, 1, N])
    r, w, k, v, a, b = g.node("Split", [packed], name=f"{name}/Split", outputs=6, axis=-1, num_outputs=6)  # (B, 1, H, N)

    def shaped(label: str, x: str, shape: str) -> str:
        return g.node("Reshape", [x, shape], name=f"{name}/{label}")  # (B, H, N, 1) or (B, H, 1, N)

    removed = g.node("MatMul", [past, shaped("a_col", a, column)], name=f"{name}/removed")  # S a, before the decay
    decay = shaped("decay_row", g.node("Exp", [w], name=f"{name}/decay"), row)  # scales the key axis
    state = g.node("Mul", [past, decay], name=f"{name}/decayed")
    state = g.node("Add", [state, g.node("Mul", [removed, shaped("b_row", b, row)], name=f"{name}/correction")], name=f"{name}/corrected")
    write = g.node("Mul", [shaped("v_col", v, column), shaped("k_row", k, row)], name=f"{name}/write")  # v kᵀ
    state = g.node("Add", [state, write], name=f"{name}/state")
    y = g.node("MatMul", [state, shaped("r_col", r, column)], name=f"{name}/readout")  # (B, H, N, 1)
    return g.node("Reshape", [y, g.const_i64([0, 1, H, N])], name=f"{name}/y"), state


def _wkv_chunked(g: GraphBuilder, name: str, packed: str, past: str, H: int, N: int) -> tuple[str, str]:
    """:func:`agentd.plugins.linear.wkv7.wkv7_chunked`, batched over chunks; returns ``(y, final state)``.

    ``T`` is cut into ``n = ceil(T / CHUNK)`` chunks of ``L = ceil(T / n)``, the
    last positions padded with zeros (``w = 0`` and no inputs: the state passes
    through unchanged; their outputs are dropped). The unit lower-triangular
    system ``(I - M) u = rhs`` of every chunk (``M`` strictly lower, so
    nilpotent) is solved as ``(I + M)(I + M²)(I + M⁴)…·rhs``: ``log2(CHUNK)``
    squarings and products instead of a triangular solve, which ONNX lacks.
    Only ``S <- S·G + F`` steps from chunk to chunk, in a Scan of ``n`` iterations.
    """
    i64 = g.const_i64

    def op(kind: str, inputs: list[str], label: str, **attributes: Any) -> str:
        return g.node(kind, inputs, name=f"{name}/{label}", **attributes)

    def matmul(x: str, y: str, label: str) -> str:
        return op("MatMul", [x, y], label)

    def transposed(x: str, label: str) -> str:
        return op("Transpose", [x], f"{label}/T", perm=[0, 1, 2, 4, 3])

    length = op("Slice", [op("Shape", [packed], "Shape"), i64([1]), i64([2])], "T")  # (1,)
    chunks = op("Div", [op("Add", [length, i64([CHUNK - 1])], "n/Add"), i64([CHUNK])], "n")
    size = op("Div", [op("Add", [op("Sub", [length, i64([1])], "L/Sub"), chunks], "L/Add"), chunks], "L")  # ceil(T/n)
    padding = op("Concat", [i64([0]), op("Sub", [op("Mul", [chunks, size], "Tp"), length], "pad")], "pads", axis=0)
    padded = op("Pad", [packed, padding, g.const_f32(0.0), i64([1])], "Pad")  # (B, Tp, H, 6N)
    blocks = op("Reshape", [padded, op("Concat", [i64([0, -1]), size, i64([H, 6 * N])], "blocks/shape", axis=0)], "blocks/Reshape")
    blocks = op("Transpose", [blocks], "blocks/Transpose", perm=[0, 1, 3, 2, 4])  # (B, n, H, L, 6N)
    r, w, k, v, a, b = op("Split", [blocks], "Split", outputs=6, axis=-1, num_outputs=6)  # (B, n, H, L, N) each

    cum = op("CumSum", [w, i64(2 + 1)], "cum")  # c_t, inclusive, along L
    grow = op("Exp", [op("Neg", [cum], "grow/Neg")], "grow")
    a_q = op("Mul", [a, op("Exp", [op("Sub", [cum, w], "a_q/Sub")], "a_q/Exp")], "a_q")  # a_t e^{c_{t-1}}
    r_q = op("Mul", [r, op("Exp", [cum], "r_q/Exp")], "r_q")
    b_kt = transposed(op("Mul", [b, grow], "b_k"), "b_k")  # (B, n, H, N, L)
    k_kt = transposed(op("Mul", [k, grow], "k_k"), "k_k")
    square = op("Concat", [size, size], "LxL", axis=0)
    lower = [i64([0, 0]), square, i64([0, 1])]
    strict = op("Slice", [g.param(f"{name}.strict_lower", np.tril(np.ones((CHUNK, CHUNK), np.float32), -1)), *lower], "strict")
    inclusive = op("Slice", [g.param(f"{name}.lower", np.tril(np.ones((CHUNK, CHUNK), np.float32))), *lower], "inclusive")
    ab = op("Mul", [matmul(a_q, b_kt, "ab/MatMul"), strict], "ab")  # (B, n, H, L, L)
    ak = op("Mul", [matmul(a_q, k_kt, "ak/MatMul"), strict], "ak")
    rb = op("Mul", [matmul(r_q, b_kt, "rb/MatMul"), inclusive], "rb")
    rk = op("Mul", [matmul(r_q, k_kt, "rk/MatMul"), inclusive], "rk")

    # (I - ab) u = a_q Sᵀ + ak v  =>  u = X Sᵀ + Y, with [X | Y] = (I - ab)⁻¹ [a_q | ak v].
    solved = op("Concat", [a_q, matmul(ak, v, "ak_v")], "rhs", axis=-1)  # (B, n, H, L, 2N)
    power = ab
    levels = max(1, (CHUNK - 1).bit_length())  # 2^levels >= CHUNK >= L: every higher power of ab is 0
    for level in range(levels):
        solved = op("Add", [solved, matmul(power, solved, f"solve_{level}/MatMul")], f"solve_{level}")
        if level + 1 < levels:
            power = matmul(power, power, f"power_{level + 1}")
    x_u, y_u = op("Split", [solved], "u/Split", outputs=2, axis=-1, num_outputs=2)
    p_y = op("Add", [r_q, matmul(rb, x_u, "p_y/MatMul")], "p_y")  # y = p_y Sᵀ + q_y
    q_y = op("Add", [matmul(rb, y_u, "q_y/rb"), matmul(rk, v, "q_y/rk")], "q_y")

    # Chunk-end state S' = S G + F, inputs decayed to the chunk end (<= 1).
    c_end = op("Slice", [cum, i64([-1]), i64([INT64_MAX]), i64([3])], "c_end")  # (B, n, H, 1, N)
    to_end = op("Exp", [op("Sub", [c_end, cum], "to_end/Sub")], "to_end")
    b_end = op("Mul", [b, to_end], "b_end")
    diagonal = op("Mul", [op("Exp", [c_end], "total"), g.param(f"{name}.eye", np.eye(N, dtype=np.float32))], "total/diag")
    gain = op("Add", [diagonal, matmul(transposed(x_u, "x_u"), b_end, "G/MatMul")], "G")  # (B, n, H, N, N)
    feed = op("Add", [matmul(transposed(y_u, "y_u"), b_end, "F/y_u"), matmul(transposed(v, "v"), op("Mul", [k, to_end], "k_end"), "F/v")], "F")
    final = f"{name}/final"
    (entering,) = scan(
        g,
        f"{name}/Scan",
        [(past, final)],
        [gain, feed],
        _chunk_body(),
        ([("s_in", 4), ("gain_t", 4), ("feed_t", 4)], [("s_out", 4), ("s_start", 4)]),
        outputs=1,
    )  # (B, n, H, N, N): the state entering each chunk
    y = op("Add", [matmul(p_y, transposed(entering, "entering"), "y/MatMul"), q_y], "y/Add")  # (B, n, H, L, N)
    y = op("Reshape", [op("Transpose", [y], "y/Transpose", perm=[0, 1, 3, 2, 4]), i64([0, -1, H, N])], "y/Reshape")
    return op("Slice", [y, i64([0]), length, i64([1])], "y"), final


def _chunk_body() -> list[Any]:
    """One chunk boundary: ``s_out = s_in·G + F``; also emits ``s_in``, the state entering the chunk."""
    return [
        helper.make_node("Identity", ["s_in"], ["s_start"], name="chunk/s_start"),
        helper.make_node("MatMul", ["s_in", "gain_t"], ["carried"], name="chunk/carried"),
        helper.make_node("Add", ["carried", "feed_t"], ["s_out"], name="chunk/s_out"),
    ]
