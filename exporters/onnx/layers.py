"""Building blocks shared by the exported graphs (the fixed-state ones above all: Mamba, Mamba-2, RWKV-4, RWKV-7).

Each function adds a few named nodes to a :class:`GraphBuilder` and returns the
output name. :class:`StateIO` declares the graph's explicit state (``past_*``
inputs, ``present_*`` outputs, batch first) and writes the manifest entries
:mod:`agentd.plugins.onnxrt.recurrent` serves from; :func:`scan` wraps ONNX
``Scan``, the exact sequential recurrence one graph runs for a prompt chunk
(``T`` steps) and a decode step (one).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from onnx import TensorProto, helper

from .graph import GraphBuilder

LOGITS_TO_KEEP = "logits_to_keep"
INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass
class StateIO:
    """The graph's state tensors, in declaration order (the manifest's ``onnx.state``)."""

    g: GraphBuilder
    entries: list[dict[str, Any]] = field(default_factory=list)

    def declare(self, past: str, present: str, shape: Sequence[int], initial: float = 0.0) -> str:
        """Add graph input ``past`` ``(batch_size, *shape)``; ``present`` becomes an output in :meth:`outputs`.

        ``initial`` is the value of a fresh sequence's state (RWKV-4's running
        maximum starts at -1e38, everything else at 0).
        """
        full = ["batch_size", *shape]
        self.g.input(past, "float32", full)
        entry: dict[str, Any] = {"input": past, "output": present, "dtype": "float32", "shape": full}
        if initial:
            entry["initial"] = initial
        self.entries.append(entry)
        return past

    def outputs(self) -> None:
        """Declare every ``present`` output (after ``logits``, as onnxruntime-genai orders them)."""
        for entry in self.entries:
            self.g.output(entry["output"], "float32", entry["shape"])


def layer_norm(g: GraphBuilder, name: str, x: str, weight: np.ndarray, bias: np.ndarray | None, eps: float) -> str:
    """LayerNorm over the last axis (fp32 statistics)."""
    key = name.lstrip("/").replace("/", ".")
    inputs = [x, g.param(f"{key}.weight", weight)]
    if bias is not None:
        inputs.append(g.param(f"{key}.bias", bias))
    return g.node("LayerNormalization", inputs, name=f"{name}/LayerNorm", axis=-1, epsilon=eps, stash_type=1)


def rms_norm(g: GraphBuilder, name: str, x: str, weight: np.ndarray, eps: float) -> str:
    """RMSNorm over the last axis."""
    gamma = g.param(f"{name.lstrip('/').replace('/', '.')}.weight", weight)
    return g.node("RMSNormalization", [x, gamma], name=f"{name}/RMSNorm", axis=-1, epsilon=eps, stash_type=1)


def silu(g: GraphBuilder, name: str, x: str) -> str:
    return g.node("Mul", [x, g.node("Sigmoid", [x], name=f"{name}/Sigmoid")], name=f"{name}/Mul")


def linear(g: GraphBuilder, name: str, x: str, weight: np.ndarray, bias: np.ndarray | None = None) -> str:
    """``x @ weight.T (+ bias)`` for a torch-layout ``(out, in)`` weight, stored ``(in, out)`` as MatMul wants."""
    key = name.lstrip("/").replace("/", ".")
    y = g.node("MatMul", [x, g.weight(f"{key}.MatMul.weight", np.ascontiguousarray(weight.T))], name=f"{name}/MatMul")
    if bias is not None:
        y = g.node("Add", [y, g.param(f"{key}.Add.bias", bias)], name=f"{name}/Add")
    return y


def lerp(g: GraphBuilder, name: str, start: str, end: str, weight: str) -> str:
    """``start + weight * (end - start)`` (torch.lerp)."""
    delta = g.node("Sub", [end, start], name=f"{name}/Sub")
    return g.node("Add", [start, g.node("Mul", [delta, weight], name=f"{name}/Mul")], name=f"{name}/Add")


def token_shift(g: GraphBuilder, name: str, x: str, past: str, present: str) -> str:
    """Each row's predecessor ``(B, T, C)``: ``past`` ``(B, C)`` then ``x[:, :-1]``; ``x[:, -1]`` goes to ``present``."""
    previous = g.node("Unsqueeze", [past, g.const_i64([1])], name=f"{name}/Unsqueeze")  # (B, 1, C)
    window = g.node("Concat", [previous, x], name=f"{name}/Concat", axis=1)  # (B, T+1, C)
    last = g.node("Gather", [window, g.const_i64(-1)], name=f"{name}/last", axis=1)  # (B, C)
    g.node("Identity", [last], name=f"{name}/present", outputs=[present])
    return g.node(
        "Slice", [window, g.const_i64([0]), g.const_i64([-1]), g.const_i64([1])], name=f"{name}/Slice"
    )  # (B, T, C)


