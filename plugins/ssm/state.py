"""The per-sequence state of a state-space model: conv inputs and SSM state, all layers.

Both tensors are fixed-size fp32 whatever the context length, which is the
point of an SSM on a phone. Layers lead (``(layers, ...)``) so a batch is
stacked on dim 1 and each layer's slice of the batch stays contiguous; saving,
restoring and batching are :mod:`agentd.plugins.fixed_state`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agentd.plugins.fixed_state import FixedState


@dataclass
class SSMState(FixedState):
    """One sequence's state."""

    PARTS = ("conv", "ssm")

    #: ``(layers, conv_kernel - 1, conv_channels)``: the last inputs of each causal conv.
    conv: torch.Tensor
    #: ``(layers, *ssm_shape)``: the recurrent state (Mamba ``(D, N)``, Mamba-2 ``(H, P, N)``).
    ssm: torch.Tensor
    #: Tokens consumed so far.
    tokens: int = 0
