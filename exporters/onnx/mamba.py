"""Mamba (selective SSM) as one ONNX graph with explicit recurrent state I/O.

Per layer ``i`` the graph takes ``past_conv.i`` ``(batch, K-1, D)`` (the last
inputs of the causal conv) and ``past_ssm.i`` ``(batch, D, N)`` and returns
``present_conv.i`` / ``present_ssm.i``. One graph serves a prompt chunk and a
decode step (the sequence axis is dynamic)::

    input_ids ─ Gather(embed) ─┬─ RMSNorm ─ MatMul(in_proj) ─ Split ─ x ─ Concat(past_conv, x) ─ Conv(depthwise) ─ SiLU
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

import numpy as np
from onnx import TensorProto, helper

from agentd.checkpoint import Checkpoint

from .graph import GraphBuilder

ARCHITECTURES = ("MambaForCausalLM",)
PAST_CONV, PAST_SSM = "past_conv.%d", "past_ssm.%d"
PRESENT_CONV, PRESENT_SSM = "present_conv.%d", "present_ssm.%d"
LOGITS_TO_KEEP = "logits_to_keep"
_INT64_MAX = int(np.iinfo(np.int64).max)


def build_mamba_graph(checkpoint: Checkpoint, *, weight_dtype: str) -> tuple[Any, dict[str, Any]]:
    """The Mamba ModelProto and the manifest's description of it (state layout included)."""
    import torch

    from agentd.plugins.ssm.mamba import load

    backend = load(checkpoint)
    c = backend.config
    d_inner, n, r, k = c.intermediate_size, c.state_size, c.dt_rank, c.conv_kernel

    def np32(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to(torch.float32).numpy()

    g = GraphBuilder("agentd_mamba", weight_dtype)
    input_ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    conv_shape = ["batch_size", k - 1, d_inner]
    ssm_shape = ["batch_size", d_inner, n]
    for i in range(c.num_hidden_layers):
        g.input(PAST_CONV % i, "float32", conv_shape)
        g.input(PAST_SSM % i, "float32", ssm_shape)
    keep = g.input(LOGITS_TO_KEEP, "int64", [1])
    g.initializer(LOGITS_TO_KEEP, np.zeros(1, dtype=np.int64))  # default 0: every position

    embed = g.weight("backbone.embeddings.weight", np32(backend.embeddings))  # (V, C)
    hidden = g.node("Gather", [embed, input_ids], name="/model/embed/Gather", axis=0)  # (B, T, C)
    eps = float(c.layer_norm_epsilon)
    excluded: list[str] = []  # MatMuls that stay float32 when quantised
    for i, layer in enumerate(backend.layers):
        base = f"/model/layers.{i}"
        key = f"backbone.layers.{i}.mixer"
        normed = _rms_norm(g, f"{base}/norm", hidden, np32(layer.norm), eps)
        xz = _linear(g, f"{base}/in_proj", normed, np32(layer.in_proj), layer.in_proj_bias, np32)  # (B, T, 2D)
        xs, z = g.node("Split", [xz, g.const_i64([d_inner, d_inner])], name=f"{base}/in_proj/Split", outputs=2, axis=-1)

        # Causal depthwise conv over [past K-1 inputs, new inputs]; its tail is the next conv state.
        window = g.node("Concat", [PAST_CONV % i, xs], name=f"{base}/conv/Concat", axis=1)  # (B, K-1+T, D)
        g.node(
            "Slice",
            [window, g.const_i64([-(k - 1)]), g.const_i64([_INT64_MAX]), g.const_i64([1])],
            name=f"{base}/conv/state",
            outputs=[PRESENT_CONV % i],
        )
        channels_first = g.node("Transpose", [window], name=f"{base}/conv/Transpose", perm=[0, 2, 1])  # (B, D, K-1+T)
        conv_inputs = [channels_first, g.param(f"{key}.conv1d.weight", np32(layer.conv_weight).T.reshape(d_inner, 1, k))]
        if layer.conv_bias is not None:
            conv_inputs.append(g.param(f"{key}.conv1d.bias", np32(layer.conv_bias)))
        conv = g.node("Conv", conv_inputs, name=f"{base}/conv/Conv", group=d_inner, kernel_shape=[k])  # (B, D, T)
        conv = g.node("Transpose", [conv], name=f"{base}/conv/Transpose_back", perm=[0, 2, 1])  # (B, T, D)
        xc = _silu(g, f"{base}/conv/act", conv)

        x_dbl = _linear(g, f"{base}/x_proj", xc, np32(layer.x_proj), None, np32)  # (B, T, R+2N)
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
        y = g.node(
            "Scan",
            [PAST_SSM % i, decay, inject, c_mat],
            name=f"{base}/scan/Scan",
            outputs=[PRESENT_SSM % i, f"{base}/scan/y"],
            body=_scan_body(f"{base}/scan/body"),
            num_scan_inputs=3,
            scan_input_axes=[1, 1, 1],
            scan_output_axes=[1],
        )[1]  # (B, T, D)

        skip = g.node("Mul", [xc, g.param(f"{key}.D", np32(layer.D))], name=f"{base}/skip/Mul")
        y = g.node("Add", [y, skip], name=f"{base}/skip/Add")
        y = g.node("Mul", [y, _silu(g, f"{base}/gate/silu", z)], name=f"{base}/gate/Mul")
        out = _linear(g, f"{base}/out_proj", y, np32(layer.out_proj), layer.out_proj_bias, np32)
        hidden = g.node("Add", [hidden, out], name=f"{base}/residual/Add")

    final = _rms_norm(g, "/model/norm_f", hidden, np32(backend.norm_f), eps)
    first = g.node("Neg", [keep], name="/lm_head/keep/Neg")
    kept = g.node("Slice", [final, first, g.const_i64([_INT64_MAX]), g.const_i64([1])], name="/lm_head/keep/Slice")  # (B, K, C)
    head = g.weight("lm_head.MatMul.weight", np32(backend.lm_head).T)  # (C, V)
    g.node("MatMul", [kept, head], name="/lm_head/MatMul", outputs=["logits"])
    g.output("logits", "float32", ["batch_size", "logits_length", c.vocab_size])
    for i in range(c.num_hidden_layers):
        g.output(PRESENT_CONV % i, "float32", conv_shape)
        g.output(PRESENT_SSM % i, "float32", ssm_shape)

    state = []
    for i in range(c.num_hidden_layers):
        state.append({"input": PAST_CONV % i, "output": PRESENT_CONV % i, "dtype": "float32", "shape": conv_shape})
        state.append({"input": PAST_SSM % i, "output": PRESENT_SSM % i, "dtype": "float32", "shape": ssm_shape})
    description = {
        "kind": "decoder",
        "cache": "recurrent",
        "num_hidden_layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "vocab_size": c.vocab_size,
        "context_length": backend.info.context_length,
        "parameters": backend.info.parameters,
        "state": state,
        "keep_float32_nodes": excluded,
    }
    return g.model("agentd"), description


def _scan_body(name: str) -> Any:
    """One step: ``h = decay·h + inject``; ``y = Σ_n h·C`` for every row of the batch."""
    nodes = [
        helper.make_node("Mul", ["decay_t", "h_in"], ["decayed"], name=f"{name}/Mul"),
        helper.make_node("Add", ["decayed", "inject_t"], ["h_out"], name=f"{name}/Add"),
        helper.make_node("Unsqueeze", ["c_t", "axis_1"], ["c_b"], name=f"{name}/C_Unsqueeze"),  # (B, 1, N)
        helper.make_node("Mul", ["h_out", "c_b"], ["hc"], name=f"{name}/hC"),
        helper.make_node("ReduceSum", ["hc", "axis_last"], ["y_t"], name=f"{name}/ReduceSum", keepdims=0),  # (B, D)
    ]
    float_in = lambda n, rank: helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * rank)  # noqa: E731
    return helper.make_graph(
        nodes,
        name.replace("/", "_"),
        [float_in("h_in", 3), float_in("decay_t", 3), float_in("inject_t", 3), float_in("c_t", 2)],
        [float_in("h_out", 3), float_in("y_t", 2)],
        initializer=[
            helper.make_tensor("axis_1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axis_last", TensorProto.INT64, [1], [-1]),
        ],
    )


def _rms_norm(g: GraphBuilder, name: str, x: str, weight: np.ndarray, eps: float) -> str:
    gamma = g.param(f"{name.lstrip('/').replace('/', '.')}.weight", weight)
    return g.node("RMSNormalization", [x, gamma], name=f"{name}/RMSNorm", axis=-1, epsilon=eps, stash_type=1)


def _silu(g: GraphBuilder, name: str, x: str) -> str:
    return g.node("Mul", [x, g.node("Sigmoid", [x], name=f"{name}/Sigmoid")], name=f"{name}/Mul")


def _linear(g: GraphBuilder, name: str, x: str, weight: np.ndarray, bias: Any, np32: Any) -> str:
    """``x @ weight.T (+ bias)``; weight stored transposed ``(in, out)``."""
    key = name.lstrip("/").replace("/", ".")
    y = g.node("MatMul", [x, g.weight(f"{key}.MatMul.weight", weight.T)], name=f"{name}/MatMul")
    if bias is not None:
        y = g.node("Add", [y, g.param(f"{key}.Add.bias", np32(bias))], name=f"{name}/Add")
    return y
