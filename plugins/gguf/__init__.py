"""GGUF: the single-file format of llama.cpp and Ollama, opened directly.

A file whose first four bytes are ``GGUF`` is claimed here and opened as a
:class:`~.checkpoint.GgufCheckpoint`: the Hugging Face documents a backend
reads (``config.json``, ``tokenizer.json``, ``tokenizer_config.json`` with the
chat template, ``generation_config.json``) are rebuilt from the GGUF metadata,
and the weights are dequantised to float32 under their Hugging Face names as
a backend consumes them. So ``load_model``, ``agentd import``, ``agentd
export`` and ``agentd serve`` take a ``.gguf`` like any checkpoint.

Architectures: ``llama`` (SmolLM2, TinyLlama, Llama 3.x with its RoPE
scaling), ``qwen2`` and ``mamba``. Tensor types: F32, F16, BF16, Q8_0,
Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q2_K..Q6_K (dequantised by the
``gguf`` package). Anything else is one ModelLoadError naming the file and
the tensor.

Layout, one abstraction a file: :mod:`.reader` (parse, check, dequantise),
:mod:`.names` (GGUF -> HF tensor names and layouts), :mod:`.metadata` (configs),
:mod:`.rope` (Llama 3 RoPE scaling from ``rope_freqs``), :mod:`.tokenizer`,
:mod:`.checkpoint`, and the way back, :mod:`.writer` (a Hugging Face model as a GGUF file,
plus llama.cpp's quantiser; ``agentd bench`` feeds llama.cpp with it). (The SmolLM2 file agentd serves by default is found by
:mod:`agentd.default_models`.)
"""

from __future__ import annotations

from pathlib import Path

from agentd.checkpoint import Checkpoint
from agentd.hookspecs import hookimpl

from .reader import MAGIC

__all__ = ["open_checkpoint"]


@hookimpl
def open_checkpoint(path: Path) -> Checkpoint | None:
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            return None
    from .checkpoint import GgufCheckpoint

    return GgufCheckpoint(path)
