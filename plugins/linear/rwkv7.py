"""RWKV-7 "Goose" (x070) from a directory made by :func:`convert_rwkv7_pth`.

Tensor names are those of the ``rwkv`` PyPI package (``RWKV_x070``), whose
CPU fp32 path is the reference the tests compare against. Each block is a
time mix (token shift into six lerps; r/k/v projections; low-rank decay,
in-context learning rate, value residual and gate; the generalised delta-rule
WKV of :mod:`wkv7`; per-head GroupNorm plus the ``r_k`` bonus) and a
squared-ReLU channel mix. Prefill runs the chunked WKV, decode the recurrent
step.

State of one sequence: ``(layers, 2 + head_size, hidden)`` fp32 — per layer
the time mix's previous input, the channel mix's previous input, and the
``(heads, head_size, head_size)`` WKV matrix stored as ``head_size`` rows of
``hidden``. It does not grow with the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from agentd.checkpoint import Checkpoint
from agentd.errors import ModelLoadError
from agentd.plugins.linear.recurrent import RecurrentBackend
from agentd.plugins.linear.weights import float_dtype, projection
from agentd.plugins.weights import WeightReader
from agentd.plugins.linear.wkv7 import wkv7_chunked, wkv7_step
from agentd.plugins.projection import linear

ARCHITECTURE = "Rwkv7ForCausalLM"

# Rows of a layer's state; the WKV matrix follows.
_ATT_X, _FFN_X, _WKV = 0, 1, 2
#: Largest per-step decay magnitude: w = exp(-e^{-0.5} * sigmoid(.)), as trained.
_DECAY_SCALE = 0.606531
_LAYER_NORM_EPS = 1e-5
_HEAD_NORM_EPS = 64e-5


@dataclass(frozen=True)
class Rwkv7Config:
    """The ``config.json`` fields written by :func:`convert_rwkv7_pth`."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    head_size: int
    intermediate_size: int
    decay_low_rank: int
    a_low_rank: int
    v_low_rank: int
    gate_low_rank: int
    context_length: int = 4096

    def __post_init__(self) -> None:
        if self.hidden_size % self.head_size:
            raise ValueError("hidden_size must be a multiple of head_size")

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_size

    @classmethod
    def from_dict(cls, config: dict[str, Any], path: object) -> "Rwkv7Config":
        """Read and check ``config.json``; a bad field raises ModelLoadError naming it."""
        values = {}
        for name in cls.__dataclass_fields__:
            value = config.get(name)
            if value is None and name == "context_length":
                value = 4096
            if value is None and name == "v_low_rank" and config.get("num_hidden_layers") == 1:
                value = 0  # only block 0, which has no value residual
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ModelLoadError(path, f"missing or invalid field {name!r} (expected a non-negative integer)")
            values[name] = value
        try:
            return cls(**values)
        except ValueError as exc:
            raise ModelLoadError(path, str(exc)) from None


@dataclass
class _Layer:
    """One block's weights, arranged for the fewest kernel calls per step.

    Projections are dense ``(out, in)`` as loaded and oneDNN-packed after
    :meth:`~agentd.plugins.linear.recurrent.RecurrentBackend.pack_weights` (see
    :mod:`agentd.plugins.projection`); the low-rank factors (``w1``, ``w2``, ...)
    are small, used as ``x @ w1`` and stored ``(in, out)``.
    """

    #: The projection fields ``pack_weights`` packs.
    PROJECTIONS: ClassVar[tuple[str, ...]] = ("receptance", "key", "value", "output", "ffn_key", "ffn_value")

    ln1: tuple[torch.Tensor, torch.Tensor]
    ln2: tuple[torch.Tensor, torch.Tensor]
    mix: torch.Tensor  # (6, 1, C): share of the previous token for r, k, v, w, a, g
    receptance: torch.Tensor  # (C, C)
    key: torch.Tensor  # (C, C)
    value: torch.Tensor  # (C, C)
    w0: torch.Tensor  # (C,)
    w1: torch.Tensor  # (C, decay_low_rank)
    w2: torch.Tensor  # (decay_low_rank, C)
    a0: torch.Tensor
    a1: torch.Tensor
    a2: torch.Tensor
    v_lora: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # v0, v1, v2; None in block 0
    g1: torch.Tensor
    g2: torch.Tensor
    k_k: torch.Tensor  # (C,)
    k_a: torch.Tensor  # (C,)
    r_k: torch.Tensor  # (C,)
    head_norm: tuple[torch.Tensor, torch.Tensor]
    output: torch.Tensor  # (C, C)
    ffn_mix: torch.Tensor  # (C,)
    ffn_key: torch.Tensor  # (I, C)
    ffn_value: torch.Tensor  # (C, I)


