"""Tiny random-weight RWKV models for the linear-attention tests.

RWKV-4 comes from Hugging Face ``transformers`` (``RwkvForCausalLM``), RWKV-7
from a hand-built ``.pth`` in the layout of the ``rwkv`` PyPI package
(``RWKV_x070``), which is also the reference implementation. Both are test-only
dependencies; agentd never imports them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

VOCAB = 101


def make_hf_rwkv4(
    out_dir: Path,
    *,
    hidden: int = 32,
    layers: int = 3,
    rescale_every: int = 2,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    vocab: int = VOCAB,
):
    """Save a random ``RwkvForCausalLM`` to ``out_dir``; return the reloaded HF model (eval)."""
    from transformers import RwkvConfig, RwkvForCausalLM

    torch.manual_seed(seed)
    config = RwkvConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=4 * hidden,
        context_length=256,
        rescale_every=rescale_every,
        tie_word_embeddings=tie_word_embeddings,
        # No end-of-sequence token: greedy runs compare all their tokens.
        bos_token_id=None,
        eos_token_id=None,
    )
    model = RwkvForCausalLM(config)
    with torch.no_grad():
        # Default init leaves embeddings ~1e-4 and decays smooth; perturb every
        # parameter so the test exercises varied decays, bonuses and mixes.
        for name, param in model.named_parameters():
            if "time_decay" in name:
                param.copy_(torch.randn_like(param) * 1.5)
            elif "time_first" in name:
                param.copy_(torch.randn_like(param))
            elif "time_mix" in name:
                param.copy_(torch.rand_like(param))
            elif "embeddings" in name:
                param.copy_(torch.randn_like(param))
            else:
                param.add_(torch.randn_like(param) * 0.1)
    # Save before any forward: Hugging Face rescales weights in place on its
    # first eval-mode forward, and the checkpoint must hold unscaled weights.
    model.save_pretrained(out_dir, safe_serialization=True)
    reloaded = RwkvForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    reloaded.eval()
    return reloaded


def make_rwkv7_pth(
    path: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    head_size: int = 32,
    vocab: int = VOCAB,
    seed: int = 0,
) -> Path:
    """Write a random RWKV-7 x070 state dict (the ``rwkv`` package's names and shapes)."""
    g = torch.Generator().manual_seed(seed)
    C, H, N, ffn = hidden, hidden // head_size, head_size, 4 * hidden
    decay_lora, a_lora, v_lora, gate_lora = 16, 16, 8, 32

    def randn(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def unit(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    sd = {
        "emb.weight": randn(vocab, C, scale=1.0),
        "blocks.0.ln0.weight": 1 + randn(C),
        "blocks.0.ln0.bias": randn(C),
    }
    for i in range(layers):
        p, att, ffn_ = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        for ln in ("ln1", "ln2"):
            sd[p + ln + ".weight"] = 1 + randn(C)
            sd[p + ln + ".bias"] = randn(C)
        for name in "rwkvag":
            sd[att + "x_" + name] = unit(1, 1, C)
        sd[att + "w0"] = randn(1, 1, C, scale=2.0)
        sd[att + "w1"], sd[att + "w2"] = randn(C, decay_lora), randn(decay_lora, C)
        sd[att + "a0"] = randn(1, 1, C, scale=1.0)
        sd[att + "a1"], sd[att + "a2"] = randn(C, a_lora), randn(a_lora, C)
        # Real checkpoints carry v0..v2 in block 0 too, where they are unused.
        sd[att + "v0"] = randn(1, 1, C, scale=1.0)
        sd[att + "v1"], sd[att + "v2"] = randn(C, v_lora), randn(v_lora, C)
        sd[att + "g1"], sd[att + "g2"] = randn(C, gate_lora), randn(gate_lora, C)
        sd[att + "k_k"] = 0.85 + randn(1, 1, C)
        sd[att + "k_a"] = 1 + randn(1, 1, C)
        sd[att + "r_k"] = randn(H, N, scale=0.5)
        for name in ("receptance", "key", "value", "output"):
            sd[att + name + ".weight"] = randn(C, C, scale=C**-0.5)
        sd[att + "ln_x.weight"] = 1 + randn(C)
        sd[att + "ln_x.bias"] = randn(C)
        sd[ffn_ + "x_k"] = unit(1, 1, C)
        sd[ffn_ + "key.weight"] = randn(ffn, C, scale=C**-0.5)
        sd[ffn_ + "value.weight"] = randn(C, ffn, scale=ffn**-0.5)
    sd["ln_out.weight"] = 1 + randn(C)
    sd["ln_out.bias"] = randn(C)
    sd["head.weight"] = randn(vocab, C, scale=2 * C**-0.5)
    torch.save(sd, path)
    return path


def rwkv7_reference(pth: Path):
    """The ``rwkv`` package's own RWKV-7 model (CPU fp32) for ``pth``."""
    os.environ["RWKV_V7_ON"] = "1"
    os.environ["RWKV_JIT_ON"] = "1"
    os.environ["RWKV_CUDA_ON"] = "0"
    import rwkv.model

    if not hasattr(rwkv.model, "RWKV_x070"):
        raise RuntimeError("rwkv.model was imported before RWKV_V7_ON=1 was set")
    name = str(pth)
    assert name.endswith(".pth")
    return rwkv.model.RWKV_x070(name[: -len(".pth")], "cpu fp32")
