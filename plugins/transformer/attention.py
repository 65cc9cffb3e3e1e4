"""Causal grouped-query attention, FlashAttention style: never an N x N score matrix.

Two twins with one meaning:

* :func:`flash_attention_ref` — the algorithm in plain torch, readable: queries
  in blocks, keys/values streamed block by block, softmax computed online with
  a running maximum and a running sum, so extra memory is
  ``O(block_q * block_k)`` per head instead of ``O(Tq * Tk)``.
* :func:`attention` — the fast path the model runs:
  ``torch.nn.functional.scaled_dot_product_attention``, which on CPU dispatches
  to ``aten::_scaled_dot_product_flash_attention_for_cpu`` (the same tiled
  online-softmax algorithm in C++, threaded over batch x heads x query blocks).
  Checked with the torch profiler on torch 2.13: that op is chosen for
  ``is_causal=True``, for boolean masks, with ``enable_gqa=True`` (no
  ``repeat_interleave`` of K/V) and for single-query decode; see
  ``tests/test_attention.py::test_fast_path_uses_cpu_flash_kernel``.

* :func:`decode_attention` — one query of one sequence over its cache, as
  two small matmuls and a softmax (no score matrix to tile: it is one row per
  head). For a single query SDPA's per-call cost (kernel set-up, a threaded
  region) exceeds the arithmetic many times over. The batch-1 decode step.
* :func:`batched_decode_attention` — the newest token of each of ``B``
  sequences over a batch of caches of different lengths (strided views of one
  slot-pool arena), padding masked: one call per layer for the whole batch,
  where a loop of :func:`decode_attention` costs eight op calls per sequence.
  Its reference twin :func:`batched_decode_attention_ref` runs each sequence
  alone over its own length.

Positions: queries are tokens ``q_offset .. q_offset+Tq-1`` of a sequence whose
keys are tokens ``0 .. Tk-1`` with ``Tk = q_offset + Tq`` (a KV cache holding
``q_offset`` earlier tokens). Query ``i`` sees keys ``j <= q_offset + i``: the
causal mask is aligned bottom-right. SDPA's ``is_causal`` aligns it top-left,
so it is used only when ``q_offset == 0``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Query rows per SDPA call when a KV-cache offset needs an explicit mask; the
#: boolean mask is then ``(MASK_BLOCK_Q, Tk)``, linear in the context length.
MASK_BLOCK_Q = 256


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_offset: int) -> torch.Tensor:
    """Causal attention through SDPA's CPU flash kernel.

    :param q: ``(B, H, Tq, D)`` queries at positions ``q_offset ..``.
    :param k: ``(B, KVH, Tk, D)`` keys of positions ``0 .. Tk-1``, ``Tk = q_offset + Tq``;
        ``H`` a multiple of ``KVH`` (grouped-query attention). Any strides with a
        contiguous last dimension (KV-cache views are fine).
    :param v: ``(B, KVH, Tk, D)`` values.
    :return: ``(B, H, Tq, D)``.
    """
    tq, tk = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if tq == 1:
        # The newest token sees the whole cache: no mask at all.
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    if q_offset == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    # A chunk after cached tokens: bottom-right causal mask, built a block of
    # query rows at a time so the mask never grows to Tq x Tk.
    out = q.new_empty(q.shape)
    key_pos = torch.arange(tk, device=q.device)
    for start in range(0, tq, MASK_BLOCK_Q):
        end = min(start + MASK_BLOCK_Q, tq)
        visible = q_offset + end  # keys beyond the block's last query are masked for all its rows
        query_pos = torch.arange(q_offset + start, q_offset + end, device=q.device)
        mask = key_pos[None, :visible] <= query_pos[:, None]  # (rows, visible)
        out[:, :, start:end] = F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, :visible], v[:, :, :visible], attn_mask=mask, enable_gqa=gqa
        )
    return out


def decode_attention(
    q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, *, scale: float | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The newest token of one sequence attending to all its ``T`` keys (no mask needed).

    Four tensor ops: at decode every op call, times layers times sequences, is
    latency (and, in the daemon, a release and re-acquisition of the GIL).

    :param q: ``(KVH, G, D)`` the query heads grouped by the KV head they share
        (a view of ``(H, D)``), so K/V are never repeated.
    :param k_t: ``(KVH, D, T)`` keys, transposed (the KV cache stores them so);
        strided cache views are fine.
    :param v: ``(KVH, T, D)`` values.
    :param scale: multiplies the scores; None is ``1/sqrt(D)``. The model passes
        1.0 with queries it scaled for the whole batch in one op.
    :param out: ``(KVH, G, D)`` tensor to write the result into.
    :return: ``(KVH, G, D)``.
    """
    scores = torch.bmm(q, k_t)  # (KVH, G, T)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if scale != 1.0:
        scores.mul_(scale)
    return torch.bmm(torch.softmax(scores, dim=-1), v, out=out)  # (KVH, G, D)


