"""The fixed-state bundles' parallel prefill against the one-token-at-a-time recurrence and transformers.

A prompt of ``T`` tokens prefilled in one graph run (the projections batched
over ``T``, the recurrence scanned or chunked inside the graph) must give the
logits and the final state that ``T`` single-token runs of the same bundle give,
and the logits (and, for Mamba, the conv and ssm state) of Hugging Face
transformers' own forward. Lengths: one token, the conv window, chunk boundaries
and odd lengths on either side of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend  # noqa: E402

#: Prompt lengths: 1 token, shorter than the conv kernel, odd, around 16 and 32 (chunk boundaries), long.
LENGTHS = (1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 65)
#: Parallel prefill vs the same bundle stepped token by token (same weights, same precision).
STEP_ATOL = {"fp32": 1e-4, "int4": 2e-3}
#: fp32 bundle vs transformers' own forward (the bound the export tests use).
REFERENCE_ATOL = 1e-3
#: Final state vs the stepped state, relative to the state's largest magnitude.
STATE_RTOL = 1e-5


def _prompt(length: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(length).integers(0, vocab, length).astype(np.int64)


def _stepped(backend, ids: np.ndarray):
    """Logits ``(T, V)`` and the state after feeding ``ids`` one decode step at a time."""
    state = backend.new_state()
    rows = [backend.decode(ids[t : t + 1], [state])[0] for t in range(ids.size)]
    return np.stack(rows), state


def _assert_states_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float) -> None:
    assert got.keys() == want.keys()
    for name in got:
        scale = max(1.0, float(np.abs(want[name]).max()))
        np.testing.assert_allclose(got[name], want[name], atol=rtol * scale, rtol=0, err_msg=name)


@pytest.fixture(scope="module")
def mamba(tmp_path_factory):
    from _ssm_fixtures import make_hf_mamba

    directory = tmp_path_factory.mktemp("mamba")
    hf = make_hf_mamba(directory)
    bundles = {quant: onnx_backend(export(directory, tmp_path_factory.mktemp(f"mamba-{quant}") / "bundle", quant=quant, block_size=16)) for quant in STEP_ATOL}
    return hf, bundles


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_mamba_prefill_matches_stepping_token_by_token(mamba, quant: str) -> None:
    _, bundles = mamba
    ours = bundles[quant]
    for length in LENGTHS:
        ids = _prompt(length, ours.info.vocab_size)
        state = ours.new_state()
        logits = ours.prefill(ids, state, all_logits=True)
        stepped, stepped_state = _stepped(ours, ids)
        np.testing.assert_allclose(logits, stepped, atol=STEP_ATOL[quant], rtol=0, err_msg=f"T={length}")
        _assert_states_close(state.tensors, stepped_state.tensors, STATE_RTOL if quant == "fp32" else 1e-3)
        assert state.tokens == stepped_state.tokens == length


def test_mamba_prefill_matches_transformers_logits_and_state(mamba) -> None:
    hf, bundles = mamba
    ours = bundles["fp32"]
    layers, kernel = hf.config.num_hidden_layers, hf.config.conv_kernel
    for length in LENGTHS:
        ids = _prompt(length, ours.info.vocab_size)
        state = ours.new_state()
        logits = ours.prefill(ids, state, all_logits=True)
        with torch.no_grad():
            out = hf(torch.from_numpy(ids)[None], use_cache=True)
        np.testing.assert_allclose(logits, out.logits[0].numpy(), atol=REFERENCE_ATOL, rtol=0, err_msg=f"T={length}")
        for i in range(layers):
            ssm = out.cache.get_recurrent_state(i, 0)[0].numpy()  # (D, N)
            conv = out.cache.get_conv_state(i, 0)[0].numpy()  # (D, K): the last K inputs, zeros before the prompt
            np.testing.assert_allclose(state.tensors[f"past_ssm.{i}"][0], ssm.T, atol=1e-4 * max(1.0, np.abs(ssm).max()), rtol=0)
            np.testing.assert_allclose(state.tensors[f"past_conv.{i}"][0], conv[:, 1:].T, atol=1e-5, rtol=0)
        assert kernel == 4  # the conv check above reads the last K-1 = 3 columns


def test_mamba_prefill_continues_from_a_previous_chunk(mamba) -> None:
    """Two prefill calls (odd lengths) equal one call over the concatenated prompt."""
    _, bundles = mamba
    ours = bundles["fp32"]
    ids = _prompt(40, ours.info.vocab_size)
    whole_state, split_state = ours.new_state(), ours.new_state()
    whole = ours.prefill(ids, whole_state, all_logits=True)
    first = ours.prefill(ids[:17], split_state, all_logits=True)
    second = ours.prefill(ids[17:], split_state, all_logits=True)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, atol=STEP_ATOL["fp32"], rtol=0)
    _assert_states_close(split_state.tensors, whole_state.tensors, STATE_RTOL)
