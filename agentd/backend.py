"""The backend contract: one interface for every model architecture.

The engine never asks which architecture it drives. A decoder backend answers:

* ``new_state()`` — an empty per-sequence state;
* ``prefill(token_ids, state)`` — consume a chunk of prompt tokens in the
  parallel form (attention over the chunk, chunked scan, ...), advancing
  ``state``;
* ``decode(token_ids, states)`` — one recurrent step for a batch of sequences,
  one token each;
* ``state_bytes(state)``, ``save_state(state)``, ``load_state(data)`` — for
  memory budgets and sessions.

An encoder backend answers ``embed(batch)`` instead, and a token classifier
(an encoder with a per-token head, e.g. ``BertForTokenClassification``) also
``classify(batch)``.

The state is opaque to the engine: a transformer keeps a KV cache that grows
with the context, an SSM or RWKV model a fixed-size recurrent state. That
difference is what ``ModelInfo.state_bytes_per_token`` and
``ModelInfo.state_bytes_per_sequence`` make visible.

Arrays cross this boundary as NumPy (int64 token ids in, float32 logits out) so
the engine, server and ONNX runtime backend never need torch. Torch backends
convert with ``torch.from_numpy`` / ``.numpy()``, which share memory.
"""

from __future__ import annotations

import abc
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np

from agentd.errors import InvalidArgument

if TYPE_CHECKING:
    from agentd.checkpoint import Checkpoint

#: A backend's per-sequence state. Only the backend that made it reads it.
State = Any


