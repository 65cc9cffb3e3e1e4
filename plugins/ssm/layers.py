"""Small building blocks shared by Mamba and Mamba-2: the gated RMSNorm and the causal conv.

The causal depthwise conv keeps its state as the last ``K - 1`` inputs of
every channel (``(K - 1, C)``): exactly what the next token's window needs, so a
prompt shorter than the kernel, a prompt split across prefill calls and a
decode step all see the same window a single full forward would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agentd.plugins.norm import rms_norm


def gated_rms_norm(
    x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, group_size: int, eps: float
) -> torch.Tensor:
    """Mamba-2's norm: gate first (``x * silu(gate)``), then RMSNorm within groups of channels."""
    gated = x * F.silu(gate)
    grouped = gated.view(*gated.shape[:-1], -1, group_size)  # (..., groups, group_size)
    return rms_norm(grouped, None, eps).view(gated.shape) * weight


def causal_conv_sequence(
    x: torch.Tensor, conv_state: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Depthwise causal conv + SiLU over a chunk, continuing from ``conv_state``.

    ``K`` shifted multiply-adds rather than ``F.conv1d``: for a depthwise
    kernel of 4 this is a few times faster on CPU and keeps the ``(T, C)``
    layout of the projections, so nothing is transposed.

    :param x: ``(T, C)`` inputs.
    :param conv_state: ``(K - 1, C)`` previous inputs (zeros at the start); updated in place.
    :param weight_t: the kernel transposed, ``(K, C)``; ``bias``: ``(C,)`` or None.
    :returns: ``(T, C)`` activated outputs.
    """
    T = x.shape[0]
    window = torch.cat([conv_state, x])  # (K - 1 + T, C)
    out = window[:T] * weight_t[0]
    for k in range(1, weight_t.shape[0]):
        out.addcmul_(window[k : k + T], weight_t[k])
    if bias is not None:
        out += bias
    conv_state.copy_(window[T:])  # the last K - 1 inputs
    return F.silu(out)


def causal_conv_step(
    x: torch.Tensor, conv_state: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """One token for a batch: ``x`` ``(Bt, C)``, ``conv_state`` ``(Bt, K - 1, C)`` updated in place.

    ``weight_t`` is the kernel transposed, ``(K, C)``, to match the window.
    """
    window = torch.cat([conv_state, x[:, None, :]], dim=1)  # (Bt, K, C)
    out = (window * weight_t).sum(1)  # (Bt, C)
    if bias is not None:
        out += bias
    conv_state.copy_(window[:, 1:])
    return F.silu(out)
