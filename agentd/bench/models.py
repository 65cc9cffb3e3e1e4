"""The random-weight checkpoints ``agentd bench`` measures, saved as Hugging Face safetensors directories.

Two shapes, the ones the issue-11 figures were taken at: a Llama of
SmolLM2-135M's shape and a Mamba of mamba-130m's shape (``--quick``: the same
architectures, two layers of width 64, so a run takes seconds). Built with
``transformers`` (the ``bench`` extra; agentd itself never imports it) from a
fixed seed, so every engine reads the very same weights. Each directory also
gets a word-level ``tokenizer.json`` covering the vocabulary
(onnxruntime-genai's model builder insists on one; the benchmark feeds token
ids, never text).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: SmolLM2-135M's shape (the one benchmarks/bench_transformer.py uses).
SMOLLM2_135M: dict[str, Any] = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
)
#: mamba-130m's shape (benchmarks/bench_ssm.py): d_model 768, 24 layers, state 16, conv 4, expand 2.
MAMBA_130M: dict[str, Any] = dict(
    vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, conv_kernel=4, expand=2, tie_word_embeddings=True,
)
_TINY_LLAMA = dict(SMOLLM2_135M, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
_TINY_MAMBA = dict(MAMBA_130M, vocab_size=512, hidden_size=64, num_hidden_layers=2, state_size=8)


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked architecture: a label, a transformers class and its config."""

    #: Short key (``--models``), e.g. ``smollm2``.
    key: str
    #: What the report calls it, e.g. ``Llama, SmolLM2-135M shape``.
    label: str
    #: ``transformers`` config and model class names.
    config_class: str
    model_class: str
    config: dict[str, Any] = field(default_factory=dict)
    #: Whether the model keeps a KV cache (transformer) or a fixed state (recurrent).
    recurrent: bool = False

    @property
    def architecture(self) -> str:
        """The Hugging Face ``architectures[0]`` engines check support against."""
        return self.model_class

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])


def specs(quick: bool = False) -> dict[str, ModelSpec]:
    """Every benchmarked model by key; ``quick`` gives two-layer, width-64 versions."""
    return {
        "smollm2": ModelSpec("smollm2", "Llama, SmolLM2-135M shape" + (" (quick: 2 layers, width 64)" if quick else ""),
                             "LlamaConfig", "LlamaForCausalLM", dict(_TINY_LLAMA if quick else SMOLLM2_135M)),
        "mamba": ModelSpec("mamba", "Mamba, mamba-130m shape" + (" (quick: 2 layers, width 64)" if quick else ""),
                           "MambaConfig", "MambaForCausalLM", dict(_TINY_MAMBA if quick else MAMBA_130M), recurrent=True),
    }


def build(spec: ModelSpec, directory: Path) -> Path:
    """``directory`` holding ``spec``'s random-weight checkpoint (built once; a crashed build never looks done)."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    import transformers

    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    torch.manual_seed(0)
    config = getattr(transformers, spec.config_class)(**spec.config, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = getattr(transformers, spec.model_class)(config).eval()
    model.save_pretrained(staging, safe_serialization=True)
    add_word_tokenizer(staging, spec.vocab_size)
    os.replace(staging, directory)
    return directory


def add_word_tokenizer(directory: Path, vocab_size: int) -> None:
    """A word-level tokenizer ``w<id>`` over the vocabulary: enough for onnxruntime-genai's builder."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i for i in range(1, vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def parameter_counts(directory: Path) -> dict[str, int]:
    """Parameters of the checkpoint by kind, from the safetensors headers (no weights read).

    ``matrix``: 2-D weights other than the embedding; ``embedding``: the token
    embedding (a tied LM head reads all of it every token); ``vector``: norms,
    biases, Mamba's per-channel tensors and conv (small, kept in float32 by every engine).
    """
    from agentd.safetensors_header import read_safetensors_header

    counts = {"matrix": 0, "embedding": 0, "vector": 0}
    for path in sorted(directory.glob("*.safetensors")):
        for entry in read_safetensors_header(path).tensors:
            if "embed" in entry.name or entry.name.startswith("lm_head"):
                counts["embedding"] += entry.numel
            elif len(entry.shape) == 2 and min(entry.shape) > 16:
                counts["matrix"] += entry.numel
            else:
                counts["vector"] += entry.numel
    return counts
