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
from agentd.plugins.projection import prepare_weight


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

    def pack_weights(self, quant: str = "fp32") -> None:
        """Prepare every projection and the LM head for serving in ``quant``
        (:func:`~agentd.plugins.projection.prepare_weight`).

        The serving loader calls this once; the ONNX exporters, which read the
        dense ``(out, in)`` weights, load without it. Each prepared weight
        replaces its dense one (the embedding gather uses its own folded table,
        so a tied head costs nothing extra; it stays float). ``int8``/``int4``
        put the projections in that encoding and the head in int8.
        bf16/fp16 weights stay dense in fp32 mode.
        """
        for layer in self.layers:
            for name in layer.PROJECTIONS:
                setattr(layer, name, prepare_weight(getattr(layer, name), quant))
        self.head = prepare_weight(self.head, "fp32" if quant == "fp32" else "int8")
        self._weights_changed()

    @property
    def state_shapes(self) -> tuple[tuple[int, ...], ...]:  # type: ignore[override]
        return (self.state_shape,)
