"""Sampler and SamplingParams against Hugging Face transformers' logits processors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from agentd.errors import InvalidArgument
from agentd.generation import SamplingParams
from agentd.sampling import Sampler, log_softmax

CASES = [
    dict(temperature=1.0),
    dict(temperature=0.7),
    dict(temperature=1.3, top_k=5),
    dict(temperature=0.9, top_p=0.8),
    dict(temperature=1.0, min_p=0.1),
    dict(temperature=0.8, repetition_penalty=1.3),
    dict(temperature=0.6, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.2),
    dict(temperature=1.5, top_p=0.95, min_p=0.02, repetition_penalty=0.8),
    dict(temperature=1.0, top_k=1),
]


def _hf_distribution(logits: np.ndarray, context: list[int], params: SamplingParams) -> np.ndarray:
    """HF's processors in ``generate``'s order, then softmax: the reference distribution."""
    processors = []
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        processors.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        processors.append(TopPLogitsWarper(params.top_p))
    if params.min_p:
        processors.append(MinPLogitsWarper(params.min_p))
    input_ids = torch.tensor([context], dtype=torch.long)
    scores = torch.from_numpy(logits.astype(np.float32))[None, :]  # (1, V)
    for processor in processors:
        scores = processor(input_ids, scores)
    return torch.softmax(scores.double(), dim=-1)[0].numpy()


def _dense(sampler: Sampler, logits: np.ndarray) -> np.ndarray:
    ids, probs = sampler.distribution(logits)
    out = np.zeros(logits.size)
    out[ids] = probs
    return out


@pytest.mark.parametrize("vocab", [257, 1000])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_distribution_matches_transformers(case: dict, vocab: int) -> None:
    params = SamplingParams(**case)
    rng = np.random.default_rng(vocab)
    for trial in range(5):
        # Mix sharp and flat logits so filters bite at different places.
        logits = (rng.standard_normal(vocab) * (0.5 + 2.5 * trial / 4)).astype(np.float32)
        context = rng.integers(0, vocab, size=12).tolist()
        sampler = Sampler(params)
        sampler.observe(context)
        ours = _dense(sampler, logits)
        ref = _hf_distribution(logits, context, params)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
        assert np.array_equal(ours > 0, ref > 0)  # same support, not just close masses


def test_top_p_partial_sort_falls_back_when_the_head_is_too_light() -> None:
    # Near-uniform logits over 5000 tokens: the 256 most likely hold ~5% of the
    # mass, so top_p=0.9 needs the full sort; a sharp head does not.
    rng = np.random.default_rng(1)
    for scale in (0.01, 1.5, 8.0):
        logits = (rng.standard_normal(5000) * scale).astype(np.float32)
        params = SamplingParams(top_p=0.9)
        ours = _dense(Sampler(params), logits)
        np.testing.assert_allclose(ours, _hf_distribution(logits, [0], params), rtol=0, atol=1e-6)


def test_top_k_keeps_ties_like_transformers() -> None:
    logits = np.array([1.0, 3.0, 2.0, 2.0, 2.0, 0.5], dtype=np.float32)
    params = SamplingParams(top_k=2)
    ours = _dense(Sampler(params), logits)
    np.testing.assert_allclose(ours, _hf_distribution(logits, [0], params), rtol=0, atol=1e-6)
    assert np.count_nonzero(ours) == 4  # the 3.0 and all three tied 2.0s


def test_greedy_is_argmax_of_penalised_logits_with_raw_logprob() -> None:
    logits = np.array([0.5, 4.0, 3.9, -1.0], dtype=np.float32)
    sampler = Sampler(SamplingParams(temperature=0.0, repetition_penalty=1.1))
    token, logprob = sampler.sample(logits)
    assert token == 1
    assert logprob == pytest.approx(float(torch.log_softmax(torch.from_numpy(logits), -1)[1]), abs=1e-6)
    sampler.observe([1])  # 4.0 / 1.1 < 3.9: the penalty flips the choice
    token, logprob = sampler.sample(logits)
    assert token == 2
    assert logprob == pytest.approx(float(log_softmax(logits)[2]), abs=1e-9)


def test_sampled_logprob_is_log_of_final_distribution() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal(300).astype(np.float32)
    params = SamplingParams(temperature=0.7, top_k=20, seed=5)
    sampler = Sampler(params)
    ref = _hf_distribution(logits, [0], SamplingParams(temperature=0.7, top_k=20))
    for _ in range(20):
        token, logprob = sampler.sample(logits)
        assert ref[token] > 0
        assert logprob == pytest.approx(math.log(ref[token]), abs=1e-5)


def test_same_seed_same_tokens_different_seed_differs() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 300)).astype(np.float32)

    def run(seed: int) -> list[int]:
        sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.95, seed=seed))
        return [sampler.sample(row)[0] for row in logits]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_empirical_frequencies_match_the_distribution() -> None:
    logits = np.log(np.array([0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.04, 0.02]))
    params = SamplingParams(temperature=0.9, top_p=0.97, seed=1234)
    sampler = Sampler(params)
    expected = _hf_distribution(logits.astype(np.float32), [0], params)
    draws = 20_000
    counts = np.bincount([sampler.sample(logits)[0] for _ in range(draws)], minlength=logits.size)
    support = expected > 0
    assert np.all(counts[~support] == 0)  # filtered tokens are never drawn
    chi2 = float(np.sum((counts[support] - draws * expected[support]) ** 2 / (draws * expected[support])))
    # 99.9th percentile of chi-square with (support - 1) <= 6 degrees of freedom is 22.46.
    assert chi2 < 22.46


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_k", -1),
        ("top_p", 0.0),
        ("top_p", 1.01),
        ("min_p", -0.1),
        ("min_p", 1.5),
        ("repetition_penalty", 0.0),
        ("seed", -1),
        ("stop", ("",)),
        ("stop", tuple(f"s{i}" for i in range(17))),
        ("stop", "###"),
    ],
)
def test_validate_names_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        SamplingParams(**{field: value}).validate()
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_from_generation_config_follows_hf_semantics() -> None:
    config = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1}
    params = SamplingParams.from_generation_config(config)
    assert (params.temperature, params.top_p, params.top_k, params.repetition_penalty) == (0.6, 0.9, 20, 1.1)
    assert SamplingParams.from_generation_config(config, temperature=0.0).temperature == 0.0
    # do_sample absent or false: greedy, whatever the sampling knobs say.
    greedy = SamplingParams.from_generation_config({"temperature": 0.6, "top_p": 0.9})
    assert greedy.temperature == 0.0
    assert SamplingParams.from_generation_config({}, max_tokens=7, stop=["END"]).stop == ("END",)
    with pytest.raises(InvalidArgument, match="^top_p: "):
        SamplingParams.from_generation_config({"do_sample": True, "top_p": 0.0})
    with pytest.raises(InvalidArgument, match="^beams: "):
        SamplingParams.from_generation_config({}, beams=4)
