"""``load_model``: the Python API over any backend.

    model = agentd.load_model("path/to/model")   # HF dir, bundle, GGUF file, RWKV .pth, ...
    model.logits([1, 2, 3])               # (3, vocab) float32, one causal forward
    model.generate(ids, max_new_tokens=32)  # new token ids (greedy by default)
    model.embed(["hello"])                # (1, dim) for encoders
    model.classify(["send Maria 45"])     # per-token labels for token classifiers
    model.tokenizer.encode("hi")

Everything here is torch-free: a format plugin opens the path, the backend
registered for the checkpoint's architecture does the maths.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from agentd.backend import Backend, BackendSpec, ModelInfo, check_token_ids
from agentd.checkpoint import Checkpoint
from agentd.errors import FailedPrecondition, InvalidArgument, OutOfRange
from agentd.generation import GenerationEvent, SamplingParams, generate_stream
from agentd.formats import open_checkpoint
from agentd.registry import available_spec_for
from agentd.tokenizer import Tokenizer

if TYPE_CHECKING:
    from agentd.constraint import Constraint, Grammar


@dataclass(frozen=True)
class ClassifiedToken:
    """One token of a classified text."""

    #: ``text[start:end]`` is the token's text (Python ``str`` indices, code points).
    start: int
    end: int
    #: The most likely label (argmax of ``logits``) and its index into the model's labels.
    label: str
    label_id: int
    #: Softmax probability of ``label``.
    score: float
    #: Raw logits over every label, float32 ``(L,)``.
    logits: np.ndarray


@dataclass(frozen=True)
class TokenLabels:
    """A text's tokens with their labels; special tokens (``[CLS]``, ``[SEP]``) left out."""

    text: str
    tokens: list[ClassifiedToken]


