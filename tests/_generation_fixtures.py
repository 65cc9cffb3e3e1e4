"""Shared test fixtures for generation: real tiny tokenizers and a scripted fake backend.

The tokenizers are trained on the spot with the Hugging Face ``tokenizers``
library (no downloads) and wrapped in agentd's own :class:`Tokenizer`:

* ``byte_level_bpe()`` — GPT-2 / Llama-3 style: ByteLevel pre-tokenizer and
  decoder, so characters outside the training corpus split into byte tokens;
* ``sentencepiece_bpe()`` — Llama-2 / Mistral style: Metaspace ("▁") with
  byte fallback (``<0xNN>`` tokens) and a decoder that strips one leading space.

Both have vocabularies of a few hundred tokens and an EOS token.
"""

from __future__ import annotations

import functools
import json
from typing import Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo
from agentd.tokenizer import Tokenizer

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello agent. the agent plans a trip to the cafe",
    "a cafe sells coffee and tea; the barista smiles at the dog",
    "numbers 0 1 2 3 4 5 6 7 8 9 and punctuation ! ? : ; ( ) [ ] { }",
    "STOP here. End of line\nnew line\ttab",
] * 4

#: Texts whose characters are outside the corpus, so they split across byte tokens.
MULTIBYTE_TEXTS = [
    "hello 👋 world",
    "café crème brûlée",
    "中文字符 and 日本語",
    "emoji chain 🧑‍💻🚀🎉 done",
    "mixed: naïve résumé — “quotes” … ✓",
    "  leading spaces and trailing  ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math ∑ ∫ ≈",
]


@functools.cache
def byte_level_bpe() -> Tokenizer:
    """A byte-level BPE tokenizer (vocab ~300) with EOS ``<|eos|>``."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    rust = RustTokenizer(models.BPE())
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    rust.train_from_iterator(CORPUS, trainer)
    return Tokenizer(rust, special_tokens={"eos_token": "<|eos|>"})


@functools.cache
def sentencepiece_bpe() -> Tokenizer:
    """A SentencePiece-style BPE (Metaspace, ``<0xNN>`` byte fallback) with EOS ``</s>``."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    trained = RustTokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    trained.train_from_iterator(CORPUS, trainer)

    # Rebuild with the 256 byte tokens as ordinary vocabulary, as Llama 2 has them.
    model = json.loads(trained.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    rust = RustTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    rust.add_special_tokens(["<unk>", "<s>", "</s>"])
    rust.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    rust.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return Tokenizer(rust, special_tokens={"eos_token": "</s>", "bos_token": "<s>"})


class ScriptedBackend(Backend):
    """A deterministic NumPy decoder whose logits favour a scripted continuation.

    After the prompt, the ``i``-th generated position's logits are fixed random
    noise plus ``margin`` on ``script[i]`` (past the script: on ``filler``), so
    greedy decoding reproduces the script exactly and sampled logprobs are
    non-trivial. Counts prefill and decode calls for the tests.
    """

    def __init__(
        self,
        script: Sequence[int],
        vocab_size: int,
        *,
        context_length: int = 4096,
        margin: float = 20.0,
        filler: int = 0,
        seed: int = 0,
    ):
        self.info = ModelInfo(
            architecture="ScriptedForCausalLM",
            kind="decoder",
            parameters=0,
            context_length=context_length,
            vocab_size=vocab_size,
            dtype="float32",
        )
        self.script = list(script)
        self.margin = margin
        self.filler = filler
        self.noise = np.random.default_rng(seed).standard_normal((64, vocab_size)).astype(np.float32)
        self.prefill_calls: list[int] = []  # chunk lengths
        self.decode_calls = 0

    def new_state(self) -> dict:
        return {"tokens": [], "prompt_len": None}

    def prefill(self, token_ids: np.ndarray, state: dict, *, all_logits: bool = False) -> np.ndarray:
        assert token_ids.dtype == np.int64 and token_ids.ndim == 1
        self.prefill_calls.append(int(token_ids.size))
        state["tokens"].extend(int(t) for t in token_ids)
        state["prompt_len"] = len(state["tokens"])  # the script starts after the last prefill
        return self._logits(state)[None, :]  # (1, V)

    def decode(self, token_ids: np.ndarray, states: Sequence[dict]) -> np.ndarray:
        assert token_ids.dtype == np.int64 and token_ids.shape == (len(states),)
        self.decode_calls += 1
        rows = []
        for token, state in zip(token_ids, states):
            state["tokens"].append(int(token))
            rows.append(self._logits(state))
        return np.stack(rows)  # (B, V)

    def _logits(self, state: dict) -> np.ndarray:
        position = len(state["tokens"]) - state["prompt_len"]
        logits = self.noise[position % len(self.noise)].copy()
        target = self.script[position] if position < len(self.script) else self.filler
        logits[target] += self.margin
        return logits
