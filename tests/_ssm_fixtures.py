"""Tiny random-weight Mamba / Mamba-2 checkpoints made with Hugging Face ``transformers``.

``transformers`` is the reference the SSM tests compare against (a test-only
dependency; agentd never imports it). On CPU without ``mamba_ssm`` /
``causal_conv1d`` it runs its own torch implementations: a per-token loop for
Mamba, the chunked SSD for Mamba-2 prompts and a recurrent step for cached
decoding.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 128


def _perturb(model: torch.nn.Module) -> None:
    """Default init leaves norms at 1, ``D`` at 1 and smooth decays; vary them all.

    ``dt`` biases are spread so decays range from near 1 to strong (the
    chunked forms' stability), and the projections are scaled up so the mixers,
    not the current token's embedding, drive the output: otherwise greedy
    decoding falls into a two-token cycle and a generation test proves little.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("A_log"):
                param.copy_(torch.randn_like(param))
            elif name.endswith("dt_proj.bias") or name.endswith("dt_bias"):
                param.copy_(torch.randn_like(param) - 0.5)
            elif name.endswith("D") or "norm" in name or "embeddings" in name:
                param.copy_(torch.randn_like(param))
            elif name.endswith("in_proj.weight"):
                param.mul_(3.0)
            elif name.endswith("out_proj.weight"):
                param.mul_(10.0)
            else:
                param.add_(torch.randn_like(param) * 0.05)


def make_hf_mamba(
    out_dir: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    state: int = 8,
    conv: int = 4,
    tie_word_embeddings: bool = True,
    use_bias: bool = False,
    seed: int = 0,
    vocab: int = VOCAB,
):
    """Save a random ``MambaForCausalLM`` to ``out_dir``; return the reloaded HF model (eval)."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    config = MambaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        state_size=state,
        conv_kernel=conv,
        expand=2,
        use_bias=use_bias,
        tie_word_embeddings=tie_word_embeddings,
        # No end-of-sequence token: greedy runs compare all their tokens.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = MambaForCausalLM(config)
    _perturb(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    reloaded = MambaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    return reloaded.eval()


def make_hf_mamba2(
    out_dir: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    head_dim: int = 16,
    n_groups: int = 2,
    state: int = 8,
    conv: int = 4,
    chunk_size: int = 8,
    time_step_limit: tuple[float, float] = (0.0, float("inf")),
    tie_word_embeddings: bool = False,
    seed: int = 0,
    vocab: int = VOCAB,
):
    """Save a random ``Mamba2ForCausalLM`` to ``out_dir``; return the reloaded HF model (eval)."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(seed)
    config = Mamba2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        expand=2,
        head_dim=head_dim,
        num_heads=2 * hidden // head_dim,
        n_groups=n_groups,
        state_size=state,
        conv_kernel=conv,
        chunk_size=chunk_size,
        time_step_limit=time_step_limit,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = Mamba2ForCausalLM(config)
    _perturb(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    reloaded = Mamba2ForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    return reloaded.eval()


def hf_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits ``(T, V)`` of one full HF forward (no cache)."""
    with torch.inference_mode():
        return model(torch.tensor([ids]), use_cache=False).logits[0].float()


def prompt(length: int, seed: int = 1) -> list[int]:
    """A reproducible random prompt."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (length,), generator=generator).tolist()


# -- contract checks shared by the Mamba and Mamba-2 tests ----------------------------


def hf_greedy(model, ids: list[int], new_tokens: int) -> list[int]:
    """HF ``generate(do_sample=False)`` with its cache: the new token ids only."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    return out[0, len(ids) :].tolist()


def split_prefill_then_decode(backend, ids: list[int], cuts: list[int], decode_from: int):
    """Logits ``(T, V)`` for ``ids`` fed as prefill pieces split at ``cuts``, then one decode per token.

    Returns the concatenated logits the pieces and steps produced, and the state.
    """
    import numpy as np

    state = backend.new_state()
    rows = []
    bounds = [0, *cuts, decode_from]
    for start, stop in zip(bounds, bounds[1:]):
        if stop > start:
            rows.append(backend.prefill(np.array(ids[start:stop]), state, all_logits=True))
    for token in ids[decode_from:]:
        rows.append(backend.decode(np.array([token]), [state]))
    return np.concatenate(rows), state
