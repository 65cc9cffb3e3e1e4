"""This machine's memory read bandwidth, and the decode speed it allows.

A decode step at batch 1 reads every weight once, so on a CPU it cannot run
faster than ``bandwidth / bytes read per token``. The bandwidth is measured
here, not looked up: torch sums a float32 buffer far larger than the last-level
cache (``--threads`` threads, the count every engine gets), and the best of
several passes counts (a shared machine only ever adds time). Bytes per token
count the weights only, at the encoding each engine reads them in (the KV
cache of a 128-192-token context adds a few MB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: Bytes per weight of a matrix at each precision: fp32; 8-bit and 4-bit in blocks of 32 with an fp16 scale
#: (llama.cpp's q8_0 / q4_0 layout; agentd's and onnxruntime-genai's int4 blocks are the same size).
BYTES_PER_WEIGHT = {"fp32": 4.0, "int8": 34 / 32, "int4": 18 / 32}


@dataclass(frozen=True)
class Bandwidth:
    """A measured read bandwidth."""

    gb_per_s: float
    #: Size of the buffer summed, bytes, and the passes the best was taken over.
    buffer_bytes: int
    passes: int
    threads: int

    def bound_tokens_per_s(self, bytes_per_token: float) -> float:
        """The decode speed that reading ``bytes_per_token`` at this bandwidth allows."""
        return self.gb_per_s * 1e9 / bytes_per_token


def measure(threads: int, buffer_mb: int = 1024, passes: int = 7) -> Bandwidth:
    """Best read bandwidth over ``passes`` sums of a ``buffer_mb`` float32 buffer, with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    buffer = torch.ones(buffer_mb * (1 << 20) // 4, dtype=torch.float32)
    buffer.sum()  # page the buffer in
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - started)
    size = buffer.numel() * 4
    del buffer
    return Bandwidth(size / best / 1e9, size, passes, threads)


def weight_bytes_per_token(counts: dict[str, int], precision: str) -> float:
    """Bytes a decode step reads: matrices and the (tied) embedding/LM head at ``precision``, vectors at fp32."""
    per_weight = BYTES_PER_WEIGHT[precision]
    return (counts["matrix"] + counts["embedding"]) * per_weight + counts["vector"] * 4.0
