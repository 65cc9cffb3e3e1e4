"""Tokenisers and chat templates rebuilt from GGUF metadata match transformers' GGUF tokenizer.

Two kinds: SentencePiece BPE written TinyLlama-style (``tokenizer.ggml.model =
"llama"``, scores and no merges, so merges are recovered from the scores) and
SmolLM2's byte-level BPE from the real Q4_1 file (slow: transformers takes a
while to build its 49k-token tokenizer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import agentd
from tests._smollm2_fixtures import smollm2_path

from _gguf_fixtures import TOKENIZER_TEXT, spm_vocabulary, uniform, write_gguf
from _llama_fixtures import make_hf_model

TEXTS = [TOKENIZER_TEXT, " leading space", "  two leading", "trailing  ", "", "<s> inline special </s> 42"]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Book a table for 2 at 19:30 — ünïcode ok?"},
    {"role": "assistant", "content": "Done."},
    {"role": "user", "content": "Thanks!"},
]


def _transformers_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _assert_same_tokenizer(ours, theirs) -> None:
    for text in TEXTS:
        for special in (True, False):
            want = theirs(text, add_special_tokens=special)["input_ids"]
            assert ours.encode(text, add_special_tokens=special) == want, (text, special)
        ids = theirs(text)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids), text
    assert ours.render_chat(MESSAGES) == theirs.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert ours.apply_chat_template(MESSAGES) == theirs.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False
    )


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spm = spm_vocabulary()
    model = make_hf_model("llama", vocab_size=len(spm[0]))
    return write_gguf(tmp_path_factory.mktemp("spm") / "tinyllama-style.gguf", model, uniform("Q8_0"), spm=spm)


def test_sentencepiece_tokenizer_matches_transformers(spm_gguf: Path) -> None:
    ours = agentd.load_model(spm_gguf).tokenizer
    theirs = _transformers_tokenizer(spm_gguf)
    ids = ours.encode(TOKENIZER_TEXT)
    assert ids[0] == 1  # BOS added, as llama.cpp does for SentencePiece
    assert any(3 <= i < 259 for i in ids)  # byte fallback used for CJK / emoji
    _assert_same_tokenizer(ours, theirs)
    assert ours.eos_token_ids == {2}
    assert ours.bos_token == "<s>" and ours.eos_token == "</s>"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return smollm2_path()


@pytest.mark.slow
def test_smollm2_tokenizer_and_chat_template_match_transformers(smollm2: Path) -> None:
    model = agentd.load_model(smollm2)
    ours, theirs = model.tokenizer, _transformers_tokenizer(smollm2)
    _assert_same_tokenizer(ours, theirs)
    im_end = ours.token_to_id("<|im_end|>")
    assert im_end == theirs.convert_tokens_to_ids("<|im_end|>") == 2
    assert im_end in ours.eos_token_ids
    assert ours.encode("<|im_start|>user")[0] == ours.token_to_id("<|im_start|>")  # a control token stays whole
    assert np.all(np.asarray(ours.encode(TOKENIZER_TEXT)) < model.checkpoint.config["vocab_size"])