def batched_decode_attention(
    q: torch.Tensor,
    k_t: torch.Tensor,
    v: torch.Tensor,
    hidden: torch.Tensor,
    *,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The newest token of each of ``B`` sequences attending to its own keys, in one call.

    Keys past a sequence's length are padding (another sequence of the batch is
    longer): their scores are set to ``-inf`` (whatever the stale keys hold, even
    non-finite), so they get probability exactly 0; stale *values* must be finite.

    :param q: ``(B, KVH, G, D)`` query heads grouped by the KV head they share.
    :param k_t: ``(B, KVH, D, T)`` keys, transposed, ``T`` the longest length in
        the batch; strided views of a slot arena are fine (no copy is made).
    :param v: ``(B, KVH, T, D)`` values.
    :param hidden: bool, broadcastable to ``(B, KVH, G, T)`` (the model passes
        ``(B, 1, 1, T)``): True where a key is not the row's (at or past its length).
    :param scale: multiplies the scores; None is ``1/sqrt(D)`` (the model passes 1.0
        with queries scaled beforehand).
    :param out: ``(B, KVH, G, D)`` tensor to write the result into.
    :return: ``(B, KVH, G, D)``.
    """
    scores = torch.matmul(q, k_t)  # (B, KVH, G, T)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if scale != 1.0:
        scores.mul_(scale)
    scores.masked_fill_(hidden, -math.inf)
    return torch.matmul(torch.softmax(scores, dim=-1), v, out=out)  # (B, KVH, G, D)


def batched_decode_attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int], *, scale: float | None = None
) -> torch.Tensor:
    """:func:`batched_decode_attention`, one sequence at a time over its own ``lengths[b]`` keys.

    Same ``q`` and ``v``, keys in the natural layout ``(B, KVH, T, D)``; no mask:
    row ``b`` simply never sees keys ``>= lengths[b]``.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    rows = []
    for b, length in enumerate(lengths):
        scores = q[b] @ k[b, :, :length].transpose(-1, -2) * scale  # (KVH, G, length)
        rows.append(torch.softmax(scores, dim=-1) @ v[b, :, :length])  # (KVH, G, D)
    return torch.stack(rows)


def flash_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_offset: int = 0,
    *,
    block_q: int = 64,
    block_k: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """FlashAttention's tiled online-softmax forward pass, in plain torch.

    Same arguments and result as :func:`attention`. For each block of queries,
    keys and values are visited one block at a time; the block's scores
    ``S = Q K^T * scale`` update a running row maximum ``m``, a running sum of
    exponentials ``l`` and an unnormalised output ``acc``, rescaling the old
    ones by ``exp(m_old - m_new)``. Only ``(block_q, block_k)`` scores exist at
    any time. Key blocks entirely in a query block's future are skipped.
    """
    batch, heads, tq, dim = q.shape
    kv_heads, tk = k.shape[1], k.shape[2]
    if tk != q_offset + tq:
        raise ValueError(f"expected {q_offset + tq} keys for q_offset={q_offset}, got {tk}")
    groups = heads // kv_heads
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    # Queries sharing a KV head sit in one group dimension, so K/V are never repeated.
    q = q.reshape(batch, kv_heads, groups, tq, dim)  # (B, KVH, G, Tq, D)
    k = k.unsqueeze(2)  # (B, KVH, 1, Tk, D)
    v = v.unsqueeze(2)  # (B, KVH, 1, Tk, D)
    out = q.new_empty(q.shape)  # (B, KVH, G, Tq, D)

    for q_start in range(0, tq, block_q):
        q_end = min(q_start + block_q, tq)
        q_block = q[:, :, :, q_start:q_end] * scale  # (B, KVH, G, bq, D)
        rows = q_end - q_start
        query_pos = torch.arange(q_offset + q_start, q_offset + q_end, device=q.device)
        row_max = q.new_full((batch, kv_heads, groups, rows, 1), -math.inf)
        row_sum = q.new_zeros((batch, kv_heads, groups, rows, 1))
        acc = q.new_zeros((batch, kv_heads, groups, rows, dim))
        # Block 0 holds key 0, which every query sees, so row_max is finite
        # after the first step and fully masked rows of later blocks add exp(-inf) = 0.
        for k_start in range(0, q_offset + q_end, block_k):
            k_end = min(k_start + block_k, q_offset + q_end)
            scores = q_block @ k[:, :, :, k_start:k_end].transpose(-1, -2)  # (B, KVH, G, bq, bk)
            if k_end - 1 > q_offset + q_start:  # the block reaches past some query: mask the future
                key_pos = torch.arange(k_start, k_end, device=q.device)
                scores = scores.masked_fill(key_pos[None, :] > query_pos[:, None], -math.inf)
            new_max = torch.maximum(row_max, scores.amax(dim=-1, keepdim=True))
            probs = torch.exp(scores - new_max)  # (B, KVH, G, bq, bk)
            rescale = torch.exp(row_max - new_max)  # shrinks what earlier blocks summed
            row_sum = row_sum * rescale + probs.sum(dim=-1, keepdim=True)
            acc = acc * rescale + probs @ v[:, :, :, k_start:k_end]  # (B, KVH, G, bq, D)
            row_max = new_max
        out[:, :, :, q_start:q_end] = acc / row_sum
    return out.reshape(batch, heads, tq, dim)  # (B, H, Tq, D)
