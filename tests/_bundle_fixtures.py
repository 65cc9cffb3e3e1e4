"""Tiny random-weight checkpoints for the bundle, load-error and plugin tests.

Models are built with Hugging Face ``transformers`` (the reference nobody here
wrote) and saved with ``save_pretrained``, exactly as a user's download looks.
Import this module from test files; it is not a conftest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The tiny Llama every test uses: hidden 32, 2 layers, vocab 128.
LLAMA_CONFIG = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)
CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
AGENTD = str(Path(sys.executable).with_name("agentd"))


def build_tiny_llama(path: Path, *, shard_bytes: int | None = None, seed: int = 0) -> Path:
    """Save a random tiny LlamaForCausalLM (+ a word-level tokenizer) to ``path``.

    ``shard_bytes`` splits the weights into several safetensors shards with an index.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA_CONFIG)).eval()
    if shard_bytes is None:
        model.save_pretrained(path)
    else:
        model.save_pretrained(path, max_shard_size=shard_bytes)
    _save_tokenizer(path)
    return path


def _save_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"w{i}": i for i in range(3, LLAMA_CONFIG["vocab_size"])})
    rust = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=rust, bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=CHAT_TEMPLATE
    )
    fast.save_pretrained(path)


def copy_model(source: Path, target: Path) -> Path:
    """A private copy a test may break."""
    shutil.copytree(source, target, symlinks=True)
    return target


def weights_of(path: Path) -> Path:
    """The single weight file (or the first shard) of a model directory."""
    return sorted(path.glob("*.safetensors"))[0]


def edit_json(path: Path, **changes: object) -> None:
    """Rewrite a JSON object file with ``changes`` applied."""
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value, indent=2))


def run_agentd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``agentd`` CLI as a user would."""
    return subprocess.run(
        [AGENTD, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def decoder_backend_available() -> bool:
    """True once the Llama backend (written in parallel) has landed."""
    import importlib.util

    return importlib.util.find_spec("agentd.plugins.transformer.decoder") is not None


needs_decoder = pytest.mark.skipif(
    not decoder_backend_available(), reason="agentd.plugins.transformer.decoder not written yet"
)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine tiny Llama checkpoint (single weight file); copy it before breaking it."""
    return build_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llama_sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture saved as several shards plus ``model.safetensors.index.json``."""
    return build_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama-sharded", shard_bytes=20_000, seed=1)
