"""Tiled (FlashAttention-style) causal GQA attention: exactness and linear memory."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from agentd.plugins.transformer.attention import attention, flash_attention_ref

#: float32 attention outputs vs a float64 naive softmax, max absolute difference.
ATOL = 2e-5

CPU_FLASH_OP = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH_FALLBACK_OP = "aten::_scaled_dot_product_attention_math"


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_offset: int) -> torch.Tensor:
    """Textbook softmax(Q K^T / sqrt(D) + causal mask) V in float64, the full score matrix."""
    groups = q.shape[1] // k.shape[1]
    q, k, v = q.double(), k.double().repeat_interleave(groups, 1), v.double().repeat_interleave(groups, 1)
    tq, tk = q.shape[2], k.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    future = torch.arange(tk)[None, :] > (q_offset + torch.arange(tq))[:, None]
    scores = scores.masked_fill(future, -math.inf)
    return (scores.softmax(-1) @ v).float()


def qkv(batch: int, heads: int, kv_heads: int, tq: int, q_offset: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tk = q_offset + tq
    q = torch.randn(batch, heads, tq, dim, generator=generator) * 2  # peaky softmax, not near-uniform
    k = torch.randn(batch, kv_heads, tk, dim, generator=generator)
    v = torch.randn(batch, kv_heads, tk, dim, generator=generator)
    return q, k, v


CASES = [
    # batch, heads, kv_heads, Tq, q_offset, head_dim
    pytest.param(1, 4, 4, 37, 0, 16, id="causal-mha-odd"),
    pytest.param(2, 6, 2, 100, 0, 32, id="causal-gqa"),
    pytest.param(1, 4, 2, 1, 0, 16, id="single-token"),
    pytest.param(1, 9, 3, 1, 77, 64, id="decode-step-gqa"),
    pytest.param(1, 4, 1, 45, 19, 16, id="cache-offset-mqa"),
    pytest.param(2, 8, 2, 300, 333, 16, id="cache-offset-several-mask-blocks"),
]


@pytest.mark.parametrize("batch,heads,kv_heads,tq,q_offset,dim", CASES)
def test_fast_path_equals_naive(batch, heads, kv_heads, tq, q_offset, dim):
    q, k, v = qkv(batch, heads, kv_heads, tq, q_offset, dim)
    torch.testing.assert_close(attention(q, k, v, q_offset), naive_attention(q, k, v, q_offset), rtol=0, atol=ATOL)


@pytest.mark.parametrize("batch,heads,kv_heads,tq,q_offset,dim", CASES)
@pytest.mark.parametrize("block_q,block_k", [(16, 16), (7, 13), (64, 32)])
def test_tiled_reference_equals_naive(batch, heads, kv_heads, tq, q_offset, dim, block_q, block_k):
    q, k, v = qkv(batch, heads, kv_heads, tq, q_offset, dim, seed=1)
    tiled = flash_attention_ref(q, k, v, q_offset, block_q=block_q, block_k=block_k)
    torch.testing.assert_close(tiled, naive_attention(q, k, v, q_offset), rtol=0, atol=ATOL)


def test_fast_path_accepts_kv_cache_views():
    """Keys/values as strided views of a larger preallocated cache, as the model passes them."""
    q, k, v = qkv(1, 4, 2, 9, 30, 16, seed=2)
    cache_k = torch.zeros(2, 64, 16)
    cache_v = torch.zeros(2, 64, 16)
    cache_k[:, :39], cache_v[:, :39] = k[0], v[0]
    out = attention(q, cache_k[:, :39].unsqueeze(0), cache_v[:, :39].unsqueeze(0), 30)
    torch.testing.assert_close(out, naive_attention(q, k, v, 30), rtol=0, atol=ATOL)


@pytest.mark.parametrize("tq,q_offset", [(64, 0), (64, 100), (1, 100)], ids=["causal", "cache-offset", "decode"])
def test_fast_path_uses_cpu_flash_kernel(tq, q_offset):
    q, k, v = qkv(1, 6, 2, tq, q_offset, 32)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attention(q, k, v, q_offset)
    ops = {event.name for event in prof.events()}
    assert CPU_FLASH_OP in ops
    assert MATH_FALLBACK_OP not in ops
    assert "aten::repeat_interleave" not in ops  # GQA without copying K/V per query head


def peak_allocated_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Peak of torch CPU bytes allocated while ``fn`` runs (profiler memory events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peaks(
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor], lengths: tuple[int, ...], offset_factor: int
) -> list[int]:
    result = []
    for length in lengths:
        q, k, v = qkv(1, 4, 2, length, offset_factor * length, 16)
        result.append(peak_allocated_bytes(lambda: fn(q, k, v, offset_factor * length)))
    return result


@pytest.mark.slow
@pytest.mark.parametrize("offset_factor", [0, 1], ids=["causal", "cache-offset"])
def test_tiled_memory_grows_linearly_naive_quadratically(offset_factor):
    """Quadrupling the sequence: tiled extra memory grows <= ~4x, the naive score matrix ~16x.

    The tiled paths start at 1024 tokens because SDPA's CPU kernel picks a larger
    query block (256 rows instead of 64) from 768 queries on: a constant step, not growth.
    """
    naive = peaks(naive_attention, (256, 512, 1024), offset_factor)
    assert naive[-1] / naive[0] > 12, naive  # N^2: 16x
    tiled = (1024, 2048, 4096)
    ref = peaks(lambda q, k, v, o: flash_attention_ref(q, k, v, o, block_q=128, block_k=128), tiled, offset_factor)
    fast = peaks(attention, tiled, offset_factor)
    for name, measured in (("flash_attention_ref", ref), ("attention", fast)):
        assert measured[-1] / measured[0] < 4.5, (name, measured)  # linear: 4x, plus slack
        assert measured[0] < naive[-1] / 8, (name, measured, naive)  # same 1024 tokens
