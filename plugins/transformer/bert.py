"""BERT-family encoder (``BertModel``) for sentence embeddings, and its token classifier.

Reads a Hugging Face ``BertModel`` checkpoint (with or without the ``bert.``
prefix; pooler and MLM heads are ignored) and answers the encoder half of the
backend contract: ``embed(batch)`` runs a padded batch through the encoder
with a key-padding mask, pools over the real tokens and L2-normalises, as
sentence-transformers does.

A ``BertForTokenClassification`` checkpoint adds its head (``classifier.weight``
``(L, C)`` and ``classifier.bias``) over the same encoder: ``classify(batch)``
returns each token's logits over the labels ``config.json`` ``id2label`` names
(in id order). ``embed`` still pools the encoder's last hidden states.

Pooling follows the sentence-transformers files when present
(``modules.json`` -> the ``Pooling`` module's ``config.json``, default
``1_Pooling/config.json``): mean (the default), CLS, max or
mean-sqrt-len. Normalisation follows ``modules.json`` (a ``Normalize``
module); without ``modules.json`` embeddings are normalised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agentd.backend import Backend, ModelInfo, check_token_ids
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument, ModelLoadError, OutOfRange
from agentd.plugins.weights import WeightReader, resident_bytes

Pooling = Literal["mean", "cls", "max", "mean_sqrt_len"]

#: Longest padded batch run at once; a bigger request is split (sorted by length first).
MAX_BATCH = 32

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU, BERT's original
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass(frozen=True)
class BertConfig:
    """The ``config.json`` fields the encoder needs (defaults are HF BertConfig's)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    position_embedding_type: str = "absolute"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> BertConfig:
        path = checkpoint.where("config.json")
        raw = checkpoint.config
        values: dict[str, Any] = {}
        for field in fields(cls):
            if field.name not in raw:
                continue
            value, expected = raw[field.name], type(field.default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not expected:
                raise ModelLoadError(path, f"'{field.name}' must be of type {expected.__name__}")
            if expected in (int, float) and value <= 0:
                raise ModelLoadError(path, f"'{field.name}' must be positive")
            values[field.name] = value
        try:
            config = cls(**values)
        except ValueError as exc:
            raise ModelLoadError(path, str(exc)) from None
        if config.hidden_act not in _ACTIVATIONS:
            raise ModelLoadError(
                path, f"unsupported 'hidden_act' {config.hidden_act!r} (known: {sorted(_ACTIVATIONS)})"
            )
        if config.position_embedding_type != "absolute":
            raise ModelLoadError(
                path, f"unsupported 'position_embedding_type' {config.position_embedding_type!r}"
            )
        return config


class BertLayer(nn.Module):
    """Post-LayerNorm transformer block: self-attention, then the ``hidden_act`` MLP."""

    def __init__(self, config: BertConfig):
        super().__init__()
        hidden = config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, config.head_dim
        # Q, K and V are fused into one matmul (loaded from the three HF projections).
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(hidden, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, C); ``key_mask`` (B, 1, 1, T) bool, True at real tokens."""
        batch, length, hidden = x.shape
        q, k, v = (
            self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )  # each (B, H, T, D)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # (B, H, T, D)
        attended = attended.transpose(1, 2).reshape(batch, length, hidden)  # (B, T, C)
        x = self.attention_norm(x + self.attention_out(attended))
        return self.output_norm(x + self.output(self.act(self.intermediate(x))))


class BertEncoder(nn.Module):
    """Embeddings (word + absolute position + token type) and the layer stack."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, hidden)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
        self.embedding_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states (B, T, C) of ``input_ids`` (B, T); ``mask`` (B, T) bool."""
        return self.run_layers(self.embed(input_ids), mask, self.layers)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The layer stack's input (B, T, C): word + position + type embeddings, normalised."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # Single-segment input: every token has type 0.
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        return self.embedding_norm(x)

    @staticmethod
    def run_layers(x: torch.Tensor, mask: torch.Tensor, layers: Sequence[nn.Module]) -> torch.Tensor:
        """``x`` (B, T, C) through ``layers`` (a slice of the stack, for training its top), ``mask`` (B, T) bool."""
        key_mask = mask[:, None, None, :]  # (B, 1, 1, T)
        for layer in layers:
            x = layer(x, key_mask)
        return x


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """Sentence vectors (B, C) from hidden states (B, T, C) over real tokens (``mask`` (B, T))."""
    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts if mode == "mean" else counts.sqrt())


class BertBackend(Backend):
    """A loaded ``BertModel`` (``embed``) or ``BertForTokenClassification`` (``embed`` and ``classify``)."""

    def __init__(
        self,
        encoder: BertEncoder,
        *,
        pooling: Pooling,
        normalize: bool,
        architecture: str,
        parameters: int,
        classifier: nn.Linear | None = None,
        labels: tuple[str, ...] = (),
    ):
        self.encoder = encoder.eval()
        self.pooling: Pooling = pooling
        self.normalize = normalize
        #: The token-classification head ``(C -> L)``, or None for a plain encoder.
        self.classifier = classifier.eval() if classifier is not None else None
        config = encoder.config
        held = [*encoder.parameters(), *encoder.buffers(), *(classifier.parameters() if classifier is not None else ())]
        self.info = ModelInfo(
            architecture=architecture,
            kind="encoder",
            parameters=parameters,
            context_length=config.max_position_embeddings,
            vocab_size=config.vocab_size,
            dtype="float32",
            embedding_dim=config.hidden_size,
            weight_bytes=resident_bytes(held),
            labels=labels,
        )

    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled (and, per the checkpoint, L2-normalised) float32 embeddings ``(len(batch), dim)``."""
        sequences = [self._check(index, ids) for index, ids in enumerate(batch)]
        out = np.empty((len(sequences), self.info.embedding_dim), dtype=np.float32)
        # Sorting by length keeps each padded chunk tight; results go back in request order.
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), MAX_BATCH):
            chunk = order[start : start + MAX_BATCH]
            out[chunk] = self._embed_padded([sequences[i] for i in chunk])
        return out

    def classify(self, batch: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per-token float32 logits ``(T_i, L)`` of each input, in request order."""
        if self.classifier is None:
            return super().classify(batch)
        sequences = [self._check(index, ids) for index, ids in enumerate(batch)]
        out: list[np.ndarray] = [np.empty(0)] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), MAX_BATCH):
            chunk = order[start : start + MAX_BATCH]
            for index, logits in zip(chunk, self._classify_padded([sequences[i] for i in chunk])):
                out[index] = logits
        return out

    @torch.inference_mode()
    def _embed_padded(self, sequences: list[np.ndarray]) -> np.ndarray:
        hidden, mask = self._encode_padded(sequences)
        vectors = pool(hidden, mask, self.pooling)  # (B, C)
        if self.normalize:
            vectors = F.normalize(vectors, p=2.0, dim=-1)
        return vectors.float().numpy()

    @torch.inference_mode()
    def _classify_padded(self, sequences: list[np.ndarray]) -> list[np.ndarray]:
        hidden, _ = self._encode_padded(sequences)
        assert self.classifier is not None
        logits = self.classifier(hidden).float().numpy()  # (B, T, L)
        return [np.ascontiguousarray(logits[row, : len(ids)]) for row, ids in enumerate(sequences)]

    def _encode_padded(self, sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states ``(B, T, C)`` of a right-padded batch and its mask ``(B, T)``."""
        longest = max(len(ids) for ids in sequences)
        input_ids = torch.zeros((len(sequences), longest), dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(sequences), longest), dtype=torch.bool)  # (B, T)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.from_numpy(ids)
            mask[row, : len(ids)] = True
        return self.encoder(input_ids, mask), mask

    def _check(self, index: int, ids: Sequence[int]) -> np.ndarray:
        array = check_token_ids(ids, self.info.vocab_size, field="texts", prefix=f"input {index}: ")
        if array.size == 0:
            raise InvalidArgument("texts", f"input {index} has no tokens")
        if array.size > self.info.context_length:
            raise OutOfRange(
                f"input {index} has {array.size} tokens; the model's context is {self.info.context_length}"
            )
        return array


