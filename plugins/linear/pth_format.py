"""The ``rwkv-pth`` format: an RWKV-7 x070 ``.pth`` state dict, read as it ships.

BlinkDL publishes RWKV-7 checkpoints as ``torch.save`` state dicts in the
layout of the ``rwkv`` PyPI package's ``RWKV_x070``. This checkpoint speaks
the Hugging Face layout over one: ``config.json`` is synthesised with every
dimension inferred from the tensor shapes, the tensors keep the ``rwkv``
package's names (what the ``rwkv7`` backend reads) with the ``(1, 1, C)``
vectors squeezed to ``(C,)`` and block 0's unused ``v0``/``v1``/``v2`` left
out, and a World-vocabulary model (65536 ids) gets the RWKV World tokenizer
and chat template (:mod:`agentd.plugins.linear.world_tokenizer`).

The file is opened with ``torch.load(weights_only=True, mmap=True)``: no
arbitrary unpickling, and no tensor data is read until a backend touches it.
torch is imported only here, when a ``.pth`` is opened.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from agentd.checkpoint import Checkpoint, Framework
from agentd.errors import ModelLoadError
from agentd.plugins.linear.world_tokenizer import (
    CHAT_TEMPLATE,
    END_OF_TEXT,
    END_OF_TEXT_ID,
    WORLD_VOCAB_SIZE,
    world_tokenizer,
)

if TYPE_CHECKING:
    import torch

    from agentd.tokenizer import Tokenizer

FORMAT = "rwkv-pth"
ARCHITECTURE = "Rwkv7ForCausalLM"
#: A tensor only x070 (RWKV-7) blocks have: the per-head receptance-key bonus.
RWKV7_MARKER = "blocks.0.att.r_k"
#: What RWKV reports as its context (it has no hard limit; 4096 is the usual training length).
DEFAULT_CONTEXT_LENGTH = 4096
#: Block 0 takes its values as they are (``v_first``), so these are never read.
UNUSED = frozenset({"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"})
_BLOCK = re.compile(r"blocks\.(\d+)\.")


class RwkvPthCheckpoint(Checkpoint):
    """One RWKV-7 ``.pth`` file in Hugging Face terms. Raises ModelLoadError naming the
    file when it is unreadable, truncated or not an RWKV-7 x070 state dict."""

    format = FORMAT

    def __init__(self, path: str | Path, *, context_length: int = DEFAULT_CONTEXT_LENGTH):
        self.path = Path(path).expanduser().resolve()
        self.context_length = int(context_length)
        self._state = _read_state_dict(self.path)

    # -- documents -------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.json`` for the ``rwkv7`` backend, every dimension read off a tensor shape."""
        state = self._state
        vocab, hidden = state["emb.weight"].shape
        heads, head_size = state[RWKV7_MARKER].shape
        layers = 1 + max(int(m.group(1)) for name in state if (m := _BLOCK.match(name)))
        config: dict[str, Any] = {
            "architectures": [ARCHITECTURE],
            "model_type": "rwkv7",
            "vocab_size": int(vocab),
            "hidden_size": int(hidden),
            "num_hidden_layers": layers,
            "head_size": int(head_size),
            "num_heads": int(heads),
            "intermediate_size": int(self._tensor("blocks.0.ffn.key.weight").shape[0]),
            "decay_low_rank": self._lora_rank("w1", layers),
            "a_low_rank": self._lora_rank("a1", layers),
            "v_low_rank": self._lora_rank("v1", layers),
            "gate_low_rank": self._lora_rank("g1", layers),
            "context_length": self.context_length,
            "torch_dtype": str(state["emb.weight"].dtype).removeprefix("torch."),
        }
        if self.world_vocabulary:
            config["eos_token_id"] = END_OF_TEXT_ID
        return config

    @property
    def world_vocabulary(self) -> bool:
        """Whether the embedding has RWKV World's 65536 rows (Pile models have 50277 and another tokenizer)."""
        return int(self._state["emb.weight"].shape[0]) == WORLD_VOCAB_SIZE

    def read_text(self, relative: str) -> str | None:
        documents: dict[str, Any] = {"config.json": self.config}
        if self.world_vocabulary:
            documents["tokenizer_config.json"] = {"eos_token": END_OF_TEXT, "clean_up_tokenization_spaces": False}
            documents["generation_config.json"] = {"eos_token_id": END_OF_TEXT_ID}
            if relative == "chat_template.jinja":
                return CHAT_TEMPLATE
        document = documents.get(relative)
        return None if document is None else json.dumps(document, indent=2) + "\n"

    def tokenizer(self) -> "Tokenizer | None":
        """RWKV World's tokenizer for a World-vocabulary model, else None (no vocabulary to guess)."""
        if not self.world_vocabulary:
            return None
        from agentd.tokenizer import Tokenizer

        return Tokenizer.from_documents(world_tokenizer(), self)

    @property
    def description(self) -> str:
        tokenizer = "RWKV World tokenizer" if self.world_vocabulary else "no tokenizer (not a World vocabulary)"
        return f"RWKV-7 x070 .pth ({self.config['torch_dtype']}), {tokenizer}"

    # -- weights ---------------------------------------------------------------
    def tensors(self, framework: Framework = "pt") -> Iterator[tuple[str, Any]]:
        """Every tensor the backend reads; ``np`` widens bfloat16 (which NumPy lacks) to float32, losslessly."""
        import torch

        for name, tensor in self._state.items():
            if name in UNUSED:
                continue
            if tensor.dim() == 3 and tensor.shape[:2] == (1, 1):
                tensor = tensor.reshape(-1)  # (1, 1, C) -> (C,)
            if framework == "np":
                try:
                    array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
                except (RuntimeError, TypeError) as exc:
                    raise ModelLoadError(self.path, f"tensor {name!r} cannot be read as an array ({exc})") from None
                yield name, array
            else:
                yield name, tensor

    @property
    def weight_bytes(self) -> int:
        return sum(
            tensor.numel() * tensor.element_size() for name, tensor in self._state.items() if name not in UNUSED
        )

    # -- helpers ---------------------------------------------------------------
    def _tensor(self, name: str) -> "torch.Tensor":
        tensor = self._state.get(name)
        if tensor is None:
            raise ModelLoadError(self.path, f"RWKV-7 state dict has no {name!r}")
        return tensor

    def _lora_rank(self, name: str, layers: int) -> int:
        """Low-rank width of ``att.<name>``: the second dimension of its first matrix that is read."""
        for i in range(layers):
            if i == 0 and name.startswith("v"):
                continue  # block 0's value LoRA is unused (and may be absent)
            tensor = self._state.get(f"blocks.{i}.att.{name}")
            if tensor is not None:
                return int(tensor.shape[1])
        return 0


def _read_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    """The ``.pth``'s tensors, memory-mapped; every problem is one ModelLoadError line naming ``path``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # zip, pickle and storage errors come as many types
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(path, f"cannot read .pth state dict ({first_line})") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelLoadError(path, "not a state dict of tensors")
    if "emb.weight" not in state:
        raise ModelLoadError(path, "not an RWKV state dict (no 'emb.weight')")
    if RWKV7_MARKER not in state:
        raise ModelLoadError(path, f"not an RWKV-7 x070 checkpoint (no {RWKV7_MARKER!r})")
    if any(".s_emb" in name for name in state):
        raise ModelLoadError(path, "RWKV-7 DeepEmbed checkpoints are not supported")
    for name, shape in (("emb.weight", 2), (RWKV7_MARKER, 2)):
        if state[name].dim() != shape:
            raise ModelLoadError(path, f"{name!r} has shape {tuple(state[name].shape)}, expected {shape} dimensions")
    return state


def is_pth_zip(path: Path) -> bool:
    """Cheap claim test: a ``.pth`` file in torch's zip serialisation (what ``mmap=True`` reads)."""
    if path.suffix != ".pth" or not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"
