"""Weight quantisation of a saved graph with onnxruntime's own tools.

* ``int8`` — dynamic quantisation (``quantize_dynamic``): int8 weights per output
  channel, activations quantised on the fly, for every MatMul (BERT's fused
  Attention keeps float32 weights: quantising it costs all-MiniLM ~0.005 cosine).
* ``int4`` — weight-only block quantisation (``MatMulNBitsQuantizer``): symmetric
  int4 blocks of ``block_size`` along the input dimension for every MatMul
  (``MatMulNBits``) and the embedding Gather (``GatherBlockQuantized``), with
  int8 activations inside MatMulNBits (``accuracy_level`` 4), as
  onnxruntime-genai's builder does for CPU. A tied embedding then gathers from
  the LM head's int4 blocks (:func:`share_tied_embedding`), as the builder's
  ``shared_embeddings`` does, so the table is stored once.

Norm weights, biases, rotary tables and the KV cache are not touched: they stay
float32. (``fp16`` needs no pass here: the graph is built with float16 weights.)
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from .graph import save_model

#: ``MatMulNBits`` accuracy level 4: int8 activations (the CPU kernel's fast path).
INT4_ACCURACY_LEVEL = 4


def quantize_model(
    path: Path, quant: str, block_size: int, keep_float32: Sequence[str] = (), tied: tuple[str, str] | None = None
) -> list[Path]:
    """Rewrite the graph at ``path`` (external data beside it) in place; returns the files written.

    ``keep_float32`` names MatMul nodes left unquantised (an SSM's ``dt_proj``).
    ``tied`` names the (embedding, LM head) initializers of a tied model: at int4
    the embedding is rewired onto the head's blocks.
    """
    if quant == "int8":
        model = _int8(path, keep_float32)
    elif quant == "int4":
        model = _int4(path, block_size, keep_float32)
        if tied is not None:
            share_tied_embedding(model, *tied)
    else:
        raise ValueError(f"no quantisation pass for {quant!r}")
    return save_model(model, path)


def _int8(path: Path, keep_float32: Sequence[str]) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic writes a file; give it a scratch directory beside the graph.
    scratch = Path(tempfile.mkdtemp(prefix=".int8-", dir=path.parent))
    try:
        target = scratch / path.name
        quantize_dynamic(
            path,
            target,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            nodes_to_exclude=list(keep_float32),
            weight_type=QuantType.QInt8,
            use_external_data_format=True,
            # Shape inference cannot see through contrib ops (GroupQueryAttention); every
            # tensor it cannot type is a float32 activation here.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return onnx.load(str(target))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _int4(path: Path, block_size: int, keep_float32: Sequence[str]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # It logs every node at INFO (and turns the root logger on at import): keep `agentd export` quiet.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(path)),
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=INT4_ACCURACY_LEVEL,
        nodes_to_exclude=list(keep_float32),
        op_types_to_quantize=("MatMul", "Gather"),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    return quantizer.model.model


def share_tied_embedding(model: onnx.ModelProto, embedding: str, head: str) -> None:
    """Make the embedding's ``GatherBlockQuantized`` read the LM head's ``MatMulNBits`` weight.

    Both hold ``W[v, :]`` in int4 blocks of the same size along the hidden axis:
    MatMulNBits stores ``(V, C/block, block/2)`` packed uint4 (zero point 8) and
    per-block scales ``(V, C/block)``; a Reshape to ``(V, C/2)`` makes that the
    ``gather_axis=0, quantize_axis=1`` table GatherBlockQuantized reads (``bits=4``
    over uint8 data, same implicit zero point). The embedding's own int4 copy is
    dropped. Leaves the graph alone when either op is missing or the blocks differ.
    """
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    gather = next((n for n in graph.node if n.op_type == "GatherBlockQuantized" and n.input[0].startswith(embedding)), None)
    matmul = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.input[1].startswith(head)), None)
    if gather is None or matmul is None or len(matmul.input) > 3 and matmul.input[3]:
        return  # nothing to share, or an asymmetric head whose zero points the gather would not read
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in matmul.attribute}
    gather_attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute}
    if attrs.get("bits") != 4 or attrs.get("block_size") != gather_attrs.get("block_size"):
        return
    vocab, hidden = int(attrs["N"]), int(attrs["K"])
    table_shape = f"{head}/shared_embedding/shape"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([vocab, hidden // 2], dtype=np.int64), table_shape))
    table = f"{head}/shared_embedding/table"
    reshape = onnx.helper.make_node("Reshape", [matmul.input[1], table_shape], [table], name=f"{gather.name}/Reshape")
    graph.node.insert(list(graph.node).index(gather), reshape)
    stale = [name for name in gather.input[2:] if name] + [gather.input[0]]
    gather.input[0] = table
    del gather.input[2:]
    gather.input.append(matmul.input[2])  # the head's per-block scales, (V, C/block)
    del gather.attribute[:]
    gather.attribute.extend(
        [
            onnx.helper.make_attribute("bits", 4),
            onnx.helper.make_attribute("block_size", int(attrs["block_size"])),
            onnx.helper.make_attribute("gather_axis", 0),
            onnx.helper.make_attribute("quantize_axis", 1),
        ]
    )
    still_used = {name for node in graph.node for name in node.input}
    for name in stale:
        if name in inits and name not in still_used:
            graph.initializer.remove(inits[name])
