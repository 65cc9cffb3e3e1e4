"""The batched decode path the engine leans on: packed projections, per-sequence decode attention,
and a batch of sequences of different lengths against Hugging Face transformers.

References: a float64 textbook softmax attention, ``torch.nn.functional.linear``
on the dense weights, and transformers' Llama/Qwen2 forward (none written here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _llama_fixtures import VOCAB, hf_logits, load_backend, save_variant
from agentd.engine import Engine
from agentd.generation import SamplingParams
from agentd.plugins.transformer.attention import decode_attention
from agentd.plugins.projection import ROW_BUCKETS, linear, pack_weight

pytest.importorskip("transformers")

#: fp32 vs transformers eager logits, max absolute difference (as the parity tests).
ATOL = 1e-4


def _naive_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q K^T / sqrt(D)) V per query head, in float64, K/V repeated per group."""
    groups = q.shape[0] // k.shape[0]
    k, v = k.double().repeat_interleave(groups, 0), v.double().repeat_interleave(groups, 0)
    scores = torch.einsum("hd,htd->ht", q.double(), k) / math.sqrt(q.shape[-1])
    return torch.einsum("ht,htd->hd", scores.softmax(-1), v).float()


@pytest.mark.parametrize("heads,kv_heads,length,dim", [(4, 4, 1, 16), (9, 3, 160, 64), (8, 1, 37, 32)])
def test_decode_attention_equals_naive(heads, kv_heads, length, dim) -> None:
    generator = torch.Generator().manual_seed(length)
    q = torch.randn(heads, dim, generator=generator) * 2  # peaky, not near-uniform
    # Keys/values as strided views of a larger cache, the way the model passes them.
    cache = torch.randn(2, kv_heads, length + 50, dim, generator=generator)
    k, v = cache[0, :, :length], cache[1, :, :length]
    expected = _naive_decode_attention(q, k, v)
    grouped = q.view(kv_heads, heads // kv_heads, dim)  # (KVH, G, D)
    torch.testing.assert_close(decode_attention(grouped, k.transpose(1, 2), v).view(heads, dim), expected, rtol=0, atol=2e-5)
    # Pre-scaled queries with scale=1, written into a caller's buffer: the model's way.
    out = torch.empty(kv_heads, heads // kv_heads, dim)
    result = decode_attention(grouped / math.sqrt(dim), k.transpose(1, 2), v, scale=1.0, out=out)
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out.view(heads, dim), expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("rows", [1, 3, 5, 16, 17, 100, 256, 300, 700])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_linear_equals_dense_at_any_row_count(rows, with_bias) -> None:
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(96, 40, generator=generator)
    bias = torch.randn(96, generator=generator) if with_bias else None
    x = torch.randn(rows, 40, generator=generator)
    packed = pack_weight(weight)
    out = linear(x, packed, bias)
    assert out.shape == (rows, 96)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)
    # Each row alone gives the same numbers as inside the batch: padding never leaks.
    torch.testing.assert_close(linear(x[-1:], packed, bias), out[-1:], rtol=0, atol=1e-6)


def test_row_buckets_bound_the_kernels_onednn_compiles() -> None:
    """Padding to buckets is what keeps oneDNN's per-row-count kernel cache small."""
    assert ROW_BUCKETS == tuple(sorted(ROW_BUCKETS)) and ROW_BUCKETS[0] == 1
    assert all(b in ROW_BUCKETS for b in (1, 2, 4, 8, 16))  # every decode batch up to max_batch 16


@pytest.fixture(scope="module", params=["llama", "qwen2-tied"])
def model(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    return save_variant(request.param, directory), load_backend(directory), directory


def test_batch_of_five_lengths_matches_transformers(model) -> None:
    """Five sequences of different lengths (rows padded to 8 inside) decoded together for 3 steps."""
    reference, backend, _ = model
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, VOCAB, n).tolist() for n in (1, 7, 30, 64, 130)]
    states = [backend.new_state() for _ in prompts]
    for prompt, state in zip(prompts, states):
        backend.prefill(np.array(prompt), state)
    histories = [list(p) for p in prompts]
    for _ in range(3):
        tokens = rng.integers(0, VOCAB, len(prompts))
        logits = backend.decode(tokens, states)
        for i, history in enumerate(histories):
            history.append(int(tokens[i]))
            np.testing.assert_allclose(logits[i], hf_logits(reference, history)[-1], rtol=0, atol=ATOL)


def test_engine_batch_generates_what_transformers_generates(model) -> None:
    """Six concurrent greedy requests through the engine, each equal to transformers' greedy."""
    from agentd import load_model

    reference, _, directory = model
    served = load_model(directory)
    rng = np.random.default_rng(4)
    prompts = [rng.integers(0, VOCAB, n).tolist() for n in (3, 9, 17, 33, 40, 65)]
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    with Engine.from_model(served, max_batch=8) as engine:
        handles = [engine.submit(prompt, params) for prompt in prompts]
        outputs = [[e.token_id for e in handle if e.token_id is not None] for handle in handles]
    for prompt, output in zip(prompts, outputs):
        with torch.no_grad():
            expected = reference.generate(
                torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0
            )[0, len(prompt) :].tolist()
        assert output == expected
