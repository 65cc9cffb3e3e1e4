"""The Mamba-2 and RWKV-7 bundles' chunked prefill against the references and against their own decode step.

Both exported graphs run a prompt of ``T > 1`` tokens in chunks (``mamba2.CHUNK``,
``rwkv7.CHUNK``; the last padded with a zero decay) and a single token as one
recurrent step. References: transformers' Mamba2ForCausalLM and the ``rwkv``
package's RWKV_x070. Lengths cover one token, either side of a chunk boundary,
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
from agentd.exporters.onnx.rwkv7 import CHUNK as RWKV7_CHUNK  # noqa: E402

pytest.importorskip("transformers")

Q = CHUNK
#: 1 token (the step branch), 2, chunk-1, chunk, chunk+1 (two chunks of 33, one padded token),
#: 2 chunks + 2 (three of 44, two padded), several chunks exactly (4 of 64).
LENGTHS = (1, 2, Q - 1, Q, Q + 1, 2 * Q + 2, 4 * Q)
#: fp32 bundle vs transformers (the bound tests/test_export_recurrent.py uses).
REFERENCE_ATOL = 1e-3
#: Chunked prefill vs the same bundle stepped token by token (same weights both ways), relative to the largest
#: |logit| / |state| for int4: the two summation orders round float32 differently, and MatMulNBits' int8
#: activations occasionally turn that into a whole quantisation step that later layers carry (seen: 0.19 on
#: logits up to 30 at T = 130). A broken graph is off by the order of the logits themselves.
STEP_ATOL = {"fp32": 1e-4, "int4": 1e-2}
STATE_RTOL = {"fp32": 1e-5, "int4": 1e-2}


def _assert_prefill_matches_steps(ours, ids: np.ndarray, quant: str) -> None:
    """Logits and final state of one prefill of ``ids`` against one decode step per token."""
    state = ours.new_state()
    logits = ours.prefill(ids, state, all_logits=True)
    stepped_state = ours.new_state()
    stepped = np.concatenate([ours.decode(ids[t : t + 1], [stepped_state]) for t in range(ids.size)])
    scale = 1.0 if quant == "fp32" else float(np.abs(stepped).max())
    np.testing.assert_allclose(logits, stepped, atol=STEP_ATOL[quant] * scale, rtol=0, err_msg=f"T={ids.size}")
    for name, value in state.tensors.items():
        want = stepped_state.tensors[name]
        bound = STATE_RTOL[quant] * max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(value, want, atol=bound, rtol=0, err_msg=f"{name}, T={ids.size}")


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
        _assert_prefill_matches_steps(ours, np.array(prompt(length, seed=100 + length)), quant)


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


# -- RWKV-7: the chunked delta-rule prefill against the rwkv package ----------------------------------

R = RWKV7_CHUNK
RWKV7_LENGTHS = (1, 2, R - 1, R, R + 1, 2 * R + 2, 4 * R)


@pytest.fixture(scope="module")
def rwkv7(tmp_path_factory):
    """(the rwkv package's RWKV_x070, {quant: onnx backend}) for one random tiny checkpoint."""
    from _rwkv_fixtures import make_rwkv7_pth, rwkv7_reference

    from agentd.plugins.linear.convert import convert_rwkv7_pth

    directory = tmp_path_factory.mktemp("rwkv7")
    pth = make_rwkv7_pth(directory / "tiny.pth", hidden=64, layers=2, head_size=32)
    converted = convert_rwkv7_pth(pth, directory / "converted")
    bundles = {
        quant: onnx_backend(export(converted, tmp_path_factory.mktemp(f"rwkv7-{quant}") / "bundle", quant=quant, block_size=16))
        for quant in STEP_ATOL
    }
    return rwkv7_reference(pth), bundles


def _rwkv_logits(reference, ids: list[int]) -> np.ndarray:
    logits, _ = reference.forward(ids, None, full_output=True)
    return logits.numpy().reshape(len(ids), -1)


def _rwkv_prompt(length: int, vocab: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab, length).tolist()


@pytest.mark.parametrize("length", RWKV7_LENGTHS)
def test_rwkv7_prefill_logits_match_the_rwkv_package(rwkv7, length: int) -> None:
    reference, bundles = rwkv7
    ours = bundles["fp32"]
    ids = _rwkv_prompt(length, ours.info.vocab_size, seed=length)
    logits = ours.prefill(np.array(ids), ours.new_state(), all_logits=True)
    np.testing.assert_allclose(logits, _rwkv_logits(reference, ids), atol=REFERENCE_ATOL, rtol=0)


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_rwkv7_chunked_prefill_matches_stepping_token_by_token(rwkv7, quant: str) -> None:
    _, bundles = rwkv7
    ours = bundles[quant]
    for length in (2, R + 1, 2 * R + 2):
        _assert_prefill_matches_steps(ours, np.array(_rwkv_prompt(length, ours.info.vocab_size, seed=200 + length)), quant)


@pytest.mark.parametrize("cut", [1, R + 3, 2 * R + 5])
def test_rwkv7_prefill_in_two_pieces_then_decode_equals_one_forward(rwkv7, cut: int) -> None:
    reference, bundles = rwkv7
    ours = bundles["fp32"]
    ids = _rwkv_prompt(3 * R + 7, ours.info.vocab_size, seed=5)
    state = ours.new_state()
    got = [ours.prefill(np.array(ids[:cut]), state, all_logits=True), ours.prefill(np.array(ids[cut:-3]), state, all_logits=True)]
    got += [ours.decode(np.array([token]), [state]) for token in ids[-3:]]
    np.testing.assert_allclose(np.concatenate(got), _rwkv_logits(reference, ids), atol=REFERENCE_ATOL, rtol=0)
    assert state.tokens == len(ids)


@pytest.mark.parametrize("token", [3, 50])
def test_rwkv7_repeated_token_prompt_matches_the_rwkv_package(rwkv7, token: int) -> None:
    """One token repeated: every key alike, so the in-chunk system's high powers are large (not negligible)."""
    reference, bundles = rwkv7
    ours = bundles["fp32"]
    ids = [token] * (3 * R + 5)
    logits = ours.prefill(np.array(ids), ours.new_state(), all_logits=True)
    np.testing.assert_allclose(logits, _rwkv_logits(reference, ids), atol=REFERENCE_ATOL, rtol=0)
