"""RWKV's state: one fixed-size fp32 tensor per sequence, over the fixed-state contract.

The layout of ``tensor`` belongs to the backend that made it (RWKV-4
``(layers, 5, hidden)``, RWKV-7 ``(layers, 2 + head_size, hidden)``). NumPy,
batching (on dim 1: ``(layers, B, ...)``) and exact save/restore are
:class:`~agentd.plugins.fixed_state.FixedStateBackend`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agentd.plugins.fixed_state import FixedState, FixedStateBackend


@dataclass
class RecurrentState(FixedState):
    """One sequence's recurrent state (fp32 whatever the weight dtype)."""

    PARTS = ("tensor",)

    tensor: torch.Tensor
    #: Tokens consumed so far.
    tokens: int = 0


class RecurrentBackend(FixedStateBackend[RecurrentState]):
    """A fixed-state backend whose state is a single tensor of shape ``state_shape``."""

    state_type = RecurrentState
    #: Shape of one sequence's state tensor, layers first (set by the family).
    state_shape: tuple[int, ...]

    @property
    def state_shapes(self) -> tuple[tuple[int, ...], ...]:  # type: ignore[override]
        return (self.state_shape,)
