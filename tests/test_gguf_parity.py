"""GGUF models through agentd match transformers loading the same file.

Each case writes a small GGUF (random transformers model, converted the way
llama.cpp converts) in one tensor type, loads it with ``agentd.load_model`` and
with ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``, and
compares logits (max |diff| <= 1e-4) and 32 greedy tokens. F32 files are also
compared with the original transformers model, which checks the name mapping
and the inverse RoPE permutation without transformers' GGUF code, and covers
Llama 3 RoPE scaling (transformers' GGUF loader ignores ``rope_freqs``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import agentd
from agentd.formats import open_checkpoint

from _gguf_fixtures import TOKENIZER_TEXT, q4_k_m, spm_vocabulary, uniform, write_gguf
from _llama_fixtures import VARIANTS, greedy, hf_logits, make_hf_model
from _ssm_fixtures import make_hf_mamba

ATOL = 1e-4
NEW_TOKENS = 32

#: case -> (family, config overrides, tensor types, type name the description must lead with)
CASES = {
    "llama-Q8_0": ("llama", {}, uniform("Q8_0"), "Q8_0"),
    "llama-Q4_1-tied": ("llama", {"tie_word_embeddings": True}, uniform("Q4_1"), "Q4_1"),
    "qwen2-Q4_0-tied": ("qwen2", {"tie_word_embeddings": True}, uniform("Q4_0"), "Q4_0"),
    "qwen2-F16": ("qwen2", {}, uniform("F16"), "F16"),
    "llama-BF16": ("llama", {}, uniform("BF16"), "BF16"),
    # K-quants work on 256-wide blocks: a wider model, Ollama's Q4_K_M mix.
    "llama-Q4_K_M": ("llama", {"hidden_size": 256, "intermediate_size": 512}, q4_k_m, "Q4_K"),
    "mamba-Q8_0": ("mamba", {}, uniform("Q8_0"), "Q8_0"),
}


@pytest.fixture(scope="module")
def spm() -> tuple[list[str], list[float], list[int]]:
    return spm_vocabulary()


def _hf_model(family: str, overrides: dict, vocab: int, tmp: Path):
    if family == "mamba":
        return make_hf_mamba(tmp / "mamba-hf", vocab=vocab, **overrides)
    return make_hf_model(family, vocab_size=vocab, **overrides)


def _hf_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding by full recomputation: the plainest possible reference loop."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def _transformers_gguf(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_greedy_match_transformers_gguf(case: str, spm, tmp_path: Path) -> None:
    family, overrides, types, leading = CASES[case]
    source = _hf_model(family, overrides, len(spm[0]), tmp_path)
    path = write_gguf(tmp_path / f"{case}.gguf", source, types, spm=spm)

    ours = agentd.load_model(path, quant="fp32")  # transformers dequantises to float32
    reference = _transformers_gguf(path)
    ids = ours.tokenizer.encode(TOKENIZER_TEXT)
    assert len(ids) > 20

    got, want = ours.logits(ids), hf_logits(reference, ids)
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    print(f"{case}: max |dlogit| {diff:.3g} (logit range {np.abs(want).max():.3g})")
    assert diff <= ATOL
    # The quantisation really happened: the GGUF model is not the float32 source.
    if not case.endswith(("F16", "BF16")):
        assert np.abs(want - hf_logits(source, ids)).max() > 10 * ATOL

    prompt = ids[:8]
    assert greedy(ours.backend, prompt, NEW_TOKENS) == _hf_greedy(reference, prompt, NEW_TOKENS)

    checkpoint = open_checkpoint(path)
    assert checkpoint.format == "gguf"
    assert checkpoint.description.startswith(f"GGUF {leading}")
    assert checkpoint.weight_bytes < path.stat().st_size


@pytest.mark.parametrize("variant", ["llama", "llama3-rope", "llama3-rope-tied-headdim", "qwen2-tied"])
def test_f32_file_matches_the_original_transformers_model(variant: str, spm, tmp_path: Path) -> None:
    family, overrides = VARIANTS[variant]
    source = make_hf_model(family, vocab_size=len(spm[0]), **overrides)
    path = write_gguf(tmp_path / f"{variant}.gguf", source, uniform("F32"), spm=spm)

    checkpoint = open_checkpoint(path)
    tensors = checkpoint.load_tensors("np")
    state = source.state_dict()
    if source.config.tie_word_embeddings:
        assert "lm_head.weight" not in tensors and checkpoint.config["tie_word_embeddings"] is True
        state.pop("lm_head.weight")
    assert set(tensors) == set(state)
    for name, value in state.items():  # exact: F32 in, F32 out, permutation undone
        np.testing.assert_array_equal(tensors[name], value.numpy(), err_msg=name)

    rope = (source.config.rope_parameters or {}) if hasattr(source.config, "rope_parameters") else {}
    if rope.get("rope_type") == "llama3":
        assert checkpoint.config["rope_scaling"]["rope_type"] == "llama3"
        assert checkpoint.config["rope_scaling"]["factor"] == rope["factor"]
    ids = list(range(3, 3 + 200))  # long enough for every llama3 frequency band to matter
    diff = float(np.abs(agentd.load_model(path).logits(ids) - hf_logits(source, ids)).max())
    print(f"{variant} F32: max |dlogit| vs original {diff:.3g}")
    assert diff <= ATOL


def test_mamba_tensors_are_the_hugging_face_state_dict(spm, tmp_path: Path) -> None:
    """``ssm_a = -exp(A_log)`` and the squeezed conv are undone (to float32 rounding)."""
    source = make_hf_mamba(tmp_path / "hf", vocab=len(spm[0]))
    path = write_gguf(tmp_path / "mamba.gguf", source, uniform("F32"), spm=spm)
    tensors = open_checkpoint(path).load_tensors("np")
    state = {k: v for k, v in source.state_dict().items() if k != "lm_head.weight"}
    assert set(tensors) == set(state)
    for name, value in state.items():
        np.testing.assert_allclose(tensors[name], value.numpy(), rtol=1e-6, atol=1e-6, err_msg=name)
