"""Mamba (selective state space) decoder, from a Hugging Face ``MambaForCausalLM`` checkpoint.

Layout (as in ``state-spaces/mamba-130m-hf``): ``backbone.embeddings``,
``backbone.layers.N.norm``, ``backbone.layers.N.mixer.{in_proj, conv1d, x_proj,
dt_proj, A_log, D, out_proj}``, ``backbone.norm_f`` and ``lm_head`` (absent
when tied to the embeddings).

Per layer: ``in_proj`` splits into ``x`` and the gate ``z``; ``x`` goes through
a causal depthwise conv and SiLU; ``x_proj`` makes the input-dependent
``dt`` (low rank, expanded by ``dt_proj``), ``B`` and ``C``; the selective scan
(:mod:`agentd.plugins.ssm.scan`) runs with ``A = -exp(A_log)``; then the ``D``
skip, the ``silu(z)`` gate and ``out_proj``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from agentd.checkpoint import Checkpoint
from agentd.plugins.projection import linear
from agentd.plugins.ssm.base import SSMBackend, SSMLayer
from agentd.plugins.ssm.config import config_field, parse_config, require_silu
from agentd.plugins.ssm.layers import causal_conv_sequence, causal_conv_step
from agentd.plugins.ssm.scan import DEFAULT_CHUNK, selective_scan_chunked, selective_scan_step
from agentd.plugins.weights import WeightReader

ARCHITECTURE = "MambaForCausalLM"


@dataclass
class MambaConfig:
    """The ``config.json`` fields Mamba uses; derived sizes are filled in ``__post_init__``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    state_size: int = 16
    conv_kernel: int = 4
    expand: int = 2
    time_step_rank: int | str = "auto"
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = False
    use_conv_bias: bool = True
    tie_word_embeddings: bool = True
    #: Derived: ``expand * hidden_size``.
    intermediate_size: int = field(init=False)
    #: Derived: ``ceil(hidden_size / 16)`` when ``time_step_rank`` is ``"auto"``.
    dt_rank: int = field(init=False)

    def __post_init__(self) -> None:
        self.intermediate_size = self.expand * self.hidden_size
        if self.time_step_rank == "auto":
            self.dt_rank = math.ceil(self.hidden_size / 16)
        elif type(self.time_step_rank) is int and self.time_step_rank > 0:
            self.dt_rank = self.time_step_rank
        else:
            raise ValueError("field 'time_step_rank' must be 'auto' or a positive int")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "state_size", "expand"):
            if getattr(self, name) <= 0:
                raise ValueError(f"field {name!r} must be positive")
        if self.conv_kernel < 2:
            raise ValueError("field 'conv_kernel' must be at least 2")

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "MambaConfig":
        require_silu(config)
        return cls(
            vocab_size=config_field(config, "vocab_size", int),
            hidden_size=config_field(config, "hidden_size", int),
            num_hidden_layers=config_field(config, "num_hidden_layers", int),
            state_size=config_field(config, "state_size", int, 16),
            conv_kernel=config_field(config, "conv_kernel", int, 4),
            expand=config_field(config, "expand", int, 2),
            time_step_rank=config.get("time_step_rank", "auto"),
            layer_norm_epsilon=config_field(config, "layer_norm_epsilon", float, 1e-5),
            use_bias=config_field(config, "use_bias", bool, False),
            use_conv_bias=config_field(config, "use_conv_bias", bool, True),
            tie_word_embeddings=config_field(config, "tie_word_embeddings", bool, True),
        )


@dataclass
class MambaLayer(SSMLayer):
    """One block's weights, fp32, with ``A = -exp(A_log)`` precomputed."""

    #: The projection fields: dense (out, in) as loaded, oneDNN-packed after
    #: SSMBackend.pack_weights (agentd.plugins.projection).
    PROJECTIONS: ClassVar[tuple[str, ...]] = ("in_proj", "x_proj", "dt_proj", "out_proj")

    in_proj: torch.Tensor  # (2 D, hidden)
    in_proj_bias: torch.Tensor | None
    conv_weight: torch.Tensor  # (K, D), transposed to match the conv state
    conv_bias: torch.Tensor | None
    x_proj: torch.Tensor  # (R + 2 N, D)
    dt_proj: torch.Tensor  # (D, R)
    dt_bias: torch.Tensor  # (D,)
    A: torch.Tensor  # (D, N)
    D: torch.Tensor  # (D,)
    out_proj: torch.Tensor  # (hidden, D)
    out_proj_bias: torch.Tensor | None


