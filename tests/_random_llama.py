"""A random-weight Llama checkpoint built with NumPy: the test suite's generative fixture.

A small Llama-architecture decoder with a byte-level BPE tokenizer (one token
per byte) and a ChatML chat template, built deterministically from a seed.
Its output is gibberish, and its ``config.json`` says so
(``agentd_description``), so wherever a test serves it the label shows.
It used to be the daemon's generative default; the default is now a real
pretrained model (see :mod:`agentd.default_models`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RANDOM_WEIGHTS_LABEL = "random weights (not a trained model): output is gibberish"
#: Key in ``config.json`` carrying a model's one-line description; the server shows it.
DESCRIPTION_KEY = "agentd_description"

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class RandomLlamaSpec:
    """Shape of a random Llama decoder; the defaults are ``tiny-random-llama``."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 704
    max_position_embeddings: int = 2048
    seed: int = 0
    std: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def build_random_llama(dest: Path, spec: RandomLlamaSpec) -> Path:
    """Write a complete Hugging Face Llama checkpoint with random weights to ``dest``.

    The directory appears atomically (built next to it, then renamed), so a
    crash or a concurrent builder never leaves a half-written model behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        vocab_size = _write_tokenizer(staging, spec)
        _write_configs(staging, spec, vocab_size)
        _write_weights(staging, spec, vocab_size)
        try:
            os.rename(staging, dest)
        except OSError:
            if not dest.is_dir():  # lost a race to another builder: theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# -- tokenizer -----------------------------------------------------------------
def byte_symbols() -> list[str]:
    """The printable character ByteLevel uses for each byte 0..255 (GPT-2's table).

    Printable Latin-1 bytes stand for themselves; the rest are shifted past
    U+0100 in byte order, so every byte is one visible vocabulary symbol.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    keep = set(printable)
    symbols: list[str] = []
    shifted = 0
    for byte in range(256):
        if byte in keep:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _write_tokenizer(directory: Path, spec: RandomLlamaSpec) -> int:
    """Byte-level BPE (one token per byte, no merges) plus ChatML specials; returns vocab size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: byte for byte, symbol in enumerate(byte_symbols())}  # id == byte value
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    tokenizer.save(str(directory / "tokenizer.json"))

    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": spec.max_position_embeddings,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": {
            str(ids[token]): {"content": token, "special": True, "normalized": False, "lstrip": False,
                              "rstrip": False, "single_word": False}
            for token in SPECIAL_TOKENS
        },
    }
    _write_json(directory / "tokenizer_config.json", tokenizer_config)
    return tokenizer.get_vocab_size(with_added_tokens=True)


# -- configs -------------------------------------------------------------------
def _write_configs(directory: Path, spec: RandomLlamaSpec, vocab_size: int) -> None:
    eos_id, pad_id = vocab_size - 1, vocab_size - 3  # <|im_end|>, <|endoftext|> (added last, in order)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "initializer_range": spec.std,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
        DESCRIPTION_KEY: RANDOM_WEIGHTS_LABEL,
    }
    _write_json(directory / "config.json", config)
    generation_config = {
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "do_sample": True,
        "temperature": 0.8,
        "top_p": 0.95,
        "max_new_tokens": 64,
    }
    _write_json(directory / "generation_config.json", generation_config)


# -- weights -------------------------------------------------------------------
def _write_weights(directory: Path, spec: RandomLlamaSpec, vocab_size: int) -> None:
    """Normal(0, std) matrices and unit norm weights, in a fixed order so the seed fully decides them."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(spec.seed)
    hidden, inter, head_dim = spec.hidden_size, spec.intermediate_size, spec.head_dim
    q_out, kv_out = spec.num_attention_heads * head_dim, spec.num_key_value_heads * head_dim

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.std)).astype(np.float32)

    ones = lambda: np.ones(hidden, dtype=np.float32)  # noqa: E731 - RMSNorm starts at identity
    tensors = {"model.embed_tokens.weight": normal(vocab_size, hidden)}
    for layer in range(spec.num_hidden_layers):
        prefix = f"model.layers.{layer}"
        # nn.Linear stores (out_features, in_features).
        tensors[f"{prefix}.self_attn.q_proj.weight"] = normal(q_out, hidden)
        tensors[f"{prefix}.self_attn.k_proj.weight"] = normal(kv_out, hidden)
        tensors[f"{prefix}.self_attn.v_proj.weight"] = normal(kv_out, hidden)
        tensors[f"{prefix}.self_attn.o_proj.weight"] = normal(hidden, q_out)
        tensors[f"{prefix}.mlp.gate_proj.weight"] = normal(inter, hidden)
        tensors[f"{prefix}.mlp.up_proj.weight"] = normal(inter, hidden)
        tensors[f"{prefix}.mlp.down_proj.weight"] = normal(hidden, inter)
        tensors[f"{prefix}.input_layernorm.weight"] = ones()
        tensors[f"{prefix}.post_attention_layernorm.weight"] = ones()
    tensors["model.norm.weight"] = ones()
    # Tied embeddings: no lm_head.weight, as Hugging Face saves tied checkpoints.
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