def causal_conv(
    g: GraphBuilder, name: str, x: str, past: str, present: str, weight: np.ndarray, bias: np.ndarray | None
) -> str:
    """Depthwise causal conv over ``[past K-1 inputs, x]`` (``x`` ``(B, T, D)``); its last K-1 rows go to ``present``.

    ``weight`` is the kernel ``(D, K)``; returns ``(B, T, D)`` before activation.
    Written as ``K`` shifted multiply-adds (``out_t = Σ_k window[t+k]·w[k]``),
    as the torch backend does: onnxruntime's grouped ``Conv`` runs one small GEMM
    per channel and took ~4x longer for a decode step at mamba-130m's size.
    """
    kernel = weight.shape[-1]
    window = g.node("Concat", [past, x], name=f"{name}/Concat", axis=1)  # (B, K-1+T, D)
    g.node(
        "Slice",
        [window, g.const_i64([-(kernel - 1)]), g.const_i64([INT64_MAX]), g.const_i64([1])],
        name=f"{name}/state",
        outputs=[present],
    )
    key = name.lstrip("/").replace("/", ".")
    out = None
    for k in range(kernel):
        end = g.const_i64([k - (kernel - 1)] if k < kernel - 1 else [INT64_MAX])
        rows = g.node("Slice", [window, g.const_i64([k]), end, g.const_i64([1])], name=f"{name}/tap_{k}/Slice")  # (B, T, D)
        tap = g.param(f"{key}.weight.{k}", np.ascontiguousarray(weight[:, k]))  # (D,): scales window[t+k]
        term = g.node("Mul", [rows, tap], name=f"{name}/tap_{k}/Mul")
        out = term if out is None else g.node("Add", [out, term], name=f"{name}/tap_{k}/Add")
    if bias is not None:
        out = g.node("Add", [out, g.param(f"{key}.bias", bias)], name=f"{name}/bias")
    return out  # type: ignore[return-value]


def np32(tensor: Any) -> np.ndarray | None:
    """A torch weight as a float32 NumPy array (None stays None: absent biases)."""
    return None if tensor is None else tensor.detach().float().numpy()


def head_weight(g: GraphBuilder, head: Any, embed: str | None) -> str:
    """The LM head as a ``(C, V)`` MatMul operand: the embedding transposed when tied, else its own weight."""
    if embed is not None:
        return g.node("Transpose", [embed], name="/lm_head/Transpose", perm=[1, 0])  # (C, V)
    return g.weight("lm_head.MatMul.weight", np.ascontiguousarray(np32(head).T))  # (C, V)


def finish_recurrent(
    g: GraphBuilder, state: StateIO, final: str, head: str, backend: Any, *, layers: int, hidden_size: int, **extra: Any
) -> tuple[Any, dict[str, Any]]:
    """Close a fixed-state graph: logits over ``final``, the state outputs, and the manifest's description.

    ``extra`` keys (e.g. ``keep_float32_nodes``, ``tied_weights``) are added to the description as given.
    """
    lm_head(g, final, head, backend.info.vocab_size)
    state.outputs()
    description = {
        "kind": "decoder",
        "cache": "recurrent",
        "num_hidden_layers": layers,
        "hidden_size": hidden_size,
        "vocab_size": backend.info.vocab_size,
        "context_length": backend.info.context_length,
        "parameters": backend.info.parameters,
        "state": state.entries,
        **extra,
    }
    return g.model("agentd"), description


def lm_head(g: GraphBuilder, hidden: str, head: str, vocab_size: int) -> None:
    """``logits`` of the last ``logits_to_keep`` positions (0, the default, keeps all)."""
    keep = g.input(LOGITS_TO_KEEP, "int64", [1])
    g.initializer(LOGITS_TO_KEEP, np.zeros(1, dtype=np.int64))
    first = g.node("Neg", [keep], name="/lm_head/keep/Neg")
    kept = g.node(
        "Slice", [hidden, first, g.const_i64([INT64_MAX]), g.const_i64([1])], name="/lm_head/keep/Slice"
    )  # (B, K, C)
    g.node("MatMul", [kept, head], name="/lm_head/MatMul", outputs=["logits"])
    g.output("logits", "float32", ["batch_size", "logits_length", vocab_size])