# -- loading ------------------------------------------------------------------------


def _read_pooling(checkpoint: Checkpoint) -> tuple[Pooling, bool]:
    """(pooling mode, normalise?) from the sentence-transformers files, if any."""
    modules_text = checkpoint.read_text("modules.json")
    modules_path = checkpoint.where("modules.json")
    pooling_dir, normalize = "1_Pooling", True
    if modules_text is not None:
        try:
            modules = json.loads(modules_text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(modules_path, f"invalid JSON ({exc})") from None
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ModelLoadError(modules_path, "expected a list of module objects")
        types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
        normalize = "Normalize" in types
        if "Pooling" in types:
            pooling_dir = str(types["Pooling"].get("path") or pooling_dir)

    config = checkpoint.read_json(f"{pooling_dir}/config.json", required=False)
    if config is None:
        return "mean", normalize
    modes: list[Pooling] = [
        mode
        for mode, key in (
            ("cls", "pooling_mode_cls_token"),
            ("mean", "pooling_mode_mean_tokens"),
            ("max", "pooling_mode_max_tokens"),
            ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
        )
        if config.get(key)
    ]
    if len(modes) != 1:
        # sentence-transformers would concatenate several modes; no checkpoint we serve does that.
        raise ModelLoadError(
            checkpoint.where(f"{pooling_dir}/config.json"), f"expected exactly one pooling mode, got {modes}"
        )
    return modes[0], normalize


def _hf_name(name: str) -> str:
    """Normalise an HF weight name: drop ``bert.``, rename old LayerNorm gamma/beta."""
    name = name.removeprefix("bert.")
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


def _state_dict(reader: WeightReader, encoder: BertEncoder) -> dict[str, torch.Tensor]:
    """:class:`BertEncoder`'s weights from HF BertModel names, fusing Q/K/V; shapes from ``encoder``."""
    expected = {name: tuple(tensor.shape) for name, tensor in encoder.state_dict().items()}

    def take(source: str, destination: str) -> torch.Tensor:
        return reader.take(source, expected[destination])

    state = {
        "word_embeddings.weight": take("embeddings.word_embeddings.weight", "word_embeddings.weight"),
        "position_embeddings.weight": take("embeddings.position_embeddings.weight", "position_embeddings.weight"),
        "token_type_embeddings.weight": take("embeddings.token_type_embeddings.weight", "token_type_embeddings.weight"),
        "embedding_norm.weight": take("embeddings.LayerNorm.weight", "embedding_norm.weight"),
        "embedding_norm.bias": take("embeddings.LayerNorm.bias", "embedding_norm.bias"),
    }
    for i in range(encoder.config.num_hidden_layers):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            fused = expected[dst + "qkv." + kind]
            part = (fused[0] // 3, *fused[1:])
            state[dst + "qkv." + kind] = torch.cat(
                [reader.take(f"{src}attention.self.{proj}.{kind}", part) for proj in ("query", "key", "value")]
            )
            state[dst + "attention_out." + kind] = take(f"{src}attention.output.dense.{kind}", dst + "attention_out." + kind)
            state[dst + "attention_norm." + kind] = take(f"{src}attention.output.LayerNorm.{kind}", dst + "attention_norm." + kind)
            state[dst + "intermediate." + kind] = take(f"{src}intermediate.dense.{kind}", dst + "intermediate." + kind)
            state[dst + "output." + kind] = take(f"{src}output.dense.{kind}", dst + "output." + kind)
            state[dst + "output_norm." + kind] = take(f"{src}output.LayerNorm.{kind}", dst + "output_norm." + kind)
    return state


#: The architecture whose checkpoints carry a token-classification head.
TOKEN_CLASSIFICATION = "BertForTokenClassification"


def read_labels(checkpoint: Checkpoint) -> tuple[str, ...]:
    """``config.json`` ``id2label`` as labels in id order; ids must be 0..L-1, labels strings."""
    path = checkpoint.where("config.json")
    raw = checkpoint.config.get("id2label")
    if not isinstance(raw, dict) or not raw:
        raise ModelLoadError(path, f"{TOKEN_CLASSIFICATION} needs a non-empty 'id2label' object")
    labels: dict[int, str] = {}
    for key, label in raw.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ModelLoadError(path, f"'id2label' key {key!r} is not an integer id") from None
        if not isinstance(label, str) or not label:
            raise ModelLoadError(path, f"'id2label' {key!r} must be a non-empty string (got {label!r})")
        labels[index] = label
    if sorted(labels) != list(range(len(labels))):
        raise ModelLoadError(path, f"'id2label' ids must be 0..{len(labels) - 1} without gaps (got {sorted(labels)})")
    return tuple(labels[i] for i in range(len(labels)))


def load(checkpoint: Checkpoint) -> Backend:
    """Build a :class:`BertBackend` from an HF ``BertModel`` or ``BertForTokenClassification``
    checkpoint (pooler and MLM heads are ignored)."""
    config = BertConfig.from_checkpoint(checkpoint)
    labels = read_labels(checkpoint) if checkpoint.architecture == TOKEN_CLASSIFICATION else ()
    encoder = BertEncoder(config)
    reader = WeightReader(checkpoint, rename=_hf_name)
    encoder.load_state_dict(_state_dict(reader, encoder), strict=True)
    encoder.requires_grad_(False)
    classifier = None
    if labels:
        classifier = nn.Linear(config.hidden_size, len(labels))
        classifier.load_state_dict({
            "weight": reader.take("classifier.weight", (len(labels), config.hidden_size)),
            "bias": reader.take("classifier.bias", (len(labels),)),
        })
        classifier.requires_grad_(False)
    pooling, normalize = _read_pooling(checkpoint)
    return BertBackend(
        encoder,
        pooling=pooling,
        normalize=normalize,
        architecture=checkpoint.architecture,
        parameters=reader.parameters,
        classifier=classifier,
        labels=labels,
    )
