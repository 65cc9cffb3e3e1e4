"""The Mamba-2 bundle's chunked SSD prefill against transformers' Mamba2ForCausalLM and against its own decode step.

The exported graph runs a prompt of ``T > 1`` tokens in chunks of
``mamba2.CHUNK`` (the last padded with ``dt = 0``) and a single token as one
recurrent step. Lengths cover one token, either side of a chunk boundary,
padded and unpadded multi-chunk prompts; the state must carry across prefill
calls and into decoding.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, onnx_backend  # noqa: E402
from _llama_fixtures import greedy  # noqa: E402
from _ssm_fixtures import hf_greedy, hf_logits, make_hf_mamba2, prompt  # noqa: E402

from agentd.exporters.onnx.mamba2 import CHUNK  # noqa: E402

pytest.importorskip("transformers")

Q = CHUNK
#: 1 token (the step branch), 2, chunk-1, chunk, chunk+1 (two chunks of 33, one padded token),
#: 2 chunks + 2 (three of 44, two padded), several chunks exactly (4 of 64).
LENGTHS = (1, 2, Q - 1, Q, Q + 1, 2 * Q + 2, 4 * Q)
#: fp32 bundle vs transformers (the bound tests/test_export_recurrent.py uses).
REFERENCE_ATOL = 1e-3
#: Chunked prefill vs the same bundle stepped token by token: fp32, and int4 (same weights both ways).
STEP_ATOL = {"fp32": 1e-4, "int4": 2e-3}


@pytest.fixture(scope="module", params=["untied", "tied_clamped_one_group"])
def mamba2(request, tmp_path_factory):
    """(transformers model, {quant: onnx backend}): two groups untied; one group, tied, ``time_step_limit`` clamping."""
    directory = tmp_path_factory.mktemp(f"mamba2-{request.param}")
    if request.param == "untied":
        hf = make_hf_mamba2(directory)
    else:
        hf = make_hf_mamba2(directory, tie_word_embeddings=True, n_groups=1, time_step_limit=(0.01, 2.0), seed=1)
    bundles = {
        quant: onnx_backend(export(directory, tmp_path_factory.mktemp(f"bundle-{quant}") / "bundle", quant=quant, block_size=16))
        for quant in STEP_ATOL
    }
    return hf, bundles


@pytest.mark.parametrize("length", LENGTHS)
def test_prefill_logits_match_transformers(mamba2, length: int) -> None:
    hf, bundles = mamba2
    ours = bundles["fp32"]
    ids = prompt(length, seed=length)
    logits = ours.prefill(np.array(ids), ours.new_state(), all_logits=True)
    assert logits.shape == (length, ours.info.vocab_size)
    np.testing.assert_allclose(logits, hf_logits(hf, ids).numpy(), atol=REFERENCE_ATOL, rtol=0)


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_chunked_prefill_matches_stepping_token_by_token(mamba2, quant: str) -> None:
    """The chunked branch and the one-token branch compute the same logits and final state."""
    _, bundles = mamba2
    ours = bundles[quant]
    for length in (2, Q + 1, 2 * Q + 2):
        ids = np.array(prompt(length, seed=100 + length))
        state = ours.new_state()
        logits = ours.prefill(ids, state, all_logits=True)
        stepped_state = ours.new_state()
        stepped = np.concatenate([ours.decode(ids[t : t + 1], [stepped_state]) for t in range(length)])
        np.testing.assert_allclose(logits, stepped, atol=STEP_ATOL[quant], rtol=0, err_msg=f"T={length}")
        for name, value in state.tensors.items():
            want = stepped_state.tensors[name]
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(value, want, atol=(1e-5 if quant == "fp32" else 1e-3) * scale, rtol=0, err_msg=name)


@pytest.mark.parametrize("cut", [1, Q - 1, Q + 3, 2 * Q + 5])
def test_prefill_in_two_pieces_equals_one(mamba2, cut: int) -> None:
    hf, bundles = mamba2
    ours = bundles["fp32"]
    ids = prompt(3 * Q + 7, seed=5)
    whole_state, split_state = ours.new_state(), ours.new_state()
    whole = ours.prefill(np.array(ids), whole_state, all_logits=True)
    pieces = np.concatenate(
        [ours.prefill(np.array(ids[:cut]), split_state, all_logits=True), ours.prefill(np.array(ids[cut:]), split_state, all_logits=True)]
    )
    np.testing.assert_allclose(pieces, whole, atol=1e-4, rtol=0)
    np.testing.assert_allclose(pieces, hf_logits(hf, ids).numpy(), atol=REFERENCE_ATOL, rtol=0)
    for name, value in split_state.tensors.items():
        np.testing.assert_allclose(value, whole_state.tensors[name], atol=1e-5 * max(1.0, float(np.abs(value).max())), rtol=0)
    assert split_state.tokens == whole_state.tokens == len(ids)


@pytest.mark.parametrize("length", [Q - 1, 2 * Q + 2])
def test_decode_after_chunked_prefill_is_transformers_greedy(mamba2, length: int) -> None:
    """Greedy tokens equal transformers' full-forward argmax at every position (and its cached ``generate``).

    transformers' cached decode step ignores ``time_step_limit`` (only its full
    forward clamps), so ``generate`` is the reference for the unclamped model only.
    """
    hf, bundles = mamba2
    ids = prompt(length, seed=11)
    ours = greedy(bundles["fp32"], ids, 24)
    full_forward = hf_logits(hf, ids + ours).numpy()[len(ids) - 1 : -1].argmax(-1).tolist()
    assert ours == full_forward
    if not hf.config.time_step_limit[0] > 0.0:
        assert ours == hf_greedy(hf, ids, 24)
    assert len(set(ours)) > 6  # a degenerate cycle would make the comparison weak


def test_batched_decode_after_prefills_of_different_chunk_counts(mamba2) -> None:
    """Two sequences prefilled with one and with three chunks decode together as they do alone."""
    _, bundles = mamba2
    ours = bundles["fp32"]
    short, long, alone = ours.new_state(), ours.new_state(), ours.new_state()
    ours.prefill(np.array(prompt(5, seed=1)), short)
    ours.prefill(np.array(prompt(2 * Q + 2, seed=2)), long)
    ours.prefill(np.array(prompt(2 * Q + 2, seed=2)), alone)
    batched = ours.decode(np.array([3, 4]), [short, long])
    np.testing.assert_allclose(batched[1], ours.decode(np.array([4]), [alone])[0], atol=1e-5, rtol=0)
