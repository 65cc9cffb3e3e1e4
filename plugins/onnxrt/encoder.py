"""The encoder half of the backend contract over an exported sentence-encoder graph.

The graph pools and (per the checkpoint) L2-normalises inside, so ``embed`` only
pads a batch, runs it and returns ``sentence_embedding``. A token classifier's
graph also outputs ``token_logits`` ``(batch, sequence, labels)``, which
``classify`` cuts back to each input's length; its labels come from the
manifest's ``onnx.labels``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo, check_token_ids
from agentd.checkpoint import Checkpoint
from agentd.errors import InvalidArgument, ModelLoadError, OutOfRange
from agentd.plugins.onnxrt.weights import graph_weight_bytes

#: Longest padded batch run at once; a bigger request is split (sorted by length first).
MAX_BATCH = 32


class OnnxEncoderBackend(Backend):
    """An exported BERT-family encoder run by onnxruntime: ``embed``, and ``classify`` for a token classifier."""

    def __init__(self, checkpoint: Checkpoint, section: dict[str, Any], session: Any):
        self.session = session
        labels = section.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(label, str) and label for label in labels):
            raise ModelLoadError(checkpoint.path / "manifest.json", "'onnx.labels' must be a list of non-empty strings")
        outputs = {output.name for output in session.get_outputs()}
        if labels and "token_logits" not in outputs:
            raise ModelLoadError(checkpoint.path / "manifest.json", "'onnx.labels' is set but the graph has no token_logits output")
        # Dynamic int8 picks one activation scale per tensor, so a padded batch would
        # make a text's embedding depend on its neighbours: run quantised graphs one text at a time.
        self.max_batch = 1 if section.get("quantization") == "int8" else MAX_BATCH
        self.info = ModelInfo(
            architecture=checkpoint.source_architecture,
            kind="encoder",
            parameters=section["parameters"],
            context_length=section["context_length"],
            vocab_size=section["vocab_size"],
            dtype=str((checkpoint.manifest or {}).get("dtype", "float32")),
            embedding_dim=section["embedding_dim"],
            weight_bytes=graph_weight_bytes(checkpoint, section),
            labels=tuple(labels),
        )

    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        sequences = [self._check(index, ids) for index, ids in enumerate(batch)]
        out = np.empty((len(sequences), self.info.embedding_dim), dtype=np.float32)
        # Sorting by length keeps each padded chunk tight; results go back in request order.
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            out[chunk] = self._embed_padded([sequences[i] for i in chunk])
        return out

    def classify(self, batch: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per-token float32 logits ``(T_i, L)`` of each input, in request order."""
        if not self.info.labels:
            return super().classify(batch)
        sequences = [self._check(index, ids) for index, ids in enumerate(batch)]
        out: list[np.ndarray] = [np.empty(0)] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            (logits,) = self._run("token_logits", [sequences[i] for i in chunk])  # (B, T, L)
            for row, index in enumerate(chunk):
                out[index] = np.ascontiguousarray(logits[row, : len(sequences[index])], dtype=np.float32)
        return out

    def _embed_padded(self, sequences: list[np.ndarray]) -> np.ndarray:
        (vectors,) = self._run("sentence_embedding", sequences)
        return vectors

    def _run(self, output: str, sequences: list[np.ndarray]) -> list[np.ndarray]:
        """``output`` of the graph on a right-padded batch of ``sequences``."""
        longest = max(len(ids) for ids in sequences)
        input_ids = np.zeros((len(sequences), longest), dtype=np.int64)  # (B, T)
        mask = np.zeros((len(sequences), longest), dtype=np.int64)  # (B, T)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        return self.session.run([output], {"input_ids": input_ids, "attention_mask": mask})

    def _check(self, index: int, ids: Sequence[int]) -> np.ndarray:
        array = check_token_ids(ids, self.info.vocab_size, field="texts", prefix=f"input {index}: ")
        if array.size == 0:
            raise InvalidArgument("texts", f"input {index} has no tokens")
        if array.size > self.info.context_length:
            raise OutOfRange(f"input {index} has {array.size} tokens; the model's context is {self.info.context_length}")
        return array
