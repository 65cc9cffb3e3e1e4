"""4-bit weights with a scale and an offset per block (llama.cpp's Q4_1 layout) on stock onnxruntime ops.

Each block of ``block`` weights along the input dimension is stored as 4-bit
codes ``q`` with ``w = scale * q + low`` (``scale = (max - min) / 15``,
``low = min``): asymmetric, so a block whose weights are not centred on zero
keeps all 16 levels. A GGUF Q4_1 file dequantised at load lies exactly on
such a grid, so exporting it reproduces its weights; symmetric 4-bit blocks
re-quantise them instead, which on SmolLM2-135M took perplexity from 11.7 to
18.4 (docs/quant_quality.md).

``MatMulNBits`` only runs fast with integer zero points (float ones fall back
to a path ~80x slower here), so the offset is carried separately::

    x @ W.T = MatMulNBits(x, q, scale)          # sum scale * (q - 8) * x, int8 activations
            + (x @ S) @ O                       # S (K, K/block) sums x per block; O (K/block, N)

with ``O[b, n] = low[n, b] + 8 * scale[n, b]``. The offset path is float32 and
costs about 1/block of the main one; projections reading the same input share
its block sums.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Levels of a 4-bit code.
LEVELS = 15


def quantize_offset_int4(model: onnx.ModelProto, block: int, exclude: set[str], accuracy_level: int) -> list[str]:
    """Replace every MatMul with a float weight ``(K, N)``, ``K % block == 0``, not in ``exclude``, in place.

    ``accuracy_level`` is MatMulNBits' (4: int8 activations, the fast CPU path).
    A weight already on symmetric 4-bit blocks (a GGUF Q4_0 tensor) is left
    alone: plain symmetric blocks reproduce it exactly and need no offset path,
    where offsets would re-quantise it. Returns the names of those MatMuls.
    """
    symmetric: list[str] = []
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    block_sums: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or node.name in exclude or consumers.get(weight.name, 0) != 1:
            nodes.append(node)
            continue
        matrix = numpy_helper.to_array(weight)
        if matrix.ndim != 2 or matrix.dtype != np.float32 or matrix.shape[0] % block:
            nodes.append(node)
            continue
        if on_symmetric_grid(matrix, block):
            symmetric.append(node.name)
            nodes.append(node)
            continue
        k, n = matrix.shape
        codes, scales, offsets = _blocks(matrix, block)
        x, (y,) = node.input[0], node.output
        graph.initializer.remove(weight)
        graph.initializer.extend(
            [
                numpy_helper.from_array(codes, f"{weight.name}_Q4"),
                numpy_helper.from_array(scales, f"{weight.name}_scales"),
                numpy_helper.from_array(offsets, f"{weight.name}_offsets"),
            ]
        )
        if (x, k) not in block_sums:
            block_sums[(x, k)] = _block_sum(graph, nodes, x, k, block, node.name)
        nodes.append(
            helper.make_node(
                "MatMulNBits", [x, f"{weight.name}_Q4", f"{weight.name}_scales"], [f"{y}/codes"],
                name=f"{node.name}_Q4", domain="com.microsoft", K=k, N=n, bits=4, block_size=block,
                accuracy_level=accuracy_level,
            )
        )
        nodes.append(helper.make_node("MatMul", [block_sums[(x, k)], f"{weight.name}_offsets"], [f"{y}/offsets"], name=f"{node.name}/offsets"))
        nodes.append(helper.make_node("Add", [f"{y}/codes", f"{y}/offsets"], [y], name=f"{node.name}/Add"))
    del graph.node[:]
    graph.node.extend(nodes)
    return symmetric


def on_symmetric_grid(matrix: np.ndarray, block: int) -> bool:
    """Whether ``W = matrix.T`` is exactly ``scale * q`` per block, ``q`` in -8..7, ``scale`` = the
    block's largest-magnitude weight / -8: the grid symmetric blocks (Q4_0, MatMulNBits) store."""
    k, n = matrix.shape
    w = matrix.T.reshape(n, k // block, block)  # (N, blocks, block)
    peak = np.take_along_axis(w, np.abs(w).argmax(axis=-1)[..., None], axis=-1)  # (N, blocks, 1)
    scale = np.where(peak == 0, 1.0, peak / -8.0)
    q = np.clip(np.rint(w / scale), -8, 7)
    return bool(np.array_equal((q * scale).astype(np.float32), w))


def _blocks(matrix: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packed codes ``(N, K/block, block/2)``, scales ``(N, K/block)``, offsets ``(K/block, N)`` of ``W = matrix.T``."""
    k, n = matrix.shape
    w = matrix.T.astype(np.float64).reshape(n, k // block, block)  # (N, blocks, block)
    low, high = w.min(axis=-1), w.max(axis=-1)
    scale = (high - low) / LEVELS
    scale[scale == 0] = 1.0  # a constant block: every code 0, the offset carries the value
    q = np.clip(np.rint((w - low[..., None]) / scale[..., None]), 0, LEVELS).astype(np.uint8)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)  # low nibble first, as MatMulNBits reads it
    offsets = (low + 8 * scale).T  # MatMulNBits subtracts its implicit zero point 8
    return packed, scale.astype(np.float32), np.ascontiguousarray(offsets, dtype=np.float32)


def _block_sum(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], x: str, k: int, block: int, name: str) -> str:
    """``x @ S``: the sum of ``x`` over each block of the input dimension, ``(..., K/block)``."""
    selector = f"offset_int4/block_sum/{k}x{block}"
    if not any(init.name == selector for init in graph.initializer):
        table = np.zeros((k, k // block), dtype=np.float32)
        table[np.arange(k), np.arange(k) // block] = 1.0
        graph.initializer.append(numpy_helper.from_array(table, selector))
    out = f"{name}/block_sum"
    nodes.append(helper.make_node("MatMul", [x, selector], [out], name=out))
    return out
