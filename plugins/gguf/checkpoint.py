"""A GGUF file as a :class:`~agentd.checkpoint.Checkpoint` in Hugging Face terms.

Backends, the tokenizer, ``agentd import`` and the exporters read only the
Checkpoint interface, so this is the whole of GGUF support: synthesised
``config.json`` / ``generation_config.json`` / ``tokenizer.json`` /
``tokenizer_config.json`` documents, and weights under their Hugging Face
names, dequantised to float32 one tensor at a time as they are consumed (the
backends compute in float32 on CPU; a quantised matmul kernel would be a
backend's business, not a format's).
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from agentd.checkpoint import Checkpoint, Framework
from agentd.errors import ModelLoadError

from . import metadata
from .names import NOT_WEIGHTS, hf_name, layout_fix
from .reader import GgufFile
from .tokenizer import build_tokenizer


#: The torch encoding each GGUF matrix type runs as (see :attr:`GgufCheckpoint.stored_quant`).
STORED_QUANT = {
    **dict.fromkeys(("Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K"), "int4"),
    **dict.fromkeys(("Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"), "int8"),
}


class GgufCheckpoint(Checkpoint):
    """One ``.gguf`` file; metadata parsed on open, tensors read lazily from the memory map."""

    format = "gguf"

    def __init__(self, path: Path):
        self.path = Path(path).expanduser().resolve()
        self._file = GgufFile(self.path)
        self._arch = metadata.architecture(self._file)
        self._check_tensor_names()

    def _check_tensor_names(self) -> None:
        """Refuse, before any weight is read, a tensor no backend would know what to do with."""
        for info in self._file.tensor_infos:
            if info.name not in NOT_WEIGHTS and hf_name(self._arch, info.name) is None:
                raise ModelLoadError(
                    self.path, f"tensor {info.name!r} has no Hugging Face counterpart in a {self._arch} model"
                )

    # -- documents -------------------------------------------------------------
    @cached_property
    def _documents(self) -> dict[str, str]:
        documents = {
            "config.json": _dump(self._hf_config),
            "generation_config.json": _dump(metadata.generation_config(self._file)),
        }
        if "tokenizer.ggml.tokens" in self._file.metadata:
            tokenizer_json, tokenizer_config = build_tokenizer(self._file.metadata, self.path)
            documents["tokenizer.json"] = tokenizer_json
            documents["tokenizer_config.json"] = _dump(tokenizer_config)
        return documents

    @cached_property
    def _hf_config(self) -> dict[str, Any]:
        return metadata.hf_config(self._file)

    def read_text(self, relative: str) -> str | None:
        if relative in ("config.json", "generation_config.json"):
            return self._documents[relative]  # without building the tokenizer when only configs are wanted
        return self._documents.get(relative)

    # -- weights -----------------------------------------------------------------
    def tensors(self, framework: Framework = "pt") -> Iterator[tuple[str, Any]]:
        if framework not in ("np", "pt"):
            raise ValueError(f"framework must be 'np' or 'pt', got {framework!r}")
        if framework == "pt":
            import torch
        config = self._hf_config
        for info in self._file.tensor_infos:
            if info.name in NOT_WEIGHTS:
                continue
            array = self._file.dequantize(info.name)
            fix = layout_fix(self._arch, info.name, config)
            if fix is not None:
                try:
                    array = fix(array)
                except ValueError as exc:
                    raise ModelLoadError(self.path, f"tensor {info.name!r} has an unexpected shape {info.shape} ({exc})") from None
            name = hf_name(self._arch, info.name)
            yield name, (torch.from_numpy(array) if framework == "pt" else array)

    @property
    def weight_bytes(self) -> int:
        return sum(info.n_bytes for info in self._file.tensor_infos if info.name not in NOT_WEIGHTS)

    @property
    def quantization(self) -> str:
        """The file's weight encoding: the type holding most parameters of its matrices, e.g. ``Q4_K``."""
        return self._type_mix()[0][0]

    def _type_mix(self) -> list[tuple[str, int]]:
        elements: Counter[str] = Counter()
        for info in self._file.tensor_infos:
            if len(info.shape) >= 2:
                count = 1
                for dim in info.shape:
                    count *= dim
                elements[info.type_name] += count
        return elements.most_common() or [("F32", 0)]

    @property
    def stored_quant(self) -> str:
        """``int4`` for files whose matrices are mostly 4-bit blocks (Q4_0, Q4_1, Q4_K, and the
        lower K-quants), ``int8`` for Q5_*, Q6_K and Q8_0, ``fp32`` for float files: a GGUF file runs at about the
        bits it was made with, as it would in llama.cpp."""
        return STORED_QUANT.get(self.quantization, "fp32")

    @property
    def description(self) -> str:
        mix = [name for name, _ in self._type_mix()]
        mixed = f" (mixed with {', '.join(mix[1:])})" if len(mix) > 1 else ""
        return f"GGUF {mix[0]}{mixed}"


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
