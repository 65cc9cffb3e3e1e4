"""RWKV-4 in the Hugging Face ``RwkvForCausalLM`` layout (e.g. RWKV/rwkv-4-169m-pile).

Each block is a time mix (token shift, then the WKV linear attention of
:mod:`wkv4`) and a channel mix (token shift, squared-ReLU MLP gated by a
receptance), both pre-LayerNorm and residual. Prefill runs the chunked WKV,
decode the recurrent step; both carry the same fixed-size fp32 state.

State of one sequence: ``(layers, 5, hidden)`` fp32 — per layer the time mix's
previous input, the WKV ``(num, den, max)``, and the channel mix's previous
input. It does not grow with the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from agentd.checkpoint import Checkpoint
from agentd.errors import ModelLoadError
from agentd.plugins.linear.recurrent import RecurrentBackend
from agentd.plugins.linear.weights import float_dtype, projection
from agentd.plugins.weights import WeightReader
from agentd.plugins.linear.wkv4 import EMPTY_MAX, wkv4_chunked, wkv4_step
from agentd.plugins.projection import linear

ARCHITECTURE = "RwkvForCausalLM"

# Rows of a layer's state.
_ATT_X, _NUM, _DEN, _MAX, _FFN_X = range(5)


@dataclass(frozen=True)
class Rwkv4Config:
    """The ``config.json`` fields RWKV-4 needs (Hugging Face ``RwkvConfig`` names)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    attention_hidden_size: int
    intermediate_size: int
    context_length: int = 1024
    layer_norm_epsilon: float = 1e-5
    #: Hugging Face halves the hidden state every this many blocks at inference
    #: (and scales those blocks' output weights to match); 0 disables it.
    rescale_every: int = 6
    tie_word_embeddings: bool = False

    @classmethod
    def from_dict(cls, config: dict[str, Any], path: object) -> "Rwkv4Config":
        """Read and check ``config.json``; a bad field raises ModelLoadError naming it."""

        def field(name: str, kind: type, default: Any = None) -> Any:
            value = config.get(name)
            value = default if value is None else value
            if value is None or isinstance(value, bool) and kind is not bool:
                raise ModelLoadError(path, f"missing or invalid field {name!r}")
            try:
                value = kind(value)
            except (TypeError, ValueError):
                raise ModelLoadError(path, f"field {name!r} must be {kind.__name__}") from None
            if kind is int and name != "rescale_every" and value <= 0:
                raise ModelLoadError(path, f"field {name!r} must be positive")
            return value

        hidden = field("hidden_size", int)
        return cls(
            vocab_size=field("vocab_size", int),
            hidden_size=hidden,
            num_hidden_layers=field("num_hidden_layers", int),
            attention_hidden_size=field("attention_hidden_size", int, hidden),
            intermediate_size=field("intermediate_size", int, 4 * hidden),
            context_length=field("context_length", int, 1024),
            layer_norm_epsilon=field("layer_norm_epsilon", float, 1e-5),
            rescale_every=field("rescale_every", int, 6),
            tie_word_embeddings=field("tie_word_embeddings", bool, False),
        )


@dataclass
class _Layer:
    """One block's weights, arranged for the fewest kernel calls per step.

    Projections are dense ``(out, in)`` as loaded and oneDNN-packed after
    :meth:`~agentd.plugins.linear.recurrent.RecurrentBackend.pack_weights` (see
    :mod:`agentd.plugins.projection`).
    """

    #: The projection fields ``pack_weights`` packs.
    PROJECTIONS: ClassVar[tuple[str, ...]] = (
        "att_key",
        "att_value",
        "att_receptance",
        "att_out",
        "ffn_key",
        "ffn_receptance",
        "ffn_value",
    )

    ln1: tuple[torch.Tensor, torch.Tensor]
    ln2: tuple[torch.Tensor, torch.Tensor]
    att_mix: torch.Tensor  # (3, 1, C): key, value, receptance share of the current token
    att_key: torch.Tensor  # (A, C)
    att_value: torch.Tensor  # (A, C)
    att_receptance: torch.Tensor  # (A, C)
    decay: torch.Tensor  # (A,) fp32, -exp(time_decay): log decay per step
    bonus: torch.Tensor  # (A,) fp32, time_first
    att_out: torch.Tensor  # (C, A)
    ffn_mix: torch.Tensor  # (2, 1, C): key, receptance
    ffn_key: torch.Tensor  # (I, C)
    ffn_receptance: torch.Tensor  # (C, C)
    ffn_value: torch.Tensor  # (C, I)


