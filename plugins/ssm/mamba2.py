"""Mamba-2 (state-space duality) decoder, from a Hugging Face ``Mamba2ForCausalLM`` checkpoint.

Per layer: ``in_proj`` splits into the gate ``z`` ``(d_inner)``, ``xBC``
``(d_inner + 2 G N)`` and ``dt`` ``(H)``; ``xBC`` goes through a causal
depthwise conv and SiLU and splits into ``x`` (``H`` heads of ``P``
channels), ``B`` and ``C`` (``G`` groups of ``N``); ``dt = softplus(dt +
dt_bias)`` clamped to ``time_step_limit``; the SSD (:mod:`agentd.plugins.ssm.ssd`)
runs with one scalar decay ``A = -exp(A_log)`` per head; then the ``D`` skip,
the gated RMSNorm (``norm(y * silu(z))`` within each of the ``G`` groups)
and ``out_proj``.
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
from agentd.plugins.ssm.config import config_field, config_number, parse_config, require_silu
from agentd.plugins.ssm.layers import causal_conv_sequence, causal_conv_step, gated_rms_norm
from agentd.plugins.ssm.ssd import DEFAULT_CHUNK, ssd_chunked, ssd_step
from agentd.plugins.weights import WeightReader

ARCHITECTURE = "Mamba2ForCausalLM"


@dataclass
class Mamba2Config:
    """The ``config.json`` fields Mamba-2 uses; derived sizes are filled in ``__post_init__``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_heads: int
    head_dim: int
    state_size: int = 128
    n_groups: int = 8
    conv_kernel: int = 4
    expand: int = 2
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = False
    use_conv_bias: bool = True
    time_step_limit: tuple[float, float] = (0.0, math.inf)
    tie_word_embeddings: bool = False
    #: Derived: ``expand * hidden_size`` (must equal ``num_heads * head_dim``).
    intermediate_size: int = field(init=False)
    #: Derived: channels through the conv, ``x`` then ``B`` then ``C``.
    conv_dim: int = field(init=False)
    #: Derived: ``in_proj`` output width, ``z | xBC | dt``.
    in_proj_dim: int = field(init=False)
    #: Derived: whether ``time_step_limit`` clamps at all (the default does not).
    clamps_dt: bool = field(init=False)

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "head_dim", "state_size", "n_groups")
        for name in (*sizes, "expand"):
            if getattr(self, name) <= 0:
                raise ValueError(f"field {name!r} must be positive")
        self.intermediate_size = self.expand * self.hidden_size
        if self.intermediate_size != self.num_heads * self.head_dim:
            raise ValueError(
                f"fields 'num_heads' * 'head_dim' ({self.num_heads * self.head_dim}) must equal "
                f"'expand' * 'hidden_size' ({self.intermediate_size})"
            )
        if self.num_heads % self.n_groups:
            raise ValueError(f"field 'n_groups' ({self.n_groups}) must divide 'num_heads' ({self.num_heads})")
        if self.conv_kernel < 2:
            raise ValueError("field 'conv_kernel' must be at least 2")
        low, high = self.time_step_limit
        if not 0.0 <= low <= high:
            raise ValueError("field 'time_step_limit' must be [low, high] with 0 <= low <= high")
        self.conv_dim = self.intermediate_size + 2 * self.n_groups * self.state_size
        self.in_proj_dim = self.intermediate_size + self.conv_dim + self.num_heads
        self.clamps_dt = low > 0.0 or high < math.inf

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "Mamba2Config":
        require_silu(config)
        # mamba_ssm configs name LayerNorm-vs-RMSNorm; only RMSNorm is what HF (and we) compute.
        if not config_field(config, "rms_norm", bool, True):
            raise ValueError("field 'rms_norm' false (LayerNorm) is not supported")
        limit = config.get("time_step_limit", (0.0, math.inf))
        if not isinstance(limit, (list, tuple)) or len(limit) != 2:
            raise ValueError(f"field 'time_step_limit' must be a pair [low, high], got {limit!r}")
        return cls(
            vocab_size=config_field(config, "vocab_size", int),
            hidden_size=config_field(config, "hidden_size", int),
            num_hidden_layers=config_field(config, "num_hidden_layers", int),
            num_heads=config_field(config, "num_heads", int),
            head_dim=config_field(config, "head_dim", int),
            state_size=config_field(config, "state_size", int, 128),
            n_groups=config_field(config, "n_groups", int, 8),
            conv_kernel=config_field(config, "conv_kernel", int, 4),
            expand=config_field(config, "expand", int, 2),
            layer_norm_epsilon=config_field(config, "layer_norm_epsilon", float, 1e-5),
            use_bias=config_field(config, "use_bias", bool, False),
            use_conv_bias=config_field(config, "use_conv_bias", bool, True),
            time_step_limit=(config_number(limit[0], "time_step_limit"), config_number(limit[1], "time_step_limit")),
            tie_word_embeddings=config_field(config, "tie_word_embeddings", bool, False),
        )


@dataclass
class Mamba2Layer(SSMLayer):
    """One block's weights, fp32, with ``A = -exp(A_log)`` precomputed."""

    #: The projection fields: dense (out, in) as loaded, oneDNN-packed after
    #: SSMBackend.pack_weights (agentd.plugins.projection).
    PROJECTIONS: ClassVar[tuple[str, ...]] = ("in_proj", "out_proj")

    in_proj: torch.Tensor  # (d_inner + conv_dim + H, hidden)
    in_proj_bias: torch.Tensor | None
    conv_weight: torch.Tensor  # (K, conv_dim), transposed to match the conv state
    conv_bias: torch.Tensor | None
    dt_bias: torch.Tensor  # (H,)
    A: torch.Tensor  # (H,)
    D: torch.Tensor  # (H,)
    gate_norm: torch.Tensor  # (d_inner,)
    out_proj: torch.Tensor  # (hidden, d_inner)
    out_proj_bias: torch.Tensor | None


