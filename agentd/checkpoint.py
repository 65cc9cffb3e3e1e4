"""A model as agentd reads it, whatever its format on disk.

Every format plugin (``open_checkpoint`` hook) opens a path as a
:class:`Checkpoint`, which speaks one language: the Hugging Face layout. A
directory checkpoint reads ``config.json``, ``tokenizer.json`` and friends from
its files; a single-file format (GGUF, an RWKV ``.pth``) builds the same
documents from its own metadata. Backends, the tokenizer, ``agentd import`` and
the exporters read only this interface, so none of them knows which format a
model came in.

Every problem is raised as :class:`ModelLoadError` naming the file.
"""

from __future__ import annotations

import abc
import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from agentd.errors import ModelLoadError

if TYPE_CHECKING:
    from agentd.tokenizer import Tokenizer

Framework = Literal["np", "pt"]


class Checkpoint(abc.ABC):
    """Read access to one model. Cheap to open; weights load lazily, on :meth:`tensors`."""

    #: Where the model lives: a directory or a single file, absolute.
    path: Path
    #: Name of the format that opened it (``hf``, ``bundle``, ``onnx``, ``gguf``, ``rwkv-pth``, ...).
    format: str = ""
    #: The verified ``manifest.json`` of an agentd bundle, else None.
    manifest: dict[str, Any] | None = None

    # -- what a format provides ----------------------------------------------
    @abc.abstractmethod
    def read_text(self, relative: str) -> str | None:
        """Text of one Hugging Face layout document (``config.json``, ``tokenizer.json``,
        ``tokenizer_config.json``, ``chat_template.jinja``, ...), or None if the model has none."""

    @abc.abstractmethod
    def tensors(self, framework: Framework = "pt") -> Iterator[tuple[str, Any]]:
        """Yield ``(name, tensor)`` for every weight under its Hugging Face name.

        ``framework`` is ``np`` (NumPy arrays) or ``pt`` (torch tensors).
        A truncated or corrupt file raises ModelLoadError naming it.
        """

    @property
    @abc.abstractmethod
    def weight_bytes(self) -> int:
        """Bytes the weights take in the source, before any backend converts them."""

    # -- derived, shared by every format -------------------------------------
    def where(self, relative: str) -> Path:
        """The path to name in an error about document ``relative``."""
        return self.path / relative if self.path.is_dir() else self.path

    def file(self, relative: str, *, required: bool = True) -> Path | None:
        """A real file inside the model directory (single-file formats have none)."""
        if required:
            raise ModelLoadError(self.where(relative), f"this {self.format} model has no file {relative!r}")
        return None

    def read_json(self, relative: str, *, required: bool = False) -> dict[str, Any] | None:
        """Parse a JSON object document; ``None`` if absent and not ``required``."""
        text = self.read_text(relative)
        if text is None:
            if required:
                raise ModelLoadError(self.where(relative), "required file is missing")
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(self.where(relative), f"invalid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ModelLoadError(self.where(relative), "expected a JSON object")
        return value

    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.json`` (required)."""
        return self.read_json("config.json", required=True)  # type: ignore[return-value]

    @cached_property
    def architecture(self) -> str:
        """The name the backend registry is asked for, e.g. ``LlamaForCausalLM``
        (``config.json`` ``architectures[0]``)."""
        archs = self.config.get("architectures")
        if not archs or not isinstance(archs, list) or not isinstance(archs[0], str):
            raise ModelLoadError(self.where("config.json"), "no 'architectures' entry")
        return archs[0]

    @cached_property
    def generation_config(self) -> dict[str, Any]:
        """``generation_config.json``, or ``{}`` when the model has none."""
        return self.read_json("generation_config.json") or {}

    @property
    def description(self) -> str | None:
        """One line about where the weights came from (shown by ``GetModelInfo``), if worth saying."""
        return None

    @property
    def stored_quant(self) -> str:
        """The weight encoding (``fp32``, ``int8``, ``int4``) closest to how the weights are stored:
        what a backend computes with unless told otherwise. Float checkpoints: ``fp32``."""
        return "fp32"

    def tokenizer(self) -> "Tokenizer | None":
        """The model's tokenizer and chat template, or None when it has none."""
        from agentd.tokenizer import Tokenizer

        return Tokenizer.from_checkpoint(self)

    def load_tensors(self, framework: Framework = "pt") -> dict[str, Any]:
        """Every weight as ``{name: tensor}`` (see :meth:`tensors`)."""
        return dict(self.tensors(framework))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, format={self.format!r})"
