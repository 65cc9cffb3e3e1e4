"""The Llama/Qwen2 decoder backend: the backend contract over :class:`LlamaModel`.

State is a :class:`KVCache` per sequence, a slot of the backend's
:class:`KVPool`. ``prefill`` runs a chunk of prompt tokens through the model
in parallel (tiled causal attention); ``decode`` runs one token for each of
``B`` sequences with the projections, MLP and LM head batched across them (one
pass over the weights for the whole batch) and attention in one masked call
per layer over the pool's slots. Weights are packed for oneDNN when torch has
it (:meth:`LlamaModel.pack_weights`). Every call that touches states holds the
pool's lock: the engine decodes on its thread while a session may be saved or
restored on another.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from agentd.backend import Backend, ModelInfo, check_token_ids
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument, OutOfRange

from agentd.plugins.quantized import QUANT_DTYPES
from agentd.plugins.weights import WeightReader

from .kv_cache import KVCache, KVPool
from .llama import LlamaConfig, LlamaModel

_FLOAT32_BYTES = 4


class DecoderBackend(Backend):
    """A loaded Llama-family model serving prefill/decode over KV-cache states."""

    def __init__(self, model: LlamaModel, quant: str = "fp32"):
        self.model = model
        c = model.config
        self.info = ModelInfo(
            architecture=c.architecture,
            kind="decoder",
            parameters=model.parameter_count(),
            context_length=c.max_position_embeddings,
            vocab_size=c.vocab_size,
            dtype=QUANT_DTYPES[quant],
            # One key and one value vector per layer and KV head, float32.
            state_bytes_per_token=2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * _FLOAT32_BYTES,
            weight_bytes=model.resident_bytes(),
        )

        c = model.config
        #: Every state's keys and values, in slots by capacity.
        self.pool = KVPool(c.num_hidden_layers, c.num_key_value_heads, c.head_dim)

    def new_state(self) -> KVCache:
        return self.pool.new_state()

    def prefill(self, token_ids: np.ndarray, state: KVCache, *, all_logits: bool = False) -> np.ndarray:
        ids = self._check_ids(token_ids, "token_ids")
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        self._check_states([state])
        self._check_room(state, ids.size)
        with self.pool.lock, torch.inference_mode():
            try:
                logits = self.model.forward(torch.from_numpy(ids).view(1, -1), [state], all_logits)
            finally:
                self.pool.collect()
        return logits.numpy()

    def decode(self, token_ids: np.ndarray, states: Sequence[KVCache]) -> np.ndarray:
        ids = self._check_ids(token_ids, "token_ids")
        if ids.size != len(states):
            raise InvalidArgument("token_ids", f"has {ids.size} tokens for {len(states)} states")
        if ids.size == 0:
            raise InvalidArgument("token_ids", "is empty")
        if len({id(state) for state in states}) != len(states):
            raise InvalidArgument("states", "the same state appears twice in one batch")
        self._check_states(states)
        for state in states:
            self._check_room(state, 1)
        with self.pool.lock, torch.inference_mode():
            try:
                logits = self.model.forward(torch.from_numpy(ids).view(-1, 1), states, False)
            finally:
                self.pool.collect()
        return logits.numpy()

    def state_bytes(self, state: KVCache) -> int:
        return state.nbytes

    def save_state(self, state: KVCache) -> bytes:
        self._check_states([state])
        with self.pool.lock:
            return state.to_bytes()

    def load_state(self, data: bytes) -> KVCache:
        with self.pool.lock, torch.inference_mode():
            try:
                return KVCache.from_bytes(data, self.pool)
            finally:
                self.pool.collect()

    def _check_states(self, states: Sequence[KVCache]) -> None:
        if any(not isinstance(state, KVCache) or state.pool is not self.pool for state in states):
            raise InvalidArgument("states", "a state was not made by this model (new_state / load_state)")

    def _check_ids(self, token_ids: np.ndarray, field: str) -> np.ndarray:
        return check_token_ids(token_ids, self.info.vocab_size, field=field)

    def _check_room(self, state: KVCache, tokens: int) -> None:
        if state.length + tokens > self.info.context_length:
            raise OutOfRange(
                f"sequence would reach {state.length + tokens} tokens; "
                f"the model's context is {self.info.context_length}"
            )


def load(checkpoint: Checkpoint, quant: str = "fp32") -> Backend:
    """Build the decoder backend from a Hugging Face Llama/Qwen2 checkpoint, computing in ``quant``
    (``fp32``, ``int8``, ``int4``: :meth:`LlamaModel.pack_weights`)."""
    config = LlamaConfig.from_hf(checkpoint.config, checkpoint.where("config.json"))
    model = LlamaModel(config, checkpoint.path)
    model.load(WeightReader(checkpoint))
    model.pack_weights(quant)
    return DecoderBackend(model, quant)
