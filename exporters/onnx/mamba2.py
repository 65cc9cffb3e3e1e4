"""Mamba-2 (state-space duality) as one ONNX graph with explicit state I/O.

Per layer ``i`` the graph takes ``past_conv.i`` ``(batch, K-1, conv_dim)`` (the
last inputs of the causal conv over ``x|B|C``) and ``past_ssm.i`` ``(batch, H, P,
N)`` and returns ``present_conv.i`` / ``present_ssm.i``::

    input_ids ─ Gather(embed) ─┬─ RMSNorm ─ MatMul(in_proj) ─ Split ─ z, xBC, dt
                               │   xBC ─ Concat(past_conv) ─ depthwise conv (K shifted Mul/Add) ─ SiLU ─ Split ─ x (H·P), B, C (G·N)
                               │   dt ─ + dt_bias ─ Softplus [─ Clip(time_step_limit)]
                               │   ─ If T = 1: one step  S = exp(dt·A)·S + dt·x⊗B ; y = S·C     (past_ssm in, present_ssm out)
                               │     else:     chunked SSD (below)
                               │   ─ y + x·D ─ gated RMSNorm (norm(y·silu(z)) per group) ─ MatMul(out_proj)
                               └──────────────── Add (residual) ─ next layer ... ─ RMSNorm ─ Slice(logits_to_keep) ─ MatMul(lm_head)

A prompt (``T > 1``) runs the SSD in chunked form, as the torch backend's
``ssd_chunked`` does: ``T`` is cut into ``n = ceil(T / CHUNK)`` chunks of equal
length ``L`` (the last few positions padded with ``dt = 0``, which leaves the
state exactly unchanged), every chunk's masked decay-weighted "attention"
``(C Bᵀ) ∘ exp(segsum(dt·A))`` and its own end state are batched MatMuls over
all chunks at once, and only the ``(H, P, N)`` state steps from chunk to
chunk, in a Scan of ``n`` iterations (three ops each). A decode step (``T = 1``)
takes the other branch, the recurrence for one token, about as many ops as the
one-iteration Scan it replaces. (A Scan over chunks alone could not serve both:
onnxruntime's Scan refuses a zero-length sequence.) Both are the same sums as
the torch backend's, in float32: ``A``, ``D``, ``dt_bias`` and the state stay
float32 whatever the quantisation. Weights come from agentd's own Mamba-2
loader (:mod:`agentd.plugins.ssm.mamba2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder
from .layers import (
    INT64_MAX, StateIO, causal_conv, finish_recurrent, head_weight, linear, np32, rms_norm, scan, silu, step_or_chunked,
)

ARCHITECTURES = ("Mamba2ForCausalLM",)
#: Prefill chunk (tokens): the torch backend's ``DEFAULT_CHUNK``.
CHUNK = 64


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
    dims = _Dims(H, P, N, G, CHUNK)
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
        dt4 = g.node("Unsqueeze", [dt, g.const_i64([-1])], name=f"{base}/ssm/dt_Unsqueeze")  # (B, T, H, 1)
        dtx = g.node("Mul", [x_heads, dt4], name=f"{base}/ssm/dtx")  # (B, T, H, P)
        y = _ssd(g, f"{base}/ssm", dt, dtx, b_mat, c_mat, f"past_ssm.{i}", f"present_ssm.{i}", g.param(f"{key}.A", np32(layer.A)), dims)
        skip = g.node("Mul", [x_heads, g.param(f"{key}.D", np32(layer.D).reshape(H, 1))], name=f"{base}/skip/Mul")
        y = g.node("Add", [y, skip], name=f"{base}/skip/Add")
        y = g.node("Reshape", [y, g.const_i64([0, 0, d_inner])], name=f"{base}/y/Reshape")  # (B, T, d_inner)
        out = _gated_rms_norm(g, f"{base}/gate_norm", y, z, np32(layer.gate_norm), G, eps)
        out = linear(g, f"{base}/out_proj", out, np32(layer.out_proj), np32(layer.out_proj_bias))
        hidden = g.node("Add", [hidden, out], name=f"{base}/residual/Add")

    final = rms_norm(g, "/model/norm_f", hidden, np32(backend.norm_f), eps)
    head = head_weight(g, backend.lm_head, embed if c.tie_word_embeddings and not separate_lm_head else None)
    return finish_recurrent(g, state, final, head, backend, layers=c.num_hidden_layers, hidden_size=c.hidden_size, tied_weights=["backbone.embeddings.weight", "lm_head.MatMul.weight"] if c.tie_word_embeddings else None)


@dataclass(frozen=True)
class _Dims:
    """Heads ``H`` of ``P`` channels, state size ``N``, ``G`` groups of B/C, prefill chunk ``Q``."""

    H: int
    P: int
    N: int
    G: int
    Q: int

    @property
    def R(self) -> int:
        """Heads per group."""
        return self.H // self.G


def _ssd(g: GraphBuilder, name: str, dt: str, dtx: str, b_mat: str, c_mat: str, past: str, present: str, A: str, d: _Dims) -> str:
    """The SSD over ``T`` tokens: ``y`` ``(B, T, H, P)``; the final state goes to ``present``.

    ``dt`` ``(B, T, H)``, ``dtx = dt·x`` ``(B, T, H, P)``, ``b_mat``/``c_mat``
    ``(B, T, G·N)``. An ``If`` on ``T`` picks one recurrent step (decode) or the
    chunked form (prefill). The branches read ``dt``, ``dtx``, ``b_mat`` and
    ``c_mat`` from this graph; the quantisers re-sort nodes by explicit inputs
    only, so the condition is computed from ``dtx``, whose producers come after
    those of all four.
    """
    return step_or_chunked(
        g, name, dtx, present,
        lambda: _ssd_step(g, f"{name}/step", dt, dtx, b_mat, c_mat, past, A, d),
        lambda: _ssd_chunked(g, f"{name}/chunked", dt, dtx, b_mat, c_mat, past, A, d),
    )


def _ssd_step(g: GraphBuilder, name: str, dt: str, dtx: str, b_mat: str, c_mat: str, past: str, A: str, d: _Dims) -> tuple[str, str]:
    """One token: ``h = exp(dt·A)·h + dtx⊗B``, ``y = h·C``, heads grouped ``(B, G, R, ...)``; returns ``(y, h)``."""
    G, R, P, N = d.G, d.R, d.P, d.N
    decay = g.node("Exp", [g.node("Mul", [dt, A], name=f"{name}/dtA")], name=f"{name}/decay")  # (B, 1, H)
    decay = g.node("Reshape", [decay, g.const_i64([0, G, R, 1, 1])], name=f"{name}/decay_Reshape")
    dtx = g.node("Reshape", [dtx, g.const_i64([0, G, R, P, 1])], name=f"{name}/dtx_Reshape")
    b_row = g.node("Reshape", [b_mat, g.const_i64([0, G, 1, 1, N])], name=f"{name}/B_Reshape")
    c_col = g.node("Reshape", [c_mat, g.const_i64([0, G, 1, N, 1])], name=f"{name}/C_Reshape")
    h = g.node("Reshape", [past, g.const_i64([0, G, R, P, N])], name=f"{name}/h_Reshape")
    h = g.node("Mul", [h, decay], name=f"{name}/decayed")
    h = g.node("Add", [h, g.node("Mul", [dtx, b_row], name=f"{name}/inject")], name=f"{name}/update")  # (B, G, R, P, N)
    y = g.node("MatMul", [h, c_col], name=f"{name}/readout")  # (B, G, R, P, 1)
    y = g.node("Reshape", [y, g.const_i64([0, 1, d.H, P])], name=f"{name}/y")
    return y, g.node("Reshape", [h, g.const_i64([0, d.H, P, N])], name=f"{name}/state")


def _ssd_chunked(
    g: GraphBuilder, name: str, dt: str, dtx: str, b_mat: str, c_mat: str, past: str, A: str, d: _Dims
) -> tuple[str, str]:
    """The chunked SSD (:func:`agentd.plugins.ssm.ssd.ssd_chunked`, batched over chunks); returns ``(y, final state)``.

    ``T`` tokens are cut into ``n = ceil(T / Q)`` chunks of ``L = ceil(T / n)``,
    the last ones padded with ``dt = 0`` (decay 1, input 0: the state passes
    through unchanged; their outputs are dropped). Within every chunk at once:
    ``y = ((C Bᵀ) ∘ exp(segsum(dt·A))) · dtx`` and each chunk's own end state.
    Across chunks only ``h_end = h_start·exp(Σ dt·A) + own`` steps, in a Scan of
    ``n`` iterations; then every chunk reads its carried-in state through ``C``.
    """
    G, R, P, N, H = d.G, d.R, d.P, d.N, d.H
    i64 = g.const_i64

    def op(kind: str, inputs: list[str], label: str, **attributes: Any) -> str:
        return g.node(kind, inputs, name=f"{name}/{label}", **attributes)

    def shape(label: str, *parts: str) -> str:
        return op("Concat", list(parts), f"{label}/shape", axis=0)

    length = op("Slice", [op("Shape", [dt], "Shape"), i64([1]), i64([2])], "T")  # (1,)
    chunks = op("Div", [op("Add", [length, i64([d.Q - 1])], "n/Add"), i64([d.Q])], "n")
    size = op("Div", [op("Add", [op("Sub", [length, i64([1])], "L/Sub"), chunks], "L/Add"), chunks], "L")  # ceil(T/n)
    padding = op("Concat", [i64([0]), op("Sub", [op("Mul", [chunks, size], "Tp"), length], "pad")], "pads", axis=0)

    def pad(x: str, label: str) -> str:
        return op("Pad", [x, padding, g.const_f32(0.0), i64([1])], f"{label}/Pad")  # along time only

    a = pad(op("Mul", [dt, A], "dtA"), "dtA")  # (B, Tp, H), <= 0
    a = op("Reshape", [a, shape("a", i64([0, -1]), size, i64([H]))], "a/Reshape")  # (B, n, L, H)
    a = op("Transpose", [a], "a/Transpose", perm=[0, 1, 3, 2])  # (B, n, H, L)
    a_cum = op("CumSum", [a, i64(-1)], "a_cum")

    # exp(segsum): decay[t, s] = exp(a[s+1] + ... + a[t]) for s <= t, else 0 (a masked cumsum, as ssd.segsum).
    square = op("Concat", [size, size], "LxL", axis=0)
    lower = [i64([0, 0]), square, i64([0, 1])]
    strict = op("Slice", [g.param(f"{name}.strict_lower", np.tril(np.ones((d.Q, d.Q), np.float32), -1)), *lower], "strict")
    causal = op("Slice", [g.param(f"{name}.lower", np.tril(np.ones((d.Q, d.Q), np.float32))), *lower], "causal")
    rows = op("Mul", [op("Unsqueeze", [a, i64([-1])], "a/rows"), strict], "segsum/mask")  # (B, n, H, L_t, L_s)
    decay = op("Mul", [op("Exp", [op("CumSum", [rows, i64(-2)], "segsum")], "segsum/Exp"), causal], "decay")
    decay = op("Reshape", [decay, shape("decay", i64([0, 0, G, R, -1]), size)], "decay/Reshape")  # (B, n, G, R, L, L)

    # B and C per chunk and group: (B, n, G, L, N).
    grouped = shape("groups", i64([0, -1]), size, i64([G, N]))
    b_g, c_g = (
        op("Transpose", [op("Reshape", [pad(m, label), grouped], f"{label}/Reshape")], f"{label}/Transpose", perm=[0, 1, 3, 2, 4])
        for m, label in ((b_mat, "B"), (c_mat, "C"))
    )
    scores = op("MatMul", [c_g, op("Transpose", [b_g], "B/T", perm=[0, 1, 2, 4, 3])], "scores")  # (B, n, G, L_t, L_s)
    weights = op("Mul", [decay, op("Unsqueeze", [scores, i64([3])], "scores/heads")], "weights")  # (B, n, G, R, L, L)
    xs = op("Reshape", [pad(dtx, "dtx"), shape("dtx", i64([0, -1]), size, i64([G, R, P]))], "dtx/Reshape")
    xs = op("Transpose", [xs], "dtx/Transpose", perm=[0, 1, 3, 4, 2, 5])  # (B, n, G, R, L, P)
    y_own = op("MatMul", [weights, xs], "y_own")  # (B, n, G, R, L, P)

    # Each chunk's own end state (zero start) and its total decay, then the Scan across chunks.
    per_head = shape("per_head", i64([0, 0, G, R, -1]), i64([1]))
    a_end = op("Slice", [a_cum, i64([-1]), i64([INT64_MAX]), i64([-1])], "a_end")  # (B, n, H, 1)
    to_end = op("Reshape", [op("Exp", [op("Sub", [a_end, a_cum], "to_end/Sub")], "to_end/Exp"), per_head], "to_end")
    xs_to_end = op("Transpose", [op("Mul", [xs, to_end], "xs_to_end")], "xs_to_end/T", perm=[0, 1, 2, 3, 5, 4])
    own = op("MatMul", [xs_to_end, op("Unsqueeze", [b_g, i64([3])], "B/heads")], "own_state")  # (B, n, G, R, P, N)
    total = op("Reshape", [op("Exp", [a_end], "total/Exp"), i64([0, 0, G, R, 1, 1])], "total")
    start = op("Reshape", [past, i64([0, G, R, P, N])], "past/Reshape")
    final = f"{name}/final"
    (starts,) = scan(
        g,
        f"{name}/Scan",
        [(start, final)],
        [total, own],
        _chunk_body(),
        ([("h_in", 5), ("total_t", 5), ("own_t", 5)], [("h_out", 5), ("h_start", 5)]),
        outputs=1,
    )  # starts: (B, n, G, R, P, N), the state entering each chunk

    # The carried-in state read through C and decayed to each position.
    c_heads = op("Unsqueeze", [c_g, i64([3])], "C/heads")  # (B, n, G, 1, L, N)
    y_in = op("MatMul", [c_heads, op("Transpose", [starts], "starts/T", perm=[0, 1, 2, 3, 5, 4])], "y_in")  # (B, n, G, R, L, P)
    y_in = op("Mul", [y_in, op("Reshape", [op("Exp", [a_cum], "from_start/Exp"), per_head], "from_start")], "y_in/decayed")
    y = op("Transpose", [op("Add", [y_own, y_in], "y/Add")], "y/Transpose", perm=[0, 1, 4, 2, 3, 5])  # (B, n, L, G, R, P)
    y = op("Reshape", [y, i64([0, -1, H, P])], "y/Reshape")  # (B, Tp, H, P)
    y = op("Slice", [y, i64([0]), length, i64([1])], "y")  # the padding's outputs dropped
    return y, op("Reshape", [final, i64([0, H, P, N])], "state")


def _chunk_body() -> list[Any]:
    """One chunk boundary: ``h_out = h_in·total + own``; also emits ``h_in``, the state entering the chunk."""
    return [
        helper.make_node("Identity", ["h_in"], ["h_start"], name="chunk/h_start"),
        helper.make_node("Mul", ["h_in", "total_t"], ["decayed"], name="chunk/decayed"),
        helper.make_node("Add", ["decayed", "own_t"], ["h_out"], name="chunk/h_out"),
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