class Mamba2Backend(SSMBackend[Mamba2Layer]):
    """Mamba-2 with the chunked SSD for prompts and a recurrent step for decoding."""

    def __init__(self, config: Mamba2Config, reader: WeightReader, chunk: int = DEFAULT_CHUNK):
        self.config = config
        self.chunk = chunk
        c = config
        d_inner, heads, k = c.intermediate_size, c.num_heads, c.conv_kernel
        embeddings = reader.take("backbone.embeddings.weight", (c.vocab_size, c.hidden_size))
        layers = []
        for i in range(c.num_hidden_layers):
            p = f"backbone.layers.{i}."
            m = p + "mixer."
            layers.append(
                Mamba2Layer(
                    norm=reader.take(p + "norm.weight", (c.hidden_size,)),
                    in_proj=reader.take(m + "in_proj.weight", (c.in_proj_dim, c.hidden_size)),
                    in_proj_bias=reader.take_optional(m + "in_proj.bias", (c.in_proj_dim,), c.use_bias),
                    conv_weight=reader.take(m + "conv1d.weight", (c.conv_dim, 1, k)).view(c.conv_dim, k).T.contiguous(),
                    conv_bias=reader.take_optional(m + "conv1d.bias", (c.conv_dim,), c.use_conv_bias),
                    dt_bias=reader.take(m + "dt_bias", (heads,)),
                    A=-torch.exp(reader.take(m + "A_log", (heads,))),
                    D=reader.take(m + "D", (heads,)),
                    gate_norm=reader.take(m + "norm.weight", (d_inner,)),
                    out_proj=reader.take(m + "out_proj.weight", (c.hidden_size, d_inner)),
                    out_proj_bias=reader.take_optional(m + "out_proj.bias", (c.hidden_size,), c.use_bias),
                )
            )
        norm_f = reader.take("backbone.norm_f.weight", (c.hidden_size,))
        if c.tie_word_embeddings:
            lm_head = embeddings  # one dense table until pack_weights gives the head its own
        else:
            lm_head = reader.take("lm_head.weight", (c.vocab_size, c.hidden_size))
        conv_shape = (k - 1, c.conv_dim)
        ssm_shape = (heads, c.head_dim, c.state_size)
        super().__init__(embeddings, layers, norm_f, lm_head, c.layer_norm_epsilon, conv_shape, ssm_shape)
        self.info = self._ssm_info(ARCHITECTURE, reader.parameters, c.vocab_size)

    def _split(self, layer: Mamba2Layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``in_proj`` then split: ``z`` ``(..., d_inner)``, ``xBC`` ``(..., conv_dim)``, ``dt`` ``(..., H)``.

        ``dt`` comes back after softplus and the ``time_step_limit`` clamp.
        """
        c = self.config
        z, xBC, dt = linear(x, layer.in_proj, layer.in_proj_bias).split(
            [c.intermediate_size, c.conv_dim, c.num_heads], dim=-1
        )
        dt = F.softplus(dt + layer.dt_bias)
        if c.clamps_dt:
            dt = dt.clamp(*c.time_step_limit)
        return z, xBC, dt

    def _output(self, layer: Mamba2Layer, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``D`` skip, gated norm and ``out_proj`` on ``y``/``x`` ``(..., H, P)``."""
        c = self.config
        y = (y + x * layer.D[:, None]).flatten(-2)  # (..., d_inner)
        y = gated_rms_norm(y, z, layer.gate_norm, c.intermediate_size // c.n_groups, c.layer_norm_epsilon)
        return linear(y, layer.out_proj, layer.out_proj_bias)

    def _mix_sequence(self, layer: Mamba2Layer, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        c = self.config
        T = x.shape[0]
        z, xBC, dt = self._split(layer, x)
        xBC = causal_conv_sequence(xBC, conv, layer.conv_weight, layer.conv_bias)
        xs, B, C = xBC.split([c.intermediate_size, c.n_groups * c.state_size, c.n_groups * c.state_size], dim=-1)
        xs = xs.reshape(T, c.num_heads, c.head_dim)  # (T, H, P)
        B = B.reshape(T, c.n_groups, c.state_size)  # (T, G, N)
        C = C.reshape(T, c.n_groups, c.state_size)  # (T, G, N)
        y, final = ssd_chunked(xs, dt, layer.A, B, C, ssm, self.chunk)
        ssm.copy_(final)
        return self._output(layer, y, xs, z)

    def _mix_step(self, layer: Mamba2Layer, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        c = self.config
        batch = x.shape[0]
        z, xBC, dt = self._split(layer, x)
        xBC = causal_conv_step(xBC, conv, layer.conv_weight, layer.conv_bias)
        xs, B, C = xBC.split([c.intermediate_size, c.n_groups * c.state_size, c.n_groups * c.state_size], dim=-1)
        xs = xs.reshape(batch, c.num_heads, c.head_dim)  # (B, H, P)
        B = B.reshape(batch, c.n_groups, c.state_size)  # (B, G, N)
        C = C.reshape(batch, c.n_groups, c.state_size)  # (B, G, N)
        y = ssd_step(ssm, xs, dt, layer.A, B, C)
        return self._output(layer, y, xs, z)


def load(checkpoint: Checkpoint) -> Mamba2Backend:
    """Build a :class:`Mamba2Backend` from a checkpoint directory."""
    config = parse_config(checkpoint, Mamba2Config.from_dict)
    with torch.inference_mode():
        return Mamba2Backend(config, WeightReader(checkpoint))