def scan(
    g: GraphBuilder,
    name: str,
    states: Sequence[tuple[str, str]],
    sequences: Sequence[str],
    body_nodes: Sequence[Any],
    body_io: tuple[Sequence[tuple[str, int]], Sequence[tuple[str, int]]],
    outputs: int,
) -> list[str]:
    """An ONNX ``Scan`` over axis 1 (time) of every ``sequences`` tensor ``(B, T, ...)``.

    ``states`` pairs each carried input with the graph name its final value gets
    (e.g. ``("past_wkv.0", "present_wkv.0")``). ``body_io`` lists the body's
    ``(name, rank)`` inputs (states then per-step slices) and outputs (new
    states then ``outputs`` per-step results, stacked back on axis 1). The body
    may read outer-scope *initializers* (per-channel constants); the quantisers
    re-sort the graph by explicit inputs only, so it must not read other nodes'
    outputs. Returns the stacked per-step outputs.

    (Measured: running a decode step's body inline under an ``If`` instead of a
    one-iteration Scan gained nothing at mamba-130m / rwkv-4-169m sizes.)
    """
    body_inputs, body_outputs = body_io

    def value(n: str, rank: int) -> Any:
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * rank)

    body = helper.make_graph(
        list(body_nodes),
        name.strip("/").replace("/", "_"),
        [value(n, r) for n, r in body_inputs],
        [value(n, r) for n, r in body_outputs],
    )
    stacked = [f"{name}/y_{i}" for i in range(outputs)]
    g.node(
        "Scan",
        [state for state, _ in states] + list(sequences),
        name=name,
        outputs=[present for _, present in states] + stacked,
        body=body,
        num_scan_inputs=len(sequences),
        scan_input_axes=[1] * len(sequences),
        scan_output_axes=[1] * outputs,
    )
    return stacked


def softplus(g: GraphBuilder, name: str, x: str) -> str:
    """``log(1 + e^x)`` as ``relu(x) + log(1 + e^-|x|)``: vectorised ops that never overflow.

    onnxruntime's ``Softplus`` kernel is scalar (two exp and two log per element):
    measured 1.8 ms for a ``(128, 1536)`` prompt where these six ops take 0.3 ms,
    and slower at one row too. The absolute error is under 6e-8 (the rounding of
    ``1 + e^-|x|``), so a very negative ``x`` gives 0 where the exact value is tiny.
    """
    tail = g.node("Neg", [g.node("Abs", [x], name=f"{name}/Abs")], name=f"{name}/Neg")
    tail = g.node("Add", [g.node("Exp", [tail], name=f"{name}/Exp"), g.const_f32(1.0)], name=f"{name}/Add_1")
    tail = g.node("Log", [tail], name=f"{name}/Log")
    return g.node("Add", [g.node("Relu", [x], name=f"{name}/Relu"), tail], name=f"{name}/Add")


@contextmanager
def subgraph_nodes(g: GraphBuilder) -> Iterator[list[Any]]:
    """Collect the nodes ``g`` gets inside the ``with`` block into a list (a subgraph's body) instead of the graph.

    Constants and parameters made in the block stay initializers of the outer
    graph, which a subgraph may read; node names stay unique across both.
    """
    outer, g.nodes = g.nodes, []
    try:
        yield g.nodes
    finally:
        g.nodes = outer


def step_or_chunked(
    g: GraphBuilder,
    name: str,
    sequence: str,
    present: str,
    step: Callable[[], tuple[str, str]],
    chunked: Callable[[], tuple[str, str]],
) -> str:
    """A recurrence's ``If`` on the length ``T`` of ``sequence`` ``(B, T, ...)``: ``step()`` for one
    token (decode), ``chunked()`` for more (prefill). Each builds its branch's nodes and returns
    ``(y, state)`` names, both rank 4; the state goes to ``present``. Returns ``y``.

    The branches read tensors of this graph, and the quantisers re-sort nodes by explicit inputs
    only: ``sequence`` must come after every tensor the branches read.
    """
    length = g.node("Gather", [g.node("Shape", [sequence], name=f"{name}/Shape"), g.const_i64(1)], name=f"{name}/T", axis=0)
    one_token = g.node("Equal", [length, g.const_i64(1)], name=f"{name}/one_token")
    with subgraph_nodes(g) as step_nodes:
        stepped = step()
    with subgraph_nodes(g) as chunk_nodes:
        chunks = chunked()
    y = f"{name}/y"
    g.node(
        "If",
        [one_token],
        name=f"{name}/If",
        outputs=[y, present],
        then_branch=branch(f"{name}/step", step_nodes, [(stepped[0], 4), (stepped[1], 4)]),
        else_branch=branch(f"{name}/chunked", chunk_nodes, [(chunks[0], 4), (chunks[1], 4)]),
    )
    return y


def branch(name: str, nodes: Sequence[Any], outputs: Sequence[tuple[str, int]]) -> Any:
    """An ``If`` branch: a GraphProto with no inputs whose float32 ``outputs`` are ``(name, rank)`` pairs."""
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None] * rank) for n, rank in outputs]
    return helper.make_graph(list(nodes), name.strip("/").replace("/", "_"), [], values)
