"""A stack of state-space mixer layers (Mamba, Mamba-2) over the fixed-state contract.

Subclasses supply one layer's mixer in its two forms — ``_mix_sequence`` (the
chunked parallel form for a prompt) and ``_mix_step`` (the recurrent form for
one batched token); this class owns the model around them: embeddings, the
pre-norm residual stack, the final norm and LM head. NumPy, batching and
save/restore are :class:`~agentd.plugins.fixed_state.FixedStateBackend`'s.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

import torch

from agentd.backend import ModelInfo
from agentd.plugins.fixed_state import FixedStateBackend
from agentd.plugins.projection import embedding, linear, prepare_weight
from agentd.plugins.quantized import QuantizedWeight, quantize
from agentd.plugins.norm import rms_norm
from agentd.plugins.ssm.state import SSMState

#: SSMs have no positional limit; this is only a sanity cap on one request.
UNBOUNDED_CONTEXT = 1 << 20


@dataclass
class SSMLayer:
    """What every layer has: the pre-mixer RMSNorm weight ``(hidden,)``."""

    #: Names of the ``(out, in)`` projection weights :meth:`SSMBackend.pack_weights` packs.
    PROJECTIONS: ClassVar[tuple[str, ...]] = ()

    norm: torch.Tensor


LayerT = TypeVar("LayerT", bound=SSMLayer)


class SSMBackend(FixedStateBackend[SSMState], Generic[LayerT]):
    """A decoder whose per-sequence state is an :class:`SSMState`."""

    state_type = SSMState
    #: Prompt tokens per parallel pass (bounds activation memory on long prompts).
    prefill_segment = 2048

    def __init__(
        self,
        embeddings: torch.Tensor,
        layers: list[LayerT],
        norm_f: torch.Tensor,
        lm_head: torch.Tensor,
        eps: float,
        conv_shape: tuple[int, int],
        ssm_shape: tuple[int, ...],
    ):
        self.embeddings = embeddings  # (V, hidden)
        self.layers = layers
        self.norm_f = norm_f  # (hidden,)
        # (V, hidden) dense; the embeddings themselves when tied, until pack_weights.
        self.lm_head = lm_head
        self.eps = eps
        #: One sequence's state shapes, layers first.
        self.conv_shape = (len(layers), *conv_shape)
        self.ssm_shape = (len(layers), *ssm_shape)
        self.state_shapes = (self.conv_shape, self.ssm_shape)

    def pack_weights(self, quant: str = "fp32") -> None:
        """Prepare every projection and the LM head for serving in ``quant``
        (:func:`~agentd.plugins.projection.prepare_weight`).

        The serving loader calls this once; the ONNX exporters, which read the
        dense ``(out, in)`` weights, load without it. Each prepared weight
        replaces its dense one. ``fp32``: a tied head gets a packed copy (the
        embedding gather keeps the dense table, ``V x hidden x 4`` bytes more),
        as the Llama backend does. ``int8``/``int4``: the projections in that
        encoding, the head in int8, and the embedding an int8 table (the head's
        own when tied).
        """
        for layer in self.layers:
            for name in layer.PROJECTIONS:
                setattr(layer, name, prepare_weight(getattr(layer, name), quant))
        tied = self.lm_head is self.embeddings
        self.lm_head = prepare_weight(self.lm_head, "fp32" if quant == "fp32" else "int8")
        if quant != "fp32":
            self.embeddings = self.lm_head if tied and isinstance(self.lm_head, QuantizedWeight) else quantize(self.embeddings, 8)
        self._weights_changed()

    def _ssm_info(self, architecture: str, parameters: int, vocab_size: int) -> ModelInfo:
        """Every SSM's ``ModelInfo``: fp32 weights, no positional limit."""
        return self._decoder_info(
            architecture,
            parameters=parameters,
            context_length=UNBOUNDED_CONTEXT,
            vocab_size=vocab_size,
            dtype="float32",
        )

    # -- to implement ------------------------------------------------------------
    @abc.abstractmethod
    def _mix_sequence(self, layer: LayerT, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """Mixer over a prompt chunk: ``x`` ``(T, hidden)`` normed; ``conv``/``ssm`` one layer's state, in place."""

    @abc.abstractmethod
    def _mix_step(self, layer: LayerT, x: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """Mixer for one token per row: ``x`` ``(B, hidden)``; ``conv``/``ssm`` ``(B, ...)``, in place."""

    # -- the layer stack -----------------------------------------------------------
    def _forward_sequence(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...], all_logits: bool) -> torch.Tensor:
        conv, ssm = parts
        hidden = embedding(ids, self.embeddings)  # (T, hidden)
        for index, layer in enumerate(self.layers):
            normed = rms_norm(hidden, layer.norm, self.eps)
            hidden = hidden + self._mix_sequence(layer, normed, conv[index], ssm[index])
        return self._logits(hidden if all_logits else hidden[-1:])

    def _forward_step(self, ids: torch.Tensor, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        conv, ssm = parts  # (layers, B, K-1, C), (layers, B, ...)
        hidden = embedding(ids, self.embeddings)  # (B, hidden)
        for index, layer in enumerate(self.layers):
            normed = rms_norm(hidden, layer.norm, self.eps)
            hidden = hidden + self._mix_step(layer, normed, conv[index], ssm[index])
        return self._logits(hidden)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return linear(rms_norm(hidden, self.norm_f, self.eps), self.lm_head, None)