class Model:
    """A backend with its tokenizer, chat template and generation defaults."""

    def __init__(self, checkpoint: Checkpoint, backend: Backend, tokenizer: Tokenizer | None):
        self.checkpoint = checkpoint
        self.backend = backend
        self.tokenizer = tokenizer
        self.path: Path = checkpoint.path

    @cached_property
    def info(self) -> ModelInfo:
        """The backend's description of the model, noting how its weights are held
        when the format says something about them (e.g. ``GGUF Q4_1, computed in int4``)."""
        info = self.backend.info
        if not info.weight_note and self.checkpoint.description:
            info = dataclasses.replace(info, weight_note=f"{self.checkpoint.description}, computed in {info.dtype}")
        return info

    # -- decoders --------------------------------------------------------------
    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits ``(len(token_ids), vocab)`` of one causal forward from an empty state."""
        ids = self._check_ids(token_ids)
        return self.backend.prefill(ids, self.backend.new_state(), all_logits=True)

    def default_params(self, **overrides) -> SamplingParams:
        """Sampling parameters: ``generation_config.json`` defaults, then ``overrides``."""
        return SamplingParams.from_generation_config(self.checkpoint.generation_config, **overrides)

    def stream(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        *,
        cancelled: Callable[[], bool] | None = None,
        constraint: "Constraint | Grammar | None" = None,
    ) -> Iterator[GenerationEvent]:
        """Generate from ``token_ids``, yielding one event per token, then a final one.

        ``constraint`` (:class:`agentd.constraint.Constraint`) keeps the output
        inside a JSON schema, regex or Lark grammar.
        """
        ids = self._check_ids(token_ids)
        return generate_stream(
            self.backend,
            self.tokenizer,
            ids,
            params,
            cancelled=cancelled,
            eos_token_ids=self._eos_without_tokenizer(),
            constraint=constraint,
        )

    @property
    def eos_token_ids(self) -> list[int] | None:
        """EOS ids to stop at when there is no tokenizer (None: the tokenizer's own)."""
        return self._eos_without_tokenizer()

    def _eos_without_tokenizer(self) -> list[int] | None:
        # A tokenizer knows its EOS ids; a tokenizer-less checkpoint still
        # stops where Hugging Face's generate would, at the config's eos_token_id.
        if self.tokenizer is not None:
            return None
        value = self.checkpoint.generation_config.get("eos_token_id", self.checkpoint.config.get("eos_token_id"))
        if value is None:
            return []
        return [value] if isinstance(value, int) else list(value)

    def generate(
        self,
        token_ids: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        constraint: "Constraint | Grammar | None" = None,
        **sampling,
    ) -> list[int]:
        """The new token ids only. Greedy unless ``temperature`` > 0; ``constraint``
        keeps the output inside a grammar."""
        params = self.default_params(max_tokens=max_new_tokens, temperature=temperature, **sampling)
        events = self.stream(token_ids, params, constraint=constraint)
        return [event.token_id for event in events if event.token_id is not None]

    # -- encoders --------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised sentence embeddings ``(len(texts), dim)``."""
        if self.tokenizer is None:
            raise InvalidArgument("texts", "model has no tokenizer")
        if isinstance(texts, str):
            texts = [texts]
        limit = self.info.context_length
        batch = [self.tokenizer.encode(text, add_special_tokens=True)[:limit] for text in texts]
        return self.backend.embed(batch)

    def classify(self, texts: Sequence[str], *, first_index: int = 0) -> list[TokenLabels]:
        """Label every token of each text (token classifiers only, see ``info.labels``).

        A text longer than the model's context is refused (OUT_OF_RANGE), not cut:
        its tail would silently get no labels. The error counts texts from
        ``first_index`` (where ``texts`` starts in the caller's request).
        """
        labels = self.info.labels
        if not labels:
            raise FailedPrecondition(f"{self.path}: not a token classifier (a {self.info.architecture} has no labels)")
        if self.tokenizer is None:
            raise InvalidArgument("texts", "model has no tokenizer")
        if isinstance(texts, str):
            texts = [texts]
        encodings = [self.tokenizer.encode_with_offsets(text, add_special_tokens=True) for text in texts]
        for index, encoding in enumerate(encodings):
            if len(encoding.ids) > self.info.context_length:
                raise OutOfRange(
                    f"text {first_index + index} has {len(encoding.ids)} tokens; the model's context is {self.info.context_length}"
                )
        results = []
        for text, encoding, logits in zip(texts, encodings, self.backend.classify([e.ids for e in encodings])):
            probabilities = _softmax(logits)
            best = logits.argmax(axis=-1)
            tokens = [
                ClassifiedToken(start, end, labels[int(best[i])], int(best[i]), float(probabilities[i, best[i]]), logits[i])
                for i, ((start, end), special) in enumerate(zip(encoding.offsets, encoding.special))
                if not special
            ]
            results.append(TokenLabels(text, tokens))
        return results

    def _check_ids(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = check_token_ids(token_ids, self.info.vocab_size, field="prompt")
        if ids.size == 0:
            raise InvalidArgument("prompt", "is empty")
        if ids.size > self.info.context_length:
            raise OutOfRange(
                f"prompt has {ids.size} tokens; the model's context is {self.info.context_length}"
            )
        return ids


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, float64 for the exponent (stable for any logit scale)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def backend_for(path: str | Path) -> tuple[Checkpoint, BackendSpec]:
    """Open ``path`` and find the backend that will serve it, reading no weights.

    Raises NotFound / ModelLoadError for a path no format opens, and
    BackendUnavailable (FAILED_PRECONDITION) when the backend's requirements
    (e.g. torch) are not installed here.
    """
    checkpoint = open_checkpoint(path)
    return checkpoint, available_spec_for(checkpoint.architecture, checkpoint.where("config.json"))


def load_model(path: str | Path, quant: str | None = None) -> Model:
    """Load a model in any format a plugin reads (see ``agentd models formats``).

    ``quant`` (``fp32``, ``int8``, ``int4``) is the weight encoding to compute
    with; None takes the checkpoint's own (a GGUF Q4 file runs int4, Q8_0 int8,
    float checkpoints fp32) when the backend runs it. An encoding the backend
    cannot compute with is INVALID_ARGUMENT.
    """
    checkpoint, spec = backend_for(path)
    chosen = spec.choose_quant(checkpoint, quant)
    tokenizer = checkpoint.tokenizer()  # a broken tokenizer fails before the weights are read
    backend = spec.load(checkpoint, chosen)
    _release_freed_memory()
    return Model(checkpoint, backend, tokenizer)


def _release_freed_memory() -> None:
    """Hand the heap that loading freed back to the OS (glibc keeps it otherwise).

    Loading holds transient copies (float32 tensors before packing or
    quantising); glibc keeps the freed arenas mapped, so without this an int4
    SmolLM2-135M stayed at 638 MB resident instead of 472 MB (measured).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return
    if trim is not None:
        trim(0)
