"""Tiny random-weight Llama/Qwen2 checkpoints made with Hugging Face transformers.

transformers is the reference the parity tests compare against; agentd itself
never imports it. Models are tiny (hidden 64, 2 layers, vocab 256) so the whole
parity suite runs in seconds on two cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentd.backend import Backend
from agentd.formats import open_checkpoint

VOCAB = 256

#: Variants exercised by the parity tests: name -> (architecture, config overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama3-rope": (
        "llama",
        {
            # A short original context so all three llama3 frequency bands occur.
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            "rope_theta": 500000.0,
        },
    ),
    "llama3-rope-tied-headdim": (
        "llama",
        {
            "tie_word_embeddings": True,
            "head_dim": 32,  # explicit head_dim != hidden / heads
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
    ),
    "qwen2": ("qwen2", {}),
    "qwen2-tied": ("qwen2", {"tie_word_embeddings": True}),
}


def hf_config(family: str, **overrides: Any):
    """A tiny transformers config: hidden 64, 2 layers, 4 query heads over 2 KV heads."""
    from transformers import LlamaConfig, Qwen2Config

    base = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    base.update(overrides)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[family]
    return cls(**base)


def make_hf_model(family: str, seed: int = 0, **overrides: Any):
    """A random-weight transformers causal LM in eval mode, float32, eager attention."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = hf_config(family, **overrides)
    config._attn_implementation = "eager"
    cls = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}[family]
    model = cls(config).eval()
    # The default init (std 0.02) makes near-uniform logits; larger weights make
    # greedy decoding and the logit comparison meaningful.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.15)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
            else:
                param.uniform_(0.8, 1.2)
    return model


def save_variant(name: str, directory: Path, **save_kwargs: Any):
    """Build variant ``name``, save it as safetensors in ``directory``; return the HF model."""
    family, overrides = VARIANTS[name]
    model = make_hf_model(family, **overrides)
    model.save_pretrained(directory, safe_serialization=True, **save_kwargs)
    return model


def load_backend(directory: Path) -> Backend:
    """Our backend for ``directory``: through ``agentd.load_model`` when the whole
    stack (tokenizer, generation) is importable, else ``Checkpoint`` + ``decoder.load``."""
    try:
        import agentd.model  # noqa: F401  (imports agentd.tokenizer and agentd.generation)
    except ImportError:
        from agentd.plugins.transformer.decoder import load

        return load(open_checkpoint(directory))
    from agentd import load_model

    return load_model(directory).backend


def hf_logits(model, token_ids: list[int]) -> np.ndarray:
    """Reference logits ``(T, V)`` of one forward over ``token_ids``."""
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float().numpy()


def greedy(backend: Backend, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding over the backend contract: one prefill, then decode steps."""
    state = backend.new_state()
    logits = backend.prefill(np.asarray(prompt, dtype=np.int64), state)
    out = [int(logits[-1].argmax())]
    while len(out) < new_tokens:
        logits = backend.decode(np.asarray(out[-1:], dtype=np.int64), [state])
        out.append(int(logits[0].argmax()))
    return out
