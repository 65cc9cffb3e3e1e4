"""The projection kernel every torch backend uses: oneDNN-packed weights, bucketed row counts.

A decode step multiplies a few rows by every weight matrix once, so it runs at
the speed the matmul kernel streams the weights. Three ways to compute
``x @ W^T (+ b)`` in fp32 were measured on the 2-core AMD EPYC development
machine (torch 2.13, MKL 2024.2, 1 thread; ``benchmarks/bench_projection.py``,
``docs/bench_projection.md``):

* ``F.linear`` on the checkpoint's row-major ``(out, in)`` weight (MKL GEMM);
* ``F.linear`` on an ``(out, in)`` view of transposed ``(in, out)`` storage,
  which this module used to hand out: 1.2-1.7x faster at batch 1, equal at 4-8;
* oneDNN's inner product on a weight reordered once by
  :func:`pack_weight` (:func:`linear`): faster than both at every batch size,
  from 1 row to prefill chunks, on that machine.

On an Intel Xeon with AMX the packed kernel lost to ``F.linear`` for most
projection shapes (and still won on the LM head), so :func:`pack_weight` no
longer assumes: :mod:`.kernel_choice` measures both kernels for each weight
shape on the CPU at hand, once, and caches the verdict per CPU model.

Packed weights are opaque (a blocked oneDNN layout); only :func:`linear` can use
them. Backends therefore load dense ``(out, in)`` weights (what the ONNX
exporters read) and pack them in their ``pack_weights`` method, which only the
serving path calls; packing replaces each dense weight, so it costs no memory,
except a tied embedding/LM head, which keeps its dense table for the gather and
gets a packed copy for the head (``vocab x hidden x 4`` bytes more).

Only fp32 weights are packed: the probe checks fp32, and bf16/fp16 weights
(RWKV checkpoints may keep them) stay dense and go through ``F.linear``.

:func:`prepare_weight` is what a backend's ``pack_weights(quant)`` calls for
every projection: packed fp32, or a :class:`~.quantized.QuantizedWeight`
(int8 rows, int4 groups) that :func:`linear` runs through torch's quantised
kernels; :func:`embedding` gathers from a dense or an int8 table alike.
"""

from __future__ import annotations

import bisect
import functools

import torch
import torch.nn.functional as F

from . import kernel_choice
from .quantized import QUANTS, QuantizedWeight, quantize

#: Rows oneDNN's weight layout is chosen for; any row count works with it.
#: 16 is the engine's default batch: decode steps are the latency that matters.
PACK_ROWS_HINT = 16
#: The only row counts packed weights are applied to (see :func:`linear`): powers of
#: two for decode batches, coarser steps for prefill chunks, whose padding wastes < 50%.
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256)
#: Dtypes :func:`pack_weight` packs; others are returned dense.
PACKED_DTYPES = frozenset({torch.float32})


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ``(out, in)`` reordered for oneDNN's inner product, or itself when it cannot be.

    The packed tensor replaces the dense one (same bytes, blocked layout); only
    :func:`linear` can use it. Non-fp32 weights, weights already packed, and
    every weight on a torch whose oneDNN ops are missing or fail the one-time
    check against ``F.linear`` (:func:`onednn_works`) come back unchanged, so
    the caller can always rebind its field to the result.
    """
    if weight.is_mkldnn or weight.dtype not in PACKED_DTYPES or not onednn_works():
        return weight
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    # Packed or dense is decided on the CPU that runs it (measured once per shape, cached).
    if kernel_choice.choose(weight, _reorder) == "dense":
        return weight
    return _reorder(weight)


def prepare_weight(weight: torch.Tensor, quant: str = "fp32") -> torch.Tensor | QuantizedWeight:
    """``weight`` ``(out, in)`` ready for :func:`linear` in the encoding ``quant`` (one of :data:`QUANTS`).

    ``int8``/``int4`` quantise it (a shape the quantised kernels do not take
    falls back to the next wider encoding); what stays float32 is packed
    (:func:`pack_weight`).
    """
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {', '.join(QUANTS)}, got {quant!r}")
    if quant != "fp32" and not weight.is_mkldnn:
        weight = quantize(weight, 8 if quant == "int8" else 4)
        if isinstance(weight, QuantizedWeight):
            return weight
    return pack_weight(weight)


def embedding(ids: torch.Tensor, table: torch.Tensor | QuantizedWeight) -> torch.Tensor:
    """Rows ``ids`` of an embedding ``table`` ``(V, C)``: dense, or int8 rows (a quantised tied head)."""
    if isinstance(table, QuantizedWeight):
        return table.rows(ids)
    return F.embedding(ids, table)


def _reorder(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACK_ROWS_HINT)


def linear(x: torch.Tensor, weight: torch.Tensor | QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` for ``x`` ``(rows, in)`` and a dense weight or one made by :func:`prepare_weight`.

    oneDNN compiles and caches a kernel for every distinct row count it sees
    (~0.6 MB each, measured: a soak with prompts of 1-256 tokens grew the
    daemon by 400 MB), so packed weights see only the row counts of
    :data:`ROW_BUCKETS`: fewer rows are zero-padded up to the next bucket (a
    row's result does not depend on the others), more are done in blocks.
    """
    if isinstance(weight, QuantizedWeight):
        return weight.linear(x, bias)
    if not weight.is_mkldnn:
        return F.linear(x, weight, bias)
    rows, block = x.shape[0], ROW_BUCKETS[-1]
    if rows > block:
        out = x.new_empty(rows, weight.shape[0])  # (rows, out)
        for start in range(0, rows, block):
            out[start : start + block] = linear(x[start : start + block], weight, bias)
        return out
    bucket = ROW_BUCKETS[bisect.bisect_left(ROW_BUCKETS, rows)]
    if bucket != rows:
        x = torch.cat((x, x.new_zeros(bucket - rows, x.shape[1])))  # (bucket, in)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [None], "")[:rows]


@functools.cache
def onednn_works() -> bool:
    """True when torch's oneDNN linear ops exist and agree with ``F.linear`` on a small case."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(48, 40, generator=generator), torch.randn(48, generator=generator)
    x = torch.randn(5, 40, generator=generator)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS_HINT)
        with torch.inference_mode():
            got = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")
    except (AttributeError, RuntimeError):  # an older torch, or one built without oneDNN
        return False
    return bool(torch.allclose(got, F.linear(x, weight, bias), rtol=1e-4, atol=1e-4))
