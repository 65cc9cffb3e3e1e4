"""Mamba backend: scan kernels against the sequential reference, the model against transformers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import agentd
from agentd.formats import open_checkpoint
from agentd.errors import InvalidArgument, ModelLoadError
from agentd.plugins.ssm.scan import selective_scan_chunked, selective_scan_ref, selective_scan_step
from agentd.registry import spec_for

from _ssm_fixtures import VOCAB, hf_greedy, hf_logits, make_hf_mamba, prompt, split_prefill_then_decode

pytest.importorskip("transformers")

LOGIT_ATOL = 1e-4  # the brief's bound vs transformers, fp32
# Split/step forms against our own full forward: same maths in another order,
# so only fp32 rounding on logits of magnitude ~25 (tied embeddings).
SELF_ATOL = 5e-5


# -- kernels ------------------------------------------------------------------------


def _scan_inputs(T: int, D: int = 24, N: int = 8, dt_shift: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(T, D, generator=g) + dt_shift)
    A = -torch.exp(torch.randn(D, N, generator=g))
    B = torch.randn(T, N, generator=g)
    C = torch.randn(T, N, generator=g)
    h0 = torch.randn(D, N, generator=g)
    return x, dt, A, B, C, h0


@pytest.mark.parametrize(
    ("T", "chunk", "dt_shift"),
    [(1, 16, 0.0), (5, 16, 0.0), (16, 16, 0.0), (37, 16, 0.0), (37, 8, 0.0), (64, 32, 0.0), (37, 16, 4.0)],
)
def test_chunked_scan_matches_reference(T: int, chunk: int, dt_shift: float) -> None:
    # dt_shift=4 makes per-chunk decays far below e^-88: the factored form would overflow there.
    x, dt, A, B, C, h0 = _scan_inputs(T, dt_shift=dt_shift)
    y_ref, h_ref = selective_scan_ref(x, dt, A, B, C, h0)
    y, h = selective_scan_chunked(x, dt, A, B, C, h0, chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=2e-5)
    assert torch.isfinite(y).all()


def test_scan_step_matches_reference_for_a_batch() -> None:
    seqs = [_scan_inputs(9, seed=s) for s in range(3)]
    A = seqs[0][2]
    state = torch.stack([s[5] for s in seqs])  # (3, D, N)
    for t in range(9):
        x, dt, B, C = (torch.stack([s[i][t] for s in seqs]) for i in (0, 1, 3, 4))
        y = selective_scan_step(state, x, dt, A, B, C)
        for b, (x, dt, _, B, C, h0) in enumerate(seqs):
            y_ref, h_ref = selective_scan_ref(x[: t + 1], dt[: t + 1], A, B[: t + 1], C[: t + 1], h0)
            torch.testing.assert_close(y[b], y_ref[-1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(state[b], h_ref, rtol=1e-5, atol=1e-5)


# -- the model against transformers ---------------------------------------------------------


@pytest.fixture(scope="module", params=["tied", "untied_bias"])
def mamba(request, tmp_path_factory):
    """(hf model, agentd Model) for a tied config and an untied one with in/out_proj biases."""
    path = tmp_path_factory.mktemp(f"mamba_{request.param}")
    if request.param == "tied":
        hf = make_hf_mamba(path)
    else:
        hf = make_hf_mamba(path, tie_word_embeddings=False, use_bias=True, conv=3, seed=1)
    return hf, agentd.load_model(path)


@pytest.mark.parametrize("length", [1, 2, 3, 17, 40])
def test_logits_match_transformers(mamba, length: int) -> None:
    # Lengths 1-3 are shorter than the conv kernel; 17 and 40 cross chunk boundaries unevenly.
    hf, model = mamba
    ids = prompt(length, seed=length)
    ours = model.logits(ids)
    ref = hf_logits(hf, ids).numpy()
    assert ours.shape == (length, VOCAB) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize(("cuts", "decode_from"), [([], 1), ([2], 5), ([16], 30), ([7, 19], 33), ([3], 40)])
def test_split_prefill_and_decode_equal_one_forward(mamba, cuts: list[int], decode_from: int) -> None:
    hf, model = mamba
    ids = prompt(40, seed=7)
    full = model.logits(ids)
    pieces, state = split_prefill_then_decode(model.backend, ids, cuts, decode_from)
    np.testing.assert_allclose(pieces, full, rtol=0, atol=SELF_ATOL)
    np.testing.assert_allclose(pieces, hf_logits(hf, ids).numpy(), rtol=0, atol=LOGIT_ATOL)
    assert state.tokens == len(ids)


def test_prefill_returns_last_logits_only_by_default(mamba) -> None:
    _, model = mamba
    ids = prompt(21)
    last = model.backend.prefill(np.array(ids), model.backend.new_state())
    assert last.shape == (1, VOCAB)
    np.testing.assert_allclose(last[0], model.logits(ids)[-1], rtol=0, atol=SELF_ATOL)


def test_greedy_generation_matches_transformers(mamba) -> None:
    hf, model = mamba
    ids = prompt(11, seed=3)
    ours = model.generate(ids, max_new_tokens=32)
    assert ours == hf_greedy(hf, ids, 32)
    assert len(set(ours)) > 8  # a degenerate cycle would make this comparison weak


def test_batched_decode_equals_one_at_a_time(mamba) -> None:
    _, model = mamba
    backend = model.backend
    prompts = [prompt(n, seed=n) for n in (3, 18, 9)]
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


def test_save_and_load_state_round_trip(mamba) -> None:
    _, model = mamba
    backend = model.backend
    state = backend.new_state()
    backend.prefill(np.array(prompt(13)), state)
    blob = backend.save_state(state)
    restored = backend.load_state(blob)
    assert restored.tokens == state.tokens == 13
    assert torch.equal(restored.conv, state.conv) and torch.equal(restored.ssm, state.ssm)
    for token in (4, 99, 17):
        np.testing.assert_array_equal(
            backend.decode(np.array([token]), [restored]), backend.decode(np.array([token]), [state])
        )


def test_load_state_rejects_foreign_bytes(mamba) -> None:
    backend = mamba[1].backend
    with pytest.raises(InvalidArgument, match="state"):
        backend.load_state(b"not a state at all")
    blob = backend.save_state(backend.new_state()).replace(b"MambaForCausalLM", b"RwkvForCausalLM\x20")
    with pytest.raises(InvalidArgument, match="state"):
        backend.load_state(blob)


def test_model_info_reports_fixed_state(mamba) -> None:
    hf, model = mamba
    c = hf.config
    d_inner = c.intermediate_size
    info = model.info
    assert info.architecture == "MambaForCausalLM" and info.kind == "decoder"
    assert info.state_bytes_per_token == 0
    expected = 4 * c.num_hidden_layers * (d_inner * (c.conv_kernel - 1) + d_inner * c.state_size)
    assert info.state_bytes_per_sequence == expected
    assert model.backend.state_bytes(model.backend.new_state()) == expected
    assert info.parameters == hf.num_parameters()
    assert info.vocab_size == VOCAB and info.dtype == "float32"


def test_out_of_range_token_ids_are_rejected(mamba) -> None:
    backend = mamba[1].backend
    with pytest.raises(InvalidArgument, match="token_ids"):
        backend.prefill(np.array([1, VOCAB]), backend.new_state())
    with pytest.raises(InvalidArgument, match="token_ids"):
        backend.decode(np.array([-1]), [backend.new_state()])


# -- loading ------------------------------------------------------------------------------


def test_registered_for_its_architecture() -> None:
    assert spec_for("MambaForCausalLM").name == "mamba"


def test_bad_config_names_the_file_and_field(tmp_path) -> None:
    make_hf_mamba(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_act"] = "gelu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"config\.json: field 'hidden_act'"):
        agentd.load_model(tmp_path)
    del config["hidden_act"], config["state_size"]
    config["hidden_size"] = 48  # weights say 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: tensor 'backbone\.embeddings\.weight' has shape"):
        agentd.load_model(tmp_path)


def test_missing_tensor_names_it(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    make_hf_mamba(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["backbone.layers.1.mixer.A_log"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing tensor 'backbone.layers.1.mixer.A_log'"):
        agentd.plugins.ssm.mamba.load(open_checkpoint(tmp_path))


def test_config_derives_sizes() -> None:
    from agentd.plugins.ssm.mamba import MambaConfig

    config = MambaConfig.from_dict({"vocab_size": 50280, "hidden_size": 768, "num_hidden_layers": 24})
    assert config.intermediate_size == 1536
    assert config.dt_rank == math.ceil(768 / 16) == 48
    explicit = {"vocab_size": 5, "hidden_size": 8, "num_hidden_layers": 1, "time_step_rank": 3}
    assert MambaConfig.from_dict(explicit).dt_rank == 3