class Rwkv7Backend(RecurrentBackend):
    """RWKV-7 decoder: chunked delta-rule prefill, batched recurrent decode."""

    #: Tokens per chunk of the parallel WKV: e^{0.61 * chunk} must stay well inside
    #: fp32 (32 -> 3e8). 32 measured ~3.5x faster than the recurrent form at 12x64 heads.
    chunk = 32

    def __init__(self, config: Rwkv7Config, reader: WeightReader):
        self.config = config
        C, I, H, N = config.hidden_size, config.intermediate_size, config.num_heads, config.head_size
        self.dtype = reader.dtype = float_dtype(reader.peek("emb.weight"))
        get = reader.take
        embeddings = get("emb.weight", (config.vocab_size, C))
        ln0 = (get("blocks.0.ln0.weight", (C,)), get("blocks.0.ln0.bias", (C,)))
        # ln0 acts on the embedding row alone: fold it into the table (as the rwkv package does).
        self.embeddings = F.layer_norm(embeddings.float(), (C,), ln0[0].float(), ln0[1].float(), _LAYER_NORM_EPS).to(
            self.dtype
        )

        def lora(prefix: str, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return get(prefix + "0", (C,)), get(prefix + "1", (C, rank)), get(prefix + "2", (rank, C))

        self.layers: list[_Layer] = []
        for i in range(config.num_hidden_layers):
            p, att, ffn = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
            w0, w1, w2 = lora(att + "w", config.decay_low_rank)
            a0, a1, a2 = lora(att + "a", config.a_low_rank)
            self.layers.append(
                _Layer(
                    ln1=(get(p + "ln1.weight", (C,)), get(p + "ln1.bias", (C,))),
                    ln2=(get(p + "ln2.weight", (C,)), get(p + "ln2.bias", (C,))),
                    mix=torch.stack([get(att + f"x_{n}", (C,)) for n in "rkvwag"]).unsqueeze(1),
                    receptance=projection(reader, att + "receptance.weight", (C, C)),
                    key=projection(reader, att + "key.weight", (C, C)),
                    value=projection(reader, att + "value.weight", (C, C)),
                    w0=w0.float(),
                    w1=w1,
                    w2=w2,
                    a0=a0,
                    a1=a1,
                    a2=a2,
                    v_lora=lora(att + "v", config.v_low_rank) if i > 0 else None,
                    g1=get(att + "g1", (C, config.gate_low_rank)),
                    g2=get(att + "g2", (config.gate_low_rank, C)),
                    k_k=get(att + "k_k", (C,)),
                    k_a=get(att + "k_a", (C,)),
                    r_k=get(att + "r_k", (H, N)).reshape(C),
                    head_norm=(get(att + "ln_x.weight", (C,)), get(att + "ln_x.bias", (C,))),
                    output=projection(reader, att + "output.weight", (C, C)),
                    ffn_mix=get(ffn + "x_k", (C,)),
                    ffn_key=projection(reader, ffn + "key.weight", (I, C)),
                    ffn_value=projection(reader, ffn + "value.weight", (C, I)),
                )
            )
        self.ln_out = (get("ln_out.weight", (C,)), get("ln_out.bias", (C,)))
        self.head = projection(reader, "head.weight", (config.vocab_size, C))
        reader.check_all_used(ARCHITECTURE)

        self.state_shape = (config.num_hidden_layers, 2 + N, C)
        self.info = self._decoder_info(
            ARCHITECTURE,
            parameters=reader.parameters,
            context_length=config.context_length,
            vocab_size=config.vocab_size,
            dtype=str(self.dtype).removeprefix("torch."),
        )

    # -- the maths ---------------------------------------------------------------
    def _forward_sequence(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...], all_logits: bool) -> torch.Tensor:
        (state,) = parts  # (layers, rows, C)
        H, N = self.config.num_heads, self.config.head_size
        x = self.embeddings[ids]  # (T, C)
        v_first: torch.Tensor | None = None
        for i, layer in enumerate(self.layers):
            s = state[i]  # (2 + N, C)
            wkv_state = s[_WKV:].view(H, N, N)

            def wkv(r, w, k, v, a, b, wkv_state=wkv_state):
                return wkv7_chunked(r, w, k, v, a, b, wkv_state, self.chunk)

            xn = F.layer_norm(x, x.shape[-1:], *layer.ln1, _LAYER_NORM_EPS)
            shifted = torch.cat([s[_ATT_X : _ATT_X + 1].to(xn.dtype), xn[:-1]])  # (T, C)
            s[_ATT_X] = xn[-1]
            out, v_first = self._time_mix(layer, xn, shifted, v_first, wkv)
            x = x + out

            xn = F.layer_norm(x, x.shape[-1:], *layer.ln2, _LAYER_NORM_EPS)
            shifted = torch.cat([s[_FFN_X : _FFN_X + 1].to(xn.dtype), xn[:-1]])
            s[_FFN_X] = xn[-1]
            x = x + self._channel_mix(layer, xn, shifted)
        if not all_logits:
            x = x[-1:]
        x = F.layer_norm(x, x.shape[-1:], *self.ln_out, _LAYER_NORM_EPS)
        return linear(x, self.head, None)

    def _forward_step(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (states,) = parts  # (layers, B, rows, C)
        B, H, N = ids.shape[0], self.config.num_heads, self.config.head_size
        x = self.embeddings[ids]  # (B, C)
        v_first: torch.Tensor | None = None
        for i, layer in enumerate(self.layers):
            s = states[i]  # (B, 2 + N, C)
            wkv_state = s[:, _WKV:].view(B, H, N, N)

            def wkv(r, w, k, v, a, b, wkv_state=wkv_state):
                return wkv7_step(r, w, k, v, a, b, wkv_state)

            xn = F.layer_norm(x, x.shape[-1:], *layer.ln1, _LAYER_NORM_EPS)
            out, v_first = self._time_mix(layer, xn, s[:, _ATT_X].to(xn.dtype), v_first, wkv)
            s[:, _ATT_X] = xn
            x = x + out

            xn = F.layer_norm(x, x.shape[-1:], *layer.ln2, _LAYER_NORM_EPS)
            x = x + self._channel_mix(layer, xn, s[:, _FFN_X].to(xn.dtype))
            s[:, _FFN_X] = xn
        x = F.layer_norm(x, x.shape[-1:], *self.ln_out, _LAYER_NORM_EPS)
        return linear(x, self.head, None)

    def _time_mix(
        self,
        layer: _Layer,
        xn: torch.Tensor,
        shifted: torch.Tensor,
        v_first: torch.Tensor | None,
        wkv: Callable[..., torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``xn`` ``(M, C)`` with their predecessors -> (output ``(M, C)``, block 0's values)."""
        M, C = xn.shape
        H, N = self.config.num_heads, self.config.head_size
        mixed = torch.lerp(xn, shifted, layer.mix)  # (6, M, C): r, k, v, w, a, g inputs
        # Separate F.linear calls: one bmm over stacked weights is ~100x slower at M=1 on CPU.
        r = linear(mixed[0], layer.receptance, None)
        k = linear(mixed[1], layer.key, None)
        v = linear(mixed[2], layer.value, None)
        xv, xw, xa, xg = mixed[2], mixed[3], mixed[4], mixed[5]

        log_decay = -_DECAY_SCALE * torch.sigmoid(layer.w0 + (torch.tanh(xw @ layer.w1) @ layer.w2).float())
        iclr = torch.sigmoid(torch.addmm(layer.a0, xa @ layer.a1, layer.a2))  # in-context learning rate
        gate = torch.sigmoid(xg @ layer.g1) @ layer.g2
        kk = F.normalize((k * layer.k_k).view(M, H, N), dim=-1)  # (M, H, N)
        k = k * (1 + (iclr - 1) * layer.k_a)
        if layer.v_lora is None:
            v_first = v
        else:
            v0, v1, v2 = layer.v_lora
            v = torch.lerp(v, v_first, torch.sigmoid(torch.addmm(v0, xv @ v1, v2)))

        y = wkv(
            r.float().view(M, H, N),
            log_decay.view(M, H, N),
            k.float().view(M, H, N),
            v.float().view(M, H, N),
            -kk.float(),
            (kk * iclr.view(M, H, N)).float(),
        ).to(xn.dtype)  # (M, H, N)
        y = F.group_norm(y.reshape(M, C), H, *layer.head_norm, _HEAD_NORM_EPS)
        bonus = (r * k * layer.r_k).view(M, H, N).sum(dim=-1, keepdim=True) * v.view(M, H, N)  # (M, H, N)
        return linear((y + bonus.view(M, C)) * gate, layer.output, None), v_first  # type: ignore[return-value]

    @staticmethod
    def _channel_mix(layer: _Layer, xn: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(linear(torch.lerp(xn, shifted, layer.ffn_mix), layer.ffn_key, None)).square_()
        return linear(hidden, layer.ffn_value, None)


def load(checkpoint: Checkpoint) -> Rwkv7Backend:
    """Build the backend from a directory written by :func:`convert_rwkv7_pth`."""
    config = Rwkv7Config.from_dict(checkpoint.config, checkpoint.where("config.json"))
    return Rwkv7Backend(config, WeightReader(checkpoint))