class Rwkv4Backend(RecurrentBackend):
    """RWKV-4 decoder: chunked-parallel prefill, batched recurrent decode."""

    #: Tokens per chunk of the parallel WKV (work ~ T * chunk * hidden; temporaries capped at 4 MB).
    chunk = 16

    def __init__(self, config: Rwkv4Config, reader: WeightReader, path: object = ""):
        self.config = config
        if config.attention_hidden_size != config.hidden_size:
            # The state keeps every per-layer row at hidden size.
            raise ModelLoadError(path, "attention_hidden_size must equal hidden_size")
        self.dtype = reader.dtype = float_dtype(reader.peek("rwkv.embeddings.weight"))
        get = reader.take
        eps = config.layer_norm_epsilon
        C, I = config.hidden_size, config.intermediate_size
        embeddings = get("rwkv.embeddings.weight", (config.vocab_size, C))

        def vec(name: str) -> torch.Tensor:
            return get(name, (C,))

        def mix(name: str) -> torch.Tensor:
            return get(name, (1, 1, C)).reshape(1, C)

        # Block 0's pre-LayerNorm acts on the embedding row alone: fold it into the table.
        pre_ln = (vec("rwkv.blocks.0.pre_ln.weight"), vec("rwkv.blocks.0.pre_ln.bias"))
        folded = F.layer_norm(embeddings.float(), (C,), pre_ln[0].float(), pre_ln[1].float(), eps)
        self.embeddings = folded.to(self.dtype)
        self.layers: list[_Layer] = []
        for i in range(config.num_hidden_layers):
            p = f"rwkv.blocks.{i}."
            # Match Hugging Face's inference-mode rescaling bit for bit: it divides these
            # weights by 2^(i // rescale_every) and halves the hidden state every
            # rescale_every blocks (a guard against fp16 overflow in deep models).
            scale = float(2 ** (i // config.rescale_every)) if config.rescale_every > 0 else 1.0
            self.layers.append(
                _Layer(
                    ln1=(vec(p + "ln1.weight"), vec(p + "ln1.bias")),
                    ln2=(vec(p + "ln2.weight"), vec(p + "ln2.bias")),
                    att_mix=torch.stack([mix(p + f"attention.time_mix_{n}") for n in ("key", "value", "receptance")]),
                    att_key=projection(reader, p + "attention.key.weight", (C, C)),
                    att_value=projection(reader, p + "attention.value.weight", (C, C)),
                    att_receptance=projection(reader, p + "attention.receptance.weight", (C, C)),
                    decay=-torch.exp(reader.raw(p + "attention.time_decay", (C,)).float()),
                    bonus=reader.raw(p + "attention.time_first", (C,)).float().contiguous(),
                    att_out=projection(reader, p + "attention.output.weight", (C, C), scale),
                    ffn_mix=torch.stack([mix(p + f"feed_forward.time_mix_{n}") for n in ("key", "receptance")]),
                    ffn_key=projection(reader, p + "feed_forward.key.weight", (I, C)),
                    ffn_receptance=projection(reader, p + "feed_forward.receptance.weight", (C, C)),
                    ffn_value=projection(reader, p + "feed_forward.value.weight", (C, I), scale),
                )
            )
        self.ln_out = (vec("rwkv.ln_out.weight"), vec("rwkv.ln_out.bias"))
        if reader.has("head.weight") or not config.tie_word_embeddings:
            self.head = projection(reader, "head.weight", (config.vocab_size, C))
        else:
            self.head = embeddings  # the gather uses the folded table, not this
        reader.check_all_used(ARCHITECTURE)

        self.state_shape = (config.num_hidden_layers, 5, C)
        self.info = self._decoder_info(
            ARCHITECTURE,
            parameters=reader.parameters,
            context_length=config.context_length,
            vocab_size=config.vocab_size,
            dtype=str(self.dtype).removeprefix("torch."),
        )

    # -- the maths ---------------------------------------------------------------
    def _init_state(self, parts: tuple[torch.Tensor, ...]) -> None:
        (state,) = parts
        state[:, _MAX] = EMPTY_MAX

    def _forward_sequence(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...], all_logits: bool) -> torch.Tensor:
        (state,) = parts  # (layers, rows, C)
        x = self.embeddings[ids]  # (T, C)
        for i, layer in enumerate(self.layers):
            s = state[i]  # (5, C)
            xn = F.layer_norm(x, x.shape[-1:], *layer.ln1, self.config.layer_norm_epsilon)
            shifted = torch.cat([s[_ATT_X : _ATT_X + 1].to(xn.dtype), xn[:-1]])  # (T, C)
            s[_ATT_X] = xn[-1]
            k, v, r = self._att_projections(layer, xn, shifted)
            wkv = wkv4_chunked(k.float(), v.float(), layer.decay, layer.bonus, s[_NUM], s[_DEN], s[_MAX], self.chunk)
            x = x + linear(torch.sigmoid(r) * wkv.to(r.dtype), layer.att_out, None)

            xn = F.layer_norm(x, x.shape[-1:], *layer.ln2, self.config.layer_norm_epsilon)
            shifted = torch.cat([s[_FFN_X : _FFN_X + 1].to(xn.dtype), xn[:-1]])
            s[_FFN_X] = xn[-1]
            x = x + self._channel_mix(layer, xn, shifted)
            x = self._rescale(i, x)
        if not all_logits:
            x = x[-1:]
        x = F.layer_norm(x, x.shape[-1:], *self.ln_out, 1e-5)
        return linear(x, self.head, None)

    def _forward_step(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (states,) = parts  # (layers, B, rows, C)
        x = self.embeddings[ids]  # (B, C)
        for i, layer in enumerate(self.layers):
            s = states[i]  # (B, 5, C)
            xn = F.layer_norm(x, x.shape[-1:], *layer.ln1, self.config.layer_norm_epsilon)
            k, v, r = self._att_projections(layer, xn, s[:, _ATT_X].to(xn.dtype))
            s[:, _ATT_X] = xn
            wkv = wkv4_step(k.float(), v.float(), layer.decay, layer.bonus, s[:, _NUM], s[:, _DEN], s[:, _MAX])
            x = x + linear(torch.sigmoid(r) * wkv.to(r.dtype), layer.att_out, None)

            xn = F.layer_norm(x, x.shape[-1:], *layer.ln2, self.config.layer_norm_epsilon)
            shifted = s[:, _FFN_X].to(xn.dtype)
            x = x + self._channel_mix(layer, xn, shifted)
            s[:, _FFN_X] = xn
            x = self._rescale(i, x)
        x = F.layer_norm(x, x.shape[-1:], *self.ln_out, 1e-5)
        return linear(x, self.head, None)

    @staticmethod
    def _att_projections(layer: _Layer, xn: torch.Tensor, shifted: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Key, value, receptance logits ``(N, A)`` of rows ``xn`` with their predecessors."""
        mixed = torch.lerp(shifted, xn, layer.att_mix)  # (3, N, C)
        # Three F.linear calls: one bmm over stacked weights is ~100x slower at N=1 on CPU.
        return (
            linear(mixed[0], layer.att_key, None),
            linear(mixed[1], layer.att_value, None),
            linear(mixed[2], layer.att_receptance, None),
        )

    @staticmethod
    def _channel_mix(layer: _Layer, xn: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
        mixed = torch.lerp(shifted, xn, layer.ffn_mix)  # (2, N, C)
        hidden = torch.relu(linear(mixed[0], layer.ffn_key, None)).square_()
        return torch.sigmoid(linear(mixed[1], layer.ffn_receptance, None)) * linear(hidden, layer.ffn_value, None)

    def _rescale(self, i: int, x: torch.Tensor) -> torch.Tensor:
        every = self.config.rescale_every
        return x / 2 if every > 0 and (i + 1) % every == 0 else x


def load(checkpoint: Checkpoint) -> Rwkv4Backend:
    """Build the backend from a Hugging Face ``RwkvForCausalLM`` checkpoint directory."""
    config = Rwkv4Config.from_dict(checkpoint.config, checkpoint.where("config.json"))
    return Rwkv4Backend(config, WeightReader(checkpoint), checkpoint.where("config.json"))
