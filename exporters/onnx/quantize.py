"""Weight quantisation of a saved graph: block-quantised MatMuls and embedding lookups.

Every mode is weight-only block quantisation along the input dimension, with
int8 activations inside ``MatMulNBits`` (``accuracy_level`` 4), as
onnxruntime-genai's builder does for CPU. The LM head is an 8-bit block
MatMul in both modes, and a tied embedding gathers from the head's blocks
(:func:`share_tied_embedding`, as the builder's ``shared_embeddings`` does), so
the table is stored once — the split llama.cpp's Q4_1/Q8_0 files make too.

* ``int8`` — 8-bit symmetric blocks (``MatMulNBitsQuantizer``), like llama.cpp's
  Q8_0. It replaced onnxruntime's dynamic quantisation (per-channel int8
  weights, per-tensor int8 activations), which on SmolLM2-135M's real weights
  took perplexity from 11.7 to 37.8; the blocks keep it at 11.8.
* ``int4`` from float weights — 4-bit blocks with a scale and an integer zero
  point each, on ``MatMulNBits``' fast path. On the one real float checkpoint
  here (all-MiniLM-L6-v2) they kept embeddings closer to fp32 than symmetric
  blocks (llama.cpp Q4_0's layout, onnxruntime-genai's default): cosine 0.980
  vs 0.976, nearest neighbour kept for 86% vs 84% of 50 clauses, for
  0-2.6% slower decode on SmolLM2's shape (docs/quant_quality.md). An untied
  embedding is a symmetric 4-bit ``GatherBlockQuantized``.
* ``int4`` from weights already on a 4-bit grid (a GGUF Q4 file, ``keep_grid``):
  a weight on symmetric blocks (Q4_0) is stored as such, exactly; any other
  (Q4_1, Q4_K) as 4-bit blocks with a scale and an offset each (Q4_1's layout,
  :mod:`.offset_int4`), which reproduce that grid exactly: re-quantising it onto
  symmetric blocks took SmolLM2-135M's perplexity from 11.7 to 20.1
  (docs/quant_quality.md). The offset path costs decode speed (docs/bench_onnx.md).

Norm weights, biases, rotary tables and the KV cache are not touched: they stay
float32. (``fp16`` needs no pass here: the graph is built with float16 weights.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from .graph import save_model
from .offset_int4 import quantize_offset_int4

#: Name every exporter gives the LM head's MatMul.
LM_HEAD = "/lm_head/MatMul"

#: ``MatMulNBits`` accuracy level 4: int8 activations (the CPU kernel's fast path).
ACCURACY_LEVEL = 4


def quantize_model(
    path: Path,
    quant: str,
    block_size: int,
    keep_float32: Sequence[str] = (),
    tied: tuple[str, str] | None = None,
    keep_grid: bool = False,
) -> str | None:
    """Rewrite the graph at ``path`` (external data beside it) in place.

    Returns the 4-bit body's block layout (int4): ``offset`` when any weight
    kept offsets, ``zero_point`` (a float source), else ``symmetric``; None for int8.
    ``keep_float32`` names MatMul nodes left unquantised (an SSM's ``dt_proj``).
    ``tied`` names the (embedding, LM head) initializers of a tied model: the
    embedding is rewired onto the head's blocks. ``keep_grid``: the weights
    already lie on 4-bit blocks of ``block_size`` (a GGUF Q4 source; int4 only).
    """
    if quant not in ("int8", "int4"):
        raise ValueError(f"no quantisation pass for {quant!r}")
    model = onnx.load(str(path))
    if quant == "int8":
        model = _block_quantize(model, 8, block_size, ("MatMul",), exclude=keep_float32)
    else:
        if keep_grid:
            # Offsets for the Q4_1-style tensors; the ones on symmetric blocks (Q4_0) stay so, exactly.
            on_grid = set(quantize_offset_int4(model, block_size, {*keep_float32, LM_HEAD}, ACCURACY_LEVEL))
            rest = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.name not in on_grid]
            model = _block_quantize(model, 4, block_size, ("MatMul",), exclude=rest)
        else:
            model = _block_quantize(model, 4, block_size, ("MatMul",), exclude=[*keep_float32, LM_HEAD], symmetric=False)
        # The quantiser's include list only adds nodes; exclude every other MatMul instead.
        others = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.name != LM_HEAD]
        # 8 bits: with a 4-bit body this good, a 4-bit head cost SmolLM2 1.3 perplexity (12.99 vs 11.68).
        model = _block_quantize(model, 8, block_size, ("MatMul",), exclude=others)
        if tied is None:
            model = _block_quantize(model, 4, block_size, ("Gather",))
    if tied is not None:
        share_tied_embedding(model, *tied)
    save_model(model, path)
    if quant != "int4":
        return None
    if any(node.name.endswith("/offsets") for node in model.graph.node):
        return "offset"
    return "symmetric" if keep_grid else "zero_point"


def _block_quantize(
    model: onnx.ModelProto,
    bits: int,
    block_size: int,
    op_types: tuple[str, ...],
    *,
    exclude: Sequence[str] = (),
    symmetric: bool = True,
) -> onnx.ModelProto:
    """onnxruntime's ``MatMulNBitsQuantizer``: ``bits``-bit blocks for the ``op_types`` nodes chosen,
    symmetric or with an integer zero point each."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # It logs every node at INFO (and turns the root logger on at import): keep `agentd export` quiet.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=ACCURACY_LEVEL,
        nodes_to_exclude=list(exclude),
        op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    return quantizer.model.model


def share_tied_embedding(model: onnx.ModelProto, embedding: str, head: str) -> None:
    """Make the embedding lookup read the LM head's ``MatMulNBits`` blocks (a ``GatherBlockQuantized``).

    Both hold ``W[v, :]`` along the hidden axis: MatMulNBits stores
    ``(V, C/block, block*bits/8)`` packed uint4 or uint8 codes (implicit zero
    point 8 or 128) and per-block scales ``(V, C/block)``; a Reshape to
    ``(V, C*bits/8)`` makes that the ``gather_axis=0, quantize_axis=1`` table
    GatherBlockQuantized reads with the same ``bits`` and zero point. The
    embedding's own table (a quantised copy, or float32 where the quantiser
    leaves 8-bit Gathers alone) is dropped. Leaves the graph alone when there is
    no quantised head or it has explicit zero points the gather would not read.
    """
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    gather = next(
        (n for n in graph.node if n.op_type in ("Gather", "GatherBlockQuantized") and n.input[0].startswith(embedding)), None
    )
    matmul = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.input[1].startswith(head)), None)
    if gather is None or matmul is None or len(matmul.input) > 3 and matmul.input[3]:
        return
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in matmul.attribute}
    bits = int(attrs.get("bits", 0))
    if bits not in (4, 8):
        return
    vocab, hidden = int(attrs["N"]), int(attrs["K"])
    table_shape = f"{head}/shared_embedding/shape"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([vocab, hidden * bits // 8], dtype=np.int64), table_shape))
    table = f"{head}/shared_embedding/table"
    reshape = onnx.helper.make_node("Reshape", [matmul.input[1], table_shape], [table], name=f"{gather.name}/Reshape")
    graph.node.insert(list(graph.node).index(gather), reshape)
    stale = [gather.input[0], *(name for name in gather.input[2:] if name)]
    indices = gather.input[1]
    del gather.input[:]
    gather.input.extend([table, indices, matmul.input[2]])  # the head's codes and per-block scales, (V, C/block)
    gather.op_type, gather.domain = "GatherBlockQuantized", "com.microsoft"
    del gather.attribute[:]
    gather.attribute.extend(
        [
            onnx.helper.make_attribute("bits", bits),
            onnx.helper.make_attribute("block_size", int(attrs["block_size"])),
            onnx.helper.make_attribute("gather_axis", 0),
            onnx.helper.make_attribute("quantize_axis", 1),
        ]
    )
    still_used = {name for node in graph.node for name in node.input}
    for name in stale:
        if name in inits and name not in still_used:
            graph.initializer.remove(inits[name])
