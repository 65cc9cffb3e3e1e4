"""One masked attention call per layer for a whole decode batch, over the slot-pool KV cache.

References: the per-sequence twin ``batched_decode_attention_ref``, a float64
textbook softmax, and Hugging Face transformers' Llama/Qwen2 forward for the
backend (none of them masks anything: each sequence is run alone).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from _llama_fixtures import VOCAB, hf_logits, load_backend, save_variant
from agentd.plugins.transformer.attention import batched_decode_attention, batched_decode_attention_ref
from agentd.plugins.transformer.kv_cache import GROW_TOKENS

pytest.importorskip("transformers")

#: float32 attention vs the per-sequence twin / a float64 naive softmax.
RTOL, ATOL = 1e-5, 2e-5
#: fp32 logits vs transformers eager (as the parity tests).
HF_ATOL = 1e-4


def _naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """softmax(q K^T / sqrt(D)) V per sequence in float64, K/V repeated per query group."""
    groups = q.shape[2]
    rows = []
    for b, length in enumerate(lengths):
        keys = k[b, :, :length].double().repeat_interleave(groups, 0)  # (H, T, D)
        values = v[b, :, :length].double().repeat_interleave(groups, 0)
        query = q[b].reshape(-1, q.shape[-1]).double()  # (H, D)
        scores = torch.einsum("hd,htd->ht", query, keys) / math.sqrt(q.shape[-1])
        rows.append(torch.einsum("ht,htd->hd", scores.softmax(-1), values).view(q.shape[1:]))
    return torch.stack(rows).float()


@pytest.mark.parametrize(
    "kv_heads,groups,dim,lengths",
    [
        (1, 1, 16, [1]),
        (2, 2, 16, [1, 7, 3]),
        (3, 3, 64, [161, 5, 160, 90, 1, 33, 161, 120]),  # SmolLM2's grouping, padding in most rows
        (2, 4, 32, [300, 257, 12, 299]),
    ],
)
def test_batched_equals_each_sequence_alone(kv_heads, groups, dim, lengths):
    generator = torch.Generator().manual_seed(sum(lengths))
    batch, width = len(lengths), max(lengths)
    q = torch.randn(batch, kv_heads, groups, dim, generator=generator) * 2  # peaky, not near-uniform
    # Keys/values as strided views of a larger arena (slots x capacity), the way the model passes them.
    arena_k = torch.randn(batch + 2, kv_heads, width + 40, dim, generator=generator)
    arena_v = torch.randn(batch + 2, kv_heads, width + 40, dim, generator=generator)
    for b, length in enumerate(lengths):
        arena_k[b + 1, :, length:] = math.nan  # stale keys past a row's length must never count
    k, v = arena_k[1 : batch + 1, :, :width], arena_v[1 : batch + 1, :, :width]
    hidden = (torch.arange(width) >= torch.tensor(lengths)[:, None])[:, None, None]  # (B, 1, 1, T)

    k_t = k.transpose(-1, -2)  # (B, KVH, D, T): the layout the cache stores keys in
    out = torch.empty(batch, kv_heads, groups, dim)
    result = batched_decode_attention(q, k_t, v, hidden, out=out)
    assert result.data_ptr() == out.data_ptr()
    reference = batched_decode_attention_ref(q, k, v, lengths)
    torch.testing.assert_close(out, reference, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(out, _naive(q, k, v, lengths), rtol=RTOL, atol=ATOL)
    # Pre-scaled queries with scale=1: the model's way.
    prescaled = batched_decode_attention(q / math.sqrt(dim), k_t, v, hidden, scale=1.0)
    torch.testing.assert_close(prescaled, reference, rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module", params=["llama", "qwen2-tied"])
def model(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    return save_variant(request.param, directory), load_backend(directory), directory


def _ids(count: int, seed: int) -> list[int]:
    return np.random.RandomState(seed).randint(0, VOCAB, count).tolist()


def test_batch_across_arenas_and_scattered_slots_equals_transformers(model):
    """Sequences in two arenas (one past a chunk), on non-adjacent slots, in shuffled order."""
    hf, backend, _ = model
    lengths = [5, GROW_TOKENS + 3, 40, 12, 23]
    prompts = [_ids(n, seed=20 + i) for i, n in enumerate(lengths)]
    states = []
    for prompt in prompts:
        states.append(backend.new_state())
        idle = backend.new_state()  # a state that sits between them (a session between turns)
        backend.prefill(np.array(prompt), states[-1])
        backend.prefill(np.array(prompt[:3]), idle)
        states.append(idle)
    idle_states = states[1::2]
    batch = [states[8], states[2], states[0], states[4], states[6]]  # not the slot order
    batch_prompts = [prompts[4], prompts[1], prompts[0], prompts[2], prompts[3]]
    del states
    assert len({s.arena.capacity for s in batch}) == 2
    alone_states = [backend.load_state(backend.save_state(s)) for s in batch]
    for step in range(3):
        tokens = np.array(_ids(len(batch), seed=40 + step))
        logits = backend.decode(tokens, batch)
        for i, prompt in enumerate(batch_prompts):
            prompt.append(int(tokens[i]))
            alone = backend.decode(tokens[i : i + 1], [alone_states[i]])
            np.testing.assert_allclose(logits[i], alone[0], rtol=0, atol=1e-5)
            np.testing.assert_allclose(logits[i], hf_logits(hf, prompt)[-1], rtol=0, atol=HF_ATOL)
    # The idle states were moved aside, not changed.
    for idle, prompt in zip(idle_states, prompts):
        assert idle.length == 3
        np.testing.assert_allclose(
            backend.decode(np.array([7]), [idle])[0], hf_logits(hf, prompt[:3] + [7])[-1], rtol=0, atol=HF_ATOL
        )


def test_state_bytes_and_pool_memory_follow_the_live_states(model):
    backend = load_backend(model[2])  # a pool of its own: no other test's states in it
    pool = backend.pool
    states = [backend.new_state() for _ in range(9)]
    assert all(backend.state_bytes(s) == 0 for s in states)  # no slot before the first token
    for i, state in enumerate(states):
        backend.prefill(np.array(_ids(10 + i, seed=i)), state)
    per_slot = GROW_TOKENS * backend.info.state_bytes_per_token
    assert all(backend.state_bytes(s) == per_slot for s in states)
    assert pool.nbytes >= 9 * per_slot
    del states, state
    assert pool.nbytes == 0  # freed as the states died (nobody held the lock)


def test_sparse_arena_shrinks_and_keeps_what_its_states_hold(model):
    hf, _, directory = model
    backend = load_backend(directory)
    prompts = [_ids(8 + i, seed=60 + i) for i in range(8)]
    states = [backend.new_state() for _ in prompts]
    for prompt, state in zip(prompts, states):
        backend.prefill(np.array(prompt), state)
    arena = states[0].arena
    assert len(arena.owners) >= 8
    keep = [states[6], states[1]]
    kept_prompts = [prompts[6], prompts[1]]
    del states, state
    assert len(arena.owners) <= 4  # shrunk to a few slots
    tokens = np.array([3, 9])
    logits = backend.decode(tokens, keep)
    for i, prompt in enumerate(kept_prompts):
        np.testing.assert_allclose(logits[i], hf_logits(hf, prompt + [int(tokens[i])])[-1], rtol=0, atol=HF_ATOL)


def test_sessions_restored_on_another_thread_while_decoding(model):
    """load_state/save_state from another thread never see (or cause) a half-moved slot."""
    backend = model[1]
    prompt = _ids(30, seed=80)
    saved = backend.save_state(_prefilled(backend, prompt))
    running = [_prefilled(backend, _ids(9 + i, seed=90 + i)) for i in range(4)]
    expected = {i: backend.decode(np.array([5]), [backend.load_state(backend.save_state(s))])[0] for i, s in enumerate(running)}
    errors: list[BaseException] = []

    def restore() -> None:
        try:
            for _ in range(20):
                state = backend.load_state(saved)
                assert backend.save_state(state) == saved
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=restore)
    thread.start()
    logits = backend.decode(np.array([5] * 4), running)
    while thread.is_alive():
        backend.decode(np.array([1] * 4), [backend.load_state(backend.save_state(s)) for s in running])
        thread.join(0.01)
    assert not errors, errors
    for i in range(4):
        np.testing.assert_allclose(logits[i], expected[i], rtol=0, atol=1e-5)


def _prefilled(backend, prompt):
    state = backend.new_state()
    backend.prefill(np.array(prompt), state)
    return state
