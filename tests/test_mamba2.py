"""Mamba-2 backend: SSD kernels against the sequential reference, the model against transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import agentd
from agentd.errors import InvalidArgument, ModelLoadError
from agentd.plugins.ssm.ssd import segsum, ssd_chunked, ssd_ref, ssd_step
from agentd.registry import spec_for

from _ssm_fixtures import VOCAB, hf_greedy, hf_logits, make_hf_mamba2, prompt, split_prefill_then_decode

pytest.importorskip("transformers")

LOGIT_ATOL = 1e-3  # the brief's bound vs transformers, fp32
SELF_ATOL = 5e-5  # split/step forms against our own full forward


# -- kernels ------------------------------------------------------------------------


def _ssd_inputs(T: int, H: int = 6, P: int = 4, G: int = 2, N: int = 8, dt_shift: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, P, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(T, H, generator=g) + dt_shift)
    A = -torch.exp(torch.randn(H, generator=g))
    B = torch.randn(T, G, N, generator=g)
    C = torch.randn(T, G, N, generator=g)
    h0 = torch.randn(H, P, N, generator=g)
    return x, dt, A, B, C, h0


def test_segsum_is_the_sum_between_positions() -> None:
    a = torch.randn(3, 7)
    out = segsum(a)
    for t in range(7):
        for s in range(7):
            expected = a[:, s + 1 : t + 1].sum(-1) if s <= t else torch.full((3,), float("-inf"))
            torch.testing.assert_close(out[:, t, s], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("T", "chunk", "G", "dt_shift"),
    [(1, 64, 2, 0.0), (5, 4, 2, 0.0), (37, 8, 2, 0.0), (37, 64, 1, 0.0), (64, 16, 3, 0.0), (40, 8, 2, 5.0)],
)
def test_chunked_ssd_matches_reference(T: int, chunk: int, G: int, dt_shift: float) -> None:
    x, dt, A, B, C, h0 = _ssd_inputs(T, G=G, dt_shift=dt_shift)
    y_ref, h_ref = ssd_ref(x, dt, A, B, C, h0)
    y, h = ssd_chunked(x, dt, A, B, C, h0, chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=2e-5)
    assert torch.isfinite(y).all()


def test_ssd_step_matches_reference_for_a_batch() -> None:
    seqs = [_ssd_inputs(9, seed=s) for s in range(3)]
    A = seqs[0][2]
    state = torch.stack([s[5] for s in seqs])  # (3, H, P, N)
    for t in range(9):
        x, dt, B, C = (torch.stack([s[i][t] for s in seqs]) for i in (0, 1, 3, 4))
        y = ssd_step(state, x, dt, A, B, C)
        for b, (xs, dts, _, Bs, Cs, h0) in enumerate(seqs):
            y_ref, h_ref = ssd_ref(xs[: t + 1], dts[: t + 1], A, Bs[: t + 1], Cs[: t + 1], h0)
            torch.testing.assert_close(y[b], y_ref[-1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(state[b], h_ref, rtol=1e-5, atol=1e-5)


# -- the model against transformers ---------------------------------------------------------


@pytest.fixture(scope="module", params=["untied", "tied_one_group"])
def mamba2(request, tmp_path_factory):
    """(hf model, agentd Model): the HF default (untied, 2 groups) and a tied one-group config."""
    path = tmp_path_factory.mktemp(f"mamba2_{request.param}")
    if request.param == "untied":
        hf = make_hf_mamba2(path)
    else:
        hf = make_hf_mamba2(path, tie_word_embeddings=True, n_groups=1, head_dim=8, conv=3, seed=1)
    return hf, agentd.load_model(path)


@pytest.mark.parametrize("length", [1, 2, 3, 17, 70])
def test_logits_match_transformers(mamba2, length: int) -> None:
    # Lengths 1-3 are shorter than the conv kernel; 70 spans two of our 64-token chunks.
    hf, model = mamba2
    ids = prompt(length, seed=length)
    ours = model.logits(ids)
    ref = hf_logits(hf, ids).numpy()
    assert ours.shape == (length, VOCAB) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=LOGIT_ATOL)


def test_time_step_limit_is_applied(tmp_path) -> None:
    # HF applies the clamp in its chunked (full-forward) path, which is what we compare.
    hf = make_hf_mamba2(tmp_path, time_step_limit=(0.05, 0.5))
    model = agentd.load_model(tmp_path)
    assert model.backend.config.clamps_dt
    ids = prompt(30)
    np.testing.assert_allclose(model.logits(ids), hf_logits(hf, ids).numpy(), rtol=0, atol=LOGIT_ATOL)
    pieces, _ = split_prefill_then_decode(model.backend, ids, [11], 20)
    np.testing.assert_allclose(pieces, model.logits(ids), rtol=0, atol=SELF_ATOL)


@pytest.mark.parametrize(("cuts", "decode_from"), [([], 1), ([2], 5), ([64], 66), ([7, 19], 33), ([3], 70)])
def test_split_prefill_and_decode_equal_one_forward(mamba2, cuts: list[int], decode_from: int) -> None:
    hf, model = mamba2
    ids = prompt(70, seed=7)
    full = model.logits(ids)
    pieces, state = split_prefill_then_decode(model.backend, ids, cuts, decode_from)
    np.testing.assert_allclose(pieces, full, rtol=0, atol=SELF_ATOL)
    np.testing.assert_allclose(pieces, hf_logits(hf, ids).numpy(), rtol=0, atol=LOGIT_ATOL)
    assert state.tokens == len(ids)


def test_greedy_generation_matches_transformers(mamba2) -> None:
    hf, model = mamba2
    ids = prompt(11, seed=3)
    ours = model.generate(ids, max_new_tokens=32)
    assert ours == hf_greedy(hf, ids, 32)
    assert len(set(ours)) > 8  # a degenerate cycle would make this comparison weak


def test_batched_decode_equals_one_at_a_time(mamba2) -> None:
    backend = mamba2[1].backend
    prompts = [prompt(n, seed=n) for n in (2, 18, 9)]
    batch_states = [backend.new_state() for _ in prompts]
    solo_states = [backend.new_state() for _ in prompts]
    for ids, a, b in zip(prompts, batch_states, solo_states):
        backend.prefill(np.array(ids), a)
        backend.prefill(np.array(ids), b)
    for step in range(4):
        tokens = np.array([(7 * step + 5 * i) % VOCAB for i in range(len(prompts))])
        batched = backend.decode(tokens, batch_states)
        solo = np.concatenate([backend.decode(tokens[i : i + 1], [s]) for i, s in enumerate(solo_states)])
        np.testing.assert_allclose(batched, solo, rtol=0, atol=SELF_ATOL)
    for a, b in zip(batch_states, solo_states):
        torch.testing.assert_close(a.ssm, b.ssm, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.conv, b.conv, rtol=0, atol=1e-5)


def test_save_and_load_state_round_trip(mamba2) -> None:
    backend = mamba2[1].backend
    state = backend.new_state()
    backend.prefill(np.array(prompt(13)), state)
    restored = backend.load_state(backend.save_state(state))
    assert restored.tokens == 13
    assert torch.equal(restored.conv, state.conv) and torch.equal(restored.ssm, state.ssm)
    for token in (4, 99, 17):
        np.testing.assert_array_equal(
            backend.decode(np.array([token]), [restored]), backend.decode(np.array([token]), [state])
        )


def test_state_of_another_model_is_rejected(mamba2, tmp_path) -> None:
    from _ssm_fixtures import make_hf_mamba

    make_hf_mamba(tmp_path)
    other = agentd.load_model(tmp_path).backend
    backend = mamba2[1].backend
    with pytest.raises(InvalidArgument, match="state"):
        backend.load_state(other.save_state(other.new_state()))
    with pytest.raises(InvalidArgument, match="state"):
        backend.decode(np.array([1]), [other.new_state()])


def test_model_info_reports_fixed_state(mamba2) -> None:
    hf, model = mamba2
    c = hf.config
    conv_dim = c.expand * c.hidden_size + 2 * c.n_groups * c.state_size
    expected = 4 * c.num_hidden_layers * (conv_dim * (c.conv_kernel - 1) + c.num_heads * c.head_dim * c.state_size)
    info = model.info
    assert info.architecture == "Mamba2ForCausalLM" and info.kind == "decoder"
    assert info.state_bytes_per_token == 0
    assert info.state_bytes_per_sequence == expected == model.backend.state_bytes(model.backend.new_state())
    assert info.parameters == hf.num_parameters()


# -- loading ------------------------------------------------------------------------------


def test_registered_for_its_architecture() -> None:
    assert spec_for("Mamba2ForCausalLM").name == "mamba2"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_heads": 3}, "'num_heads' \\* 'head_dim'"),
        ({"n_groups": 3}, "'n_groups'"),
        ({"rms_norm": False}, "'rms_norm'"),
        ({"time_step_limit": [1.0]}, "'time_step_limit'"),
        ({"head_dim": "16"}, "'head_dim' must be int"),
    ],
)
def test_bad_config_names_the_file_and_field(tmp_path, change: dict, message: str) -> None:
    make_hf_mamba2(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"config\.json: .*" + message):
        agentd.load_model(tmp_path)


def test_untied_checkpoint_without_lm_head_names_it(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    make_hf_mamba2(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing tensor 'lm_head.weight'"):
        agentd.load_model(tmp_path)
