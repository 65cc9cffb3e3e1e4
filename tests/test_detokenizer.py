"""Incremental detokenisation against the tokenizer's own full decode."""

from __future__ import annotations

import numpy as np
import pytest

from _generation_fixtures import CORPUS, MULTIBYTE_TEXTS, byte_level_bpe, sentencepiece_bpe
from agentd.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer

TOKENIZERS = {"byte_level_bpe": byte_level_bpe, "sentencepiece_bpe": sentencepiece_bpe}


def _stream(tokenizer, ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    return deltas


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("text", MULTIBYTE_TEXTS + CORPUS[:5])
def test_deltas_join_to_full_decode_without_replacement_chars(name: str, text: str) -> None:
    tokenizer = TOKENIZERS[name]()
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas = _stream(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids)
    assert all(REPLACEMENT_CHAR not in d for d in deltas), deltas


@pytest.mark.parametrize("name", TOKENIZERS)
def test_multibyte_character_is_emitted_whole_on_its_last_byte(name: str) -> None:
    tokenizer = TOKENIZERS[name]()
    ids = tokenizer.encode("ok 🚀", add_special_tokens=False)
    deltas = _stream(tokenizer, ids)
    # The rocket is 4 UTF-8 bytes over several tokens: nothing until the last one.
    assert deltas[-2].endswith("🚀")
    rocket_tokens = [i for i, d in enumerate(deltas[:-1]) if d == ""]
    assert len(rocket_tokens) >= 2
    assert deltas[-1] == ""


def test_sentencepiece_leading_spaces_survive_between_tokens() -> None:
    # decode() strips one leading space per call, so token-by-token decoding
    # would glue words together; the windowed diff must not.
    tokenizer = sentencepiece_bpe()
    ids = tokenizer.encode("the lazy dog jumps", add_special_tokens=False)
    naive = "".join(tokenizer.decode([i]) for i in ids)
    assert naive != tokenizer.decode(ids)  # the trap is real for this tokenizer
    assert "".join(_stream(tokenizer, ids)) == "the lazy dog jumps"


@pytest.mark.parametrize("name", TOKENIZERS)
def test_special_tokens_are_skipped(name: str) -> None:
    tokenizer = TOKENIZERS[name]()
    (eos,) = tokenizer.eos_token_ids
    ids = tokenizer.encode("hello", add_special_tokens=False) + [eos]
    deltas = _stream(tokenizer, ids)
    assert "".join(deltas) == "hello" == tokenizer.decode(ids)
    assert deltas[-2] == ""


@pytest.mark.parametrize("name", TOKENIZERS)
def test_random_id_sequences_still_join_to_full_decode(name: str) -> None:
    # Byte-level BPE: random ids make invalid UTF-8 too, and the stream must
    # still agree with decode(). Byte-fallback decoders turn a whole invalid
    # run of <0xNN> tokens into U+FFFDs, including bytes already emitted as
    # valid text, so no streaming decoder can match them there; draw from the
    # non-byte tokens only (a real model's byte tokens spell valid UTF-8).
    tokenizer = TOKENIZERS[name]()
    allowed = np.array(
        [i for i in range(tokenizer.vocab_size) if not (tokenizer.id_to_token(i) or "").startswith("<0x")]
    )
    rng = np.random.default_rng(7)
    for _ in range(40):
        ids = rng.choice(allowed, size=int(rng.integers(1, 30))).tolist()
        assert "".join(_stream(tokenizer, ids)) == tokenizer.decode(ids), ids


def test_truncated_character_is_flushed_as_a_full_decode_would() -> None:
    tokenizer = byte_level_bpe()
    ids = tokenizer.encode("a🚀", add_special_tokens=False)[:-1]  # stop inside the emoji
    deltas = _stream(tokenizer, ids)
    assert REPLACEMENT_CHAR not in "".join(deltas[:-1])
    assert "".join(deltas) == tokenizer.decode(ids)
    assert deltas[-1].endswith(REPLACEMENT_CHAR)
