"""Weight layout for fast batch-1 projections on CPU, shared by every torch backend.

A decode step at batch 1 multiplies one row by every weight matrix once, so
it runs at the speed the matmul kernel streams the weights. Checkpoints store
a projection ``(out, in)`` (``nn.Linear``); stored transposed instead,
``(in, out)`` contiguous, the same product ``x @ W^T`` streams markedly faster
in fp32 on this CPU (torch 2.13, MKL; ``benchmarks/bench_projection.py``,
CPU-time medians, 1 thread, see ``docs/bench_projection.md``):

* a 50k x 768 LM head at batch 1: 1.65-1.75x; at batch 4-8: 1.1-1.3x;
* a stack of Mamba / RWKV layer projections at batch 1: 1.16-1.3x, at batch
  4-8 the same speed within the noise;
* prefill (128 or 512 rows): the same speed either way.

End to end at batch 1 that is 1.24-1.29x faster decode for Mamba, Mamba-2,
RWKV-4 and RWKV-7 at their ~130-170M shapes, and about 1.02x at batch 8.

For another backend (e.g. a Llama decoder): pass every ``nn.Linear``-style
weight through :func:`matvec_layout` once at load, keep calling ``F.linear``,
and give a tied embedding/LM head one :func:`tied_embedding_head` tensor.

In bf16 and fp16 the opposite holds (the transposed layout measured 1.3-1.5x
and 5-16x *slower*), so :func:`matvec_layout` only re-stores fp32 weights.

The weight is *handed back as an* ``(out, in)`` *view* of the transposed
storage, so nothing downstream changes: ``F.linear(x, weight, bias)`` lowers
to ``addmm(bias, x, weight.t())`` and ``weight.t()`` is then the contiguous
``(in, out)`` matrix, the fast case, with no copy; code that reads the weight
(the ONNX exporters, tests) still sees the checkpoint's orientation and values.

Tied embeddings: one storage serves both the embedding gather and the LM head
(:func:`tied_embedding_head`). Gathering rows of the transposed table reads
strided columns, which measured +1 us per decoded token and +1.5 ms per
512-token prompt, against 4-6 ms saved on every decoded token by the faster
head at mamba-130m's size; a second, row-major copy would cost 154 MB for that
1.5 ms. So a tied table is stored once, transposed.
"""

from __future__ import annotations

import torch

#: Dtypes whose matrix-vector products run faster with the weight stored ``(in, out)``.
MATVEC_DTYPES = frozenset({torch.float32})


def matvec_layout(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` ``(out, in)`` re-stored as contiguous ``(in, out)``, returned as an ``(out, in)`` view.

    Equal to ``weight`` element for element; ``F.linear`` on it runs the fast
    kernel. Weights of other dtypes (see :data:`MATVEC_DTYPES`) come back
    unchanged, as does a weight already in this layout. The caller should drop
    its reference to ``weight`` so the row-major copy is freed.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    if weight.dtype not in MATVEC_DTYPES or in_matvec_layout(weight):
        return weight
    return weight.t().contiguous().t()  # (out, in) view of (in, out) storage


def in_matvec_layout(weight: torch.Tensor) -> bool:
    """Whether ``weight`` ``(out, in)`` is a view of contiguous ``(in, out)`` storage."""
    return weight.dim() == 2 and weight.t().is_contiguous() and weight.shape[0] > 1


def tied_embedding_head(table: torch.Tensor) -> torch.Tensor:
    """The one tensor a tied model uses as embedding table ``(V, C)`` and LM head.

    Stored transposed (see the module notes for why one strided copy beats
    two): use it with ``F.embedding(ids, table)`` and ``F.linear(x, table)``.
    """
    return matvec_layout(table)