class MambaBackend(SSMBackend[MambaLayer]):
    """Mamba with a chunked parallel scan for prompts and a recurrent step for decoding."""

    def __init__(self, config: MambaConfig, reader: WeightReader, chunk: int = DEFAULT_CHUNK):
        self.config = config
        self.chunk = chunk
        c = config
        d_inner, n, r, k = c.intermediate_size, c.state_size, c.dt_rank, c.conv_kernel
        embeddings = reader.take("backbone.embeddings.weight", (c.vocab_size, c.hidden_size))
        layers = []
        for i in range(c.num_hidden_layers):
            p = f"backbone.layers.{i}."
            m = p + "mixer."
            layers.append(
                MambaLayer(
                    norm=reader.take(p + "norm.weight", (c.hidden_size,)),
                    in_proj=reader.take(m + "in_proj.weight", (2 * d_inner, c.hidden_size)),
                    in_proj_bias=reader.take_optional(m + "in_proj.bias", (2 * d_inner,), c.use_bias),
                    conv_weight=reader.take(m + "conv1d.weight", (d_inner, 1, k)).view(d_inner, k).T.contiguous(),
                    conv_bias=reader.take_optional(m + "conv1d.bias", (d_inner,), c.use_conv_bias),
                    x_proj=reader.take(m + "x_proj.weight", (r + 2 * n, d_inner)),
                    dt_proj=reader.take(m + "dt_proj.weight", (d_inner, r)),
                    dt_bias=reader.take(m + "dt_proj.bias", (d_inner,)),
                    A=-torch.exp(reader.take(m + "A_log", (d_inner, n))),
                    D=reader.take(m + "D", (d_inner,)),
                    out_proj=reader.take(m + "out_proj.weight", (c.hidden_size, d_inner)),
                    out_proj_bias=reader.take_optional(m + "out_proj.bias", (c.hidden_size,), c.use_bias),
                )
            )
        norm_f = reader.take("backbone.norm_f.weight", (c.hidden_size,))
        if c.tie_word_embeddings:
            lm_head = embeddings  # one dense table until pack_weights gives the head its own
        else:
            lm_head = reader.take("lm_head.weight", (c.vocab_size, c.hidden_size))
        conv_shape = (k - 1, d_inner)
        ssm_shape = (d_inner, n)
        super().__init__(embeddings, layers, norm_f, lm_head, c.layer_norm_epsilon, conv_shape, ssm_shape)
        self.info = self._ssm_info(ARCHITECTURE, reader.parameters, c.vocab_size)

    def _project(self, layer: MambaLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the conv output ``x`` ``(..., D)``: ``dt`` ``(..., D)`` after softplus, ``B``, ``C`` ``(..., N)``."""
        r, n = self.config.dt_rank, self.config.state_size
        dt_low, B, C = linear(x, layer.x_proj, None).split([r, n, n], dim=-1)
        dt = F.softplus(linear(dt_low, layer.dt_proj, layer.dt_bias))
        return dt, B, C

    def _mix_sequence(self, layer: MambaLayer, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        xs, z = linear(x, layer.in_proj, layer.in_proj_bias).chunk(2, dim=-1)  # (T, D) each
        xs = causal_conv_sequence(xs, conv, layer.conv_weight, layer.conv_bias)
        dt, B, C = self._project(layer, xs)
        y, final = selective_scan_chunked(xs, dt, layer.A, B, C, ssm, self.chunk)
        ssm.copy_(final)
        y = (y + xs * layer.D) * F.silu(z)
        return linear(y, layer.out_proj, layer.out_proj_bias)

    def _mix_step(self, layer: MambaLayer, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        xs, z = linear(x, layer.in_proj, layer.in_proj_bias).chunk(2, dim=-1)  # (B, D) each
        xs = causal_conv_step(xs, conv, layer.conv_weight, layer.conv_bias)
        dt, B, C = self._project(layer, xs)
        y = selective_scan_step(ssm, xs, dt, layer.A, B, C)
        y = (y + xs * layer.D) * F.silu(z)
        return linear(y, layer.out_proj, layer.out_proj_bias)


def load(checkpoint: Checkpoint) -> MambaBackend:
    """Build a :class:`MambaBackend` from a checkpoint directory."""
    config = parse_config(checkpoint, MambaConfig.from_dict)
    with torch.inference_mode():
        return MambaBackend(config, WeightReader(checkpoint))