#: Weight encodings a backend may compute with (``BackendSpec.quantizations``), widest first:
#: float32, float16 (ONNX bundles), 8-bit and 4-bit weight-only quantisation.
QUANTS = ("fp32", "fp16", "int8", "int4")
#: What agentd's torch backends compute with (:mod:`agentd.plugins.quantized`).
TORCH_QUANTS = ("fp32", "int8", "int4")


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is, as reported by ``GetModelInfo``."""

    #: ``config.json`` architecture, e.g. ``LlamaForCausalLM``.
    architecture: str
    #: ``decoder`` generates tokens; ``encoder`` produces embeddings.
    kind: Literal["decoder", "encoder"]
    #: Number of parameters (tied weights counted once).
    parameters: int
    #: Longest sequence (prompt + generated) the model accepts.
    context_length: int
    vocab_size: int
    #: Weight dtype as loaded, e.g. ``float32``.
    dtype: str
    #: State bytes added by each token (a transformer's KV cache); 0 if fixed.
    state_bytes_per_token: int = 0
    #: State bytes every sequence carries whatever its length (SSM, RWKV).
    state_bytes_per_sequence: int = 0
    #: Output dimension of ``embed`` (encoders only).
    embedding_dim: int = 0
    #: Bytes of weights the backend holds resident as loaded: every copy it keeps
    #: (a tied head packed apart from its embedding table counts twice; oneDNN
    #: packed weights at their own size), int4/int8 blocks at their size, not as
    #: parameters x 4. 0 means "not reported": the server then estimates it.
    weight_bytes: int = 0
    #: How the weights are held, when it differs from the source, e.g.
    #: "GGUF Q4_1 (mixed with Q8_0), computed in int4".
    weight_note: str = ""
    #: Token classifiers only: the label of each ``classify`` logit column, in id order.
    labels: tuple[str, ...] = ()


def check_token_ids(token_ids: Any, vocab_size: int, *, field: str = "token_ids", prefix: str = "") -> np.ndarray:
    """``token_ids`` as a contiguous 1-D int64 array, every id in ``[0, vocab_size)``.

    The one place token ids are validated: backends (``prefill``, ``decode``,
    ``embed``) and the Python API call it, so every entry point refuses a bad id
    with the same :class:`~agentd.errors.InvalidArgument` (``field``, then
    ``prefix``, e.g. ``"input 2: "``). An empty input is returned empty; whether
    that is allowed is the caller's call.
    """
    array = np.asarray(token_ids)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise InvalidArgument(field, f"{prefix}token ids must be integers, got {array.dtype}")
    ids = np.ascontiguousarray(array.reshape(-1), dtype=np.int64)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise InvalidArgument(field, f"{prefix}token ids must be in [0, {vocab_size}) (got {bad})")
    return ids


class Backend(abc.ABC):
    """A loaded model. Subclasses implement the decoder or the encoder half."""

    info: ModelInfo

    # -- decoder -----------------------------------------------------------
    def new_state(self) -> State:
        """An empty state for one sequence (no tokens consumed yet)."""
        raise NotImplementedError(f"{self.info.architecture} does not generate")

    def prefill(self, token_ids: np.ndarray, state: State, *, all_logits: bool = False) -> np.ndarray:
        """Consume ``token_ids`` (int64, shape ``(T,)``) after what ``state`` holds.

        Mutates ``state`` in place. Returns float32 logits of shape ``(T, V)``
        when ``all_logits`` else ``(1, V)`` for the last position only (so a
        long prompt does not pay for T vocabulary projections).
        """
        raise NotImplementedError(f"{self.info.architecture} does not generate")

    def decode(self, token_ids: np.ndarray, states: Sequence[State]) -> np.ndarray:
        """One step for a batch: ``token_ids[b]`` is appended to ``states[b]``.

        ``token_ids`` is int64 of shape ``(B,)``; states may hold different
        lengths. Mutates each state. Returns float32 logits ``(B, V)``.
        If it raises, every state is left as it was (the engine then retries
        the batch one sequence at a time to isolate the failing request).
        """
        raise NotImplementedError(f"{self.info.architecture} does not generate")

    def state_bytes(self, state: State) -> int:
        """Bytes of memory ``state`` holds now (for budgets and metrics)."""
        raise NotImplementedError(f"{self.info.architecture} does not generate")

    def save_state(self, state: State) -> bytes:
        """Serialise ``state`` so ``load_state`` restores it bit for bit."""
        raise NotImplementedError(f"{self.info.architecture} does not generate")

    def load_state(self, data: bytes) -> State:
        """Rebuild a state from ``save_state`` output; decoding continues exactly."""
        raise NotImplementedError(f"{self.info.architecture} does not generate")

    # -- encoder -----------------------------------------------------------
    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled float32 embeddings ``(len(batch), dim)``.

        L2-normalised unless the checkpoint's ``modules.json`` lists no
        ``Normalize`` module (sentence-transformers semantics).
        """
        raise NotImplementedError(f"{self.info.architecture} does not embed")

    def classify(self, batch: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per-token float32 logits, one ``(len(batch[i]), len(info.labels))`` array per input.

        Column ``j`` scores ``info.labels[j]``; special tokens are scored like
        any other (dropping them is the caller's business).
        """
        raise NotImplementedError(f"{self.info.architecture} does not classify tokens")


@dataclass(frozen=True)
class BackendSpec:
    """How a plugin announces a backend through ``register_backends``."""

    #: Short unique name, e.g. ``transformer``.
    name: str
    #: Hugging Face architecture names served, e.g. ``("LlamaForCausalLM",)``.
    architectures: tuple[str, ...]
    #: Builds the backend from a verified checkpoint (imports torch lazily), computing with the
    #: weight encoding given, always one of :attr:`quantizations`.
    load: Callable[["Checkpoint", str], Backend]
    #: One line shown by ``agentd models backends``.
    description: str = ""
    #: Importable modules ``load`` needs (e.g. ``("torch",)``); a backend whose
    #: modules are missing is listed as unavailable and refuses to load with
    #: one clear line instead of an ImportError.
    requires: tuple[str, ...] = ()
    #: Weight encodings (of :data:`QUANTS`) ``load`` can compute with, converting at load;
    #: empty: only the one each checkpoint is stored in (an exported ONNX bundle's).
    quantizations: tuple[str, ...] = ("fp32",)

    def choose_quant(self, checkpoint: "Checkpoint", requested: str | None = None) -> str:
        """The encoding to load ``checkpoint`` with: ``requested``, or (None) the checkpoint's own
        (:attr:`Checkpoint.stored_quant`) when this backend runs it, else the widest it runs.

        Raises InvalidArgument for an encoding this backend cannot compute with.
        """
        if not self.quantizations:
            stored = checkpoint.stored_quant
            if requested not in (None, stored):
                from agentd.errors import InvalidArgument

                raise InvalidArgument("quant", f"{requested!r}: this model is stored as {stored}, which the {self.name} backend computes with as it is")
            return stored
        if requested is None:
            stored = checkpoint.stored_quant
            return stored if stored in self.quantizations else self.quantizations[0]
        if requested not in self.quantizations:
            from agentd.errors import InvalidArgument

            raise InvalidArgument(
                "quant", f"{requested!r}: the {self.name} backend computes with {', '.join(self.quantizations)}"
            )
        return requested

    def missing(self) -> list[str]:
        """The required modules that are not installed (cheap: nothing is imported)."""
        return [module for module in self.requires if importlib.util.find_spec(module) is None]

    @property
    def unavailable_reason(self) -> str | None:
        """Why this backend cannot load models here, or None when it can."""
        missing = self.missing()
        if not missing:
            return None
        return f"needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed"
