"""RWKV's state: one fixed-size fp32 tensor per sequence, over the fixed-state contract.

The layout of ``tensor`` belongs to the backend that made it (RWKV-4
``(layers, 5, hidden)``, RWKV-7 ``(layers, 2 + head_size, hidden)``). NumPy,
batching (on dim 1: ``(layers, B, ...)``) and exact save/restore are
:class:`~agentd.plugins.fixed_state.FixedStateBackend`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, Sequence

import torch

from agentd.plugins.fixed_state import FixedState, FixedStateBackend
from agentd.plugins.projection import pack_weight


@dataclass
class RecurrentState(FixedState):
    """One sequence's recurrent state (fp32 whatever the weight dtype)."""

    PARTS = ("tensor",)

    tensor: torch.Tensor
    #: Tokens consumed so far.
    tokens: int = 0


class ProjectedLayer(Protocol):
    """A layer whose ``(out, in)`` projection weights are the fields named in ``PROJECTIONS``."""

    PROJECTIONS: ClassVar[tuple[str, ...]]


class RecurrentBackend(FixedStateBackend[RecurrentState]):
    """A fixed-state backend whose state is a single tensor of shape ``state_shape``."""

    state_type = RecurrentState
    #: Shape of one sequence's state tensor, layers first (set by the family).
    state_shape: tuple[int, ...]
    #: The blocks and the LM head ``(V, C)`` (set by the family).
    layers: Sequence[ProjectedLayer]
    head: torch.Tensor

    def pack_weights(self) -> None:
        """Reorder every projection and the LM head for oneDNN (:func:`~agentd.plugins.projection.pack_weight`).

        The serving loader calls this once; the ONNX exporters, which read the
        dense ``(out, in)`` weights, load without it. Each packed weight
        replaces its dense one (the embedding gather uses its own folded table,
        so a tied head costs nothing extra). bf16/fp16 weights stay dense.
        """
        for layer in self.layers:
            for name in layer.PROJECTIONS:
                setattr(layer, name, pack_weight(getattr(layer, name)))
        self.head = pack_weight(self.head)
        self._weights_changed()

    @property
    def state_shapes(self) -> tuple[tuple[int, ...], ...]:  # type: ignore[override]
        return (self.state_shape,)
