"""Weight quantisation of a saved graph with onnxruntime's own tools.

* ``int8`` — dynamic quantisation (``quantize_dynamic``): int8 weights per output
  channel, activations quantised on the fly, for every MatMul (BERT's fused
  Attention keeps float32 weights: quantising it costs all-MiniLM ~0.005 cosine).
* ``int4`` — weight-only block quantisation (``MatMulNBitsQuantizer``): symmetric
  int4 blocks of ``block_size`` along the input dimension for every MatMul
  (``MatMulNBits``) and the embedding Gather (``GatherBlockQuantized``), with
  int8 activations inside MatMulNBits (``accuracy_level`` 4), as
  onnxruntime-genai's builder does for CPU.

Norm weights, biases, rotary tables and the KV cache are not touched: they stay
float32. (``fp16`` needs no pass here: the graph is built with float16 weights.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import onnx

from .graph import save_model

#: ``MatMulNBits`` accuracy level 4: int8 activations (the CPU kernel's fast path).
INT4_ACCURACY_LEVEL = 4


def quantize_model(path: Path, quant: str, block_size: int, keep_float32: Sequence[str] = ()) -> list[Path]:
    """Rewrite the graph at ``path`` (external data beside it) in place; returns the files written.

    ``keep_float32`` names MatMul nodes left unquantised (an SSM's ``dt_proj``).
    """
    if quant == "int8":
        model = _int8(path, keep_float32)
    elif quant == "int4":
        model = _int4(path, block_size, keep_float32)
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
