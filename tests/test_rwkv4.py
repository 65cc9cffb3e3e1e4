"""RWKV-4 backend against Hugging Face ``RwkvForCausalLM`` (random tiny weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import agentd
from agentd.formats import open_checkpoint
from agentd.errors import InvalidArgument, ModelLoadError
from agentd.plugins.linear.rwkv4 import Rwkv4Backend, load
from agentd.plugins.linear.wkv4 import EMPTY_MAX, wkv4_chunked, wkv4_recurrent
from _rwkv_fixtures import VOCAB, make_hf_rwkv4

LOGIT_ATOL = 1e-4  # fp32, as the brief asks; observed ~1e-6


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """(checkpoint dir, HF reference model); 3 layers with rescale_every=2 exercises rescaling."""
    path = tmp_path_factory.mktemp("rwkv4")
    reference = make_hf_rwkv4(path, hidden=32, layers=3, rescale_every=2)
    return path, reference


@pytest.fixture(scope="module")
def model(hf_pair):
    return agentd.load_model(hf_pair[0])


def _prompt(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=n).astype(np.int64)


def _hf_logits(reference, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reference(torch.from_numpy(ids)[None]).logits[0].numpy()


def test_registered_and_info(model):
    assert isinstance(model.backend, Rwkv4Backend)
    info = model.info
    assert info.architecture == "RwkvForCausalLM"
    assert info.state_bytes_per_token == 0
    state = model.backend.new_state()
    assert info.state_bytes_per_sequence == model.backend.state_bytes(state) == 3 * 5 * 32 * 4
    assert state.tensor.dtype == torch.float32


def test_logits_match_transformers(hf_pair, model):
    ids = _prompt(53)  # not a multiple of the chunk: exercises the tail chunk
    ours = model.logits(ids)
    ref = _hf_logits(hf_pair[1], ids)
    assert ours.shape == ref.shape == (53, VOCAB)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=LOGIT_ATOL)


def test_last_logits_only_by_default(model):
    ids = _prompt(20)
    last = model.backend.prefill(ids, model.backend.new_state())
    assert last.shape == (1, VOCAB)
    np.testing.assert_allclose(last[0], model.logits(ids)[-1], rtol=0, atol=1e-5)


def test_greedy_matches_transformers_generate(hf_pair, model):
    ids = _prompt(12, seed=1)
    ours = model.generate(ids.tolist(), max_new_tokens=32)
    with torch.no_grad():
        out = hf_pair[1].generate(torch.from_numpy(ids)[None], max_new_tokens=32, do_sample=False)
    assert ours == out[0, len(ids) :].tolist()
    assert len(ours) == 32


def test_prefill_then_decode_and_pieces_equal_full_forward(model):
    backend = model.backend
    ids = _prompt(40, seed=2)
    full = backend.prefill(ids, backend.new_state(), all_logits=True)

    state = backend.new_state()
    pieces = [backend.prefill(ids[:7], state, all_logits=True), backend.prefill(ids[7:25], state, all_logits=True)]
    pieces += [backend.decode(ids[t : t + 1], [state]) for t in range(25, 40)]
    np.testing.assert_allclose(np.concatenate(pieces), full, rtol=0, atol=1e-5)
    assert state.tokens == 40


def test_prefill_segments_carry_state(model, monkeypatch):
    backend = model.backend
    ids = _prompt(45, seed=3)
    full = backend.prefill(ids, backend.new_state(), all_logits=True)
    monkeypatch.setattr(backend, "prefill_segment", 16)
    np.testing.assert_allclose(backend.prefill(ids, backend.new_state(), all_logits=True), full, rtol=0, atol=1e-5)
    np.testing.assert_allclose(backend.prefill(ids, backend.new_state())[0], full[-1], rtol=0, atol=1e-5)


def test_batched_decode_equals_one_by_one(model):
    backend = model.backend
    prompts = [_prompt(n, seed=n) for n in (3, 17, 9)]
    solo = [backend.new_state() for _ in prompts]
    batched = [backend.new_state() for _ in prompts]
    for p, a, b in zip(prompts, solo, batched):
        backend.prefill(p, a)
        backend.prefill(p, b)
    for step in range(4):
        tokens = np.array([(7 * step + i) % VOCAB for i in range(3)], dtype=np.int64)
        one = np.concatenate([backend.decode(tokens[i : i + 1], [solo[i]]) for i in range(3)])
        many = backend.decode(tokens, batched)
        np.testing.assert_allclose(many, one, rtol=0, atol=1e-5)
    for a, b in zip(solo, batched):
        torch.testing.assert_close(a.tensor, b.tensor, rtol=1e-5, atol=1e-5)


def test_save_load_state_round_trip(model):
    backend = model.backend
    state = backend.new_state()
    backend.prefill(_prompt(30, seed=4), state)
    restored = backend.load_state(backend.save_state(state))
    assert restored.tokens == state.tokens == 30
    assert torch.equal(restored.tensor, state.tensor)
    for token in (5, 17, 99):
        ids = np.array([token], dtype=np.int64)
        np.testing.assert_array_equal(backend.decode(ids, [restored]), backend.decode(ids, [state]))


def test_bad_state_and_ids_are_user_errors(model):
    backend = model.backend
    with pytest.raises(InvalidArgument, match="state"):
        backend.load_state(b"not a state")
    blob = bytearray(backend.save_state(backend.new_state()))
    with pytest.raises(InvalidArgument, match="truncated"):
        backend.load_state(bytes(blob[:-4]))
    with pytest.raises(InvalidArgument, match="token_ids"):
        backend.prefill(np.array([VOCAB]), backend.new_state())
    with pytest.raises(InvalidArgument, match="state"):
        backend.decode(np.array([1]), [object()])


@pytest.mark.parametrize("chunk", [1, 4, 16])
@pytest.mark.parametrize("k_scale", [1.0, 30.0])
def test_chunked_wkv_equals_recurrent(chunk, k_scale):
    """The parallel form against its recurrent twin, with large keys to test the log-space maxima."""
    g = torch.Generator().manual_seed(chunk)
    T, C = 37, 24
    k = torch.randn(T, C, generator=g) * k_scale
    v = torch.randn(T, C, generator=g)
    w = -torch.exp(torch.randn(C, generator=g) * 2)
    u = torch.randn(C, generator=g)
    for start in ("empty", "warm"):
        state = torch.zeros(3, C)
        if start == "empty":
            state[2] = EMPTY_MAX
        else:
            state[0] = torch.randn(C, generator=g)
            state[1] = torch.rand(C, generator=g)
            state[2] = 5 * torch.randn(C, generator=g)
        s_rec, s_par = state.clone(), state.clone()
        out_rec = wkv4_recurrent(k, v, w, u, *s_rec)
        out_par = wkv4_chunked(k, v, w, u, *s_par, chunk=chunk)
        torch.testing.assert_close(out_par, out_rec, rtol=1e-5, atol=1e-5)
        # Compare the carried sums on a common scale. The recurrent form adds w to
        # the running max once per token, so with maxima ~100 its log scale drifts
        # by a few ulps per step: hence rtol 1e-3, not 1e-5.
        for row in (0, 1):
            torch.testing.assert_close(s_par[row] * s_par[2].exp(), s_rec[row] * s_rec[2].exp(), rtol=1e-3, atol=1e-6)


def test_bf16_weights_keep_fp32_state(tmp_path, hf_pair):
    from transformers import RwkvForCausalLM

    # Fresh (unrescaled) weights from the saved checkpoint, stored as bf16.
    RwkvForCausalLM.from_pretrained(hf_pair[0]).to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True)
    backend = load(open_checkpoint(tmp_path))
    assert backend.info.dtype == "bfloat16"
    state = backend.new_state()
    ids = _prompt(24, seed=5)
    logits = backend.prefill(ids, state, all_logits=True)
    assert state.tensor.dtype == torch.float32
    ref = _hf_logits(hf_pair[1], ids)
    # bf16 weights: ~3 significant digits; the argmax mostly agrees, values closely.
    assert np.abs(logits - ref).max() < 0.05 * np.abs(ref).max()


def test_missing_tensor_and_bad_config_name_the_problem(tmp_path, hf_pair):
    from safetensors.torch import load_file, save_file

    src = hf_pair[0]
    weights = load_file(src / "model.safetensors")
    del weights["rwkv.blocks.1.attention.time_decay"]
    save_file(weights, tmp_path / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="rwkv.blocks.1.attention.time_decay"):
        load(open_checkpoint(tmp_path))
    del config["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="hidden_size"):
        load(open_checkpoint(tmp_path))
