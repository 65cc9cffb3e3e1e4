"""Decode attention of a batch: per-sequence loop vs slot pool vs gather into a padded batch.

The choice behind ``plugins/transformer/kv_cache.py``: one decode step's
attention (30 layers, SmolLM2-135M's 9 query heads over 3 KV heads of 64, one
new token per sequence, lengths differing by up to 10%) for B sequences, three
ways, each with the library's own functions:

* ``loop``: every sequence has its own cache (``(KVH, D, cap)`` keys): write
  the new key/value, :func:`decode_attention` per sequence (what decode did
  before the pool, at batch 1 still does);
* ``pool``: all sequences are slots of one arena ``(S, KVH, D, cap)``: one
  indexed write, one :func:`batched_decode_attention` over a strided view;
* ``gather``: per-sequence caches copied into one padded batch tensor per layer,
  then the same batched call (what a backend without a pool would do).

Variants are interleaved within every repeat; medians and paired ratios.

    flock /tmp/agentd-bench.lock python benchmarks/bench_batched_attention.py
    python benchmarks/bench_batched_attention.py --contexts 160 --repeats 5   # quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import torch

from agentd.plugins.kernel_choice import cpu_model
from agentd.plugins.transformer.attention import batched_decode_attention, decode_attention

LAYERS, KV_HEADS, GROUPS, HEAD_DIM = 30, 3, 3, 64
BATCHES = (1, 4, 8, 16)


def make_case(batch: int, context: int) -> dict[str, Callable[[], None]]:
    """The three variants of one step at ``batch`` sequences of ~``context`` tokens."""
    capacity = -(-(context + 1) // 256) * 256
    lengths = [context - (b * context) // (10 * batch) for b in range(batch)]  # up to 10% shorter
    width = max(lengths) + 1
    positions = torch.tensor(lengths)
    hidden = (torch.arange(width) > positions[:, None])[:, None, None]  # (B, 1, 1, T)
    q = torch.randn(batch, KV_HEADS, GROUPS, HEAD_DIM) / math.sqrt(HEAD_DIM)
    new_k, new_v = torch.randn(batch, KV_HEADS, HEAD_DIM), torch.randn(batch, KV_HEADS, HEAD_DIM)
    own_k = [torch.randn(LAYERS, KV_HEADS, HEAD_DIM, capacity).unbind(0) for _ in range(batch)]
    own_v = [torch.randn(LAYERS, KV_HEADS, capacity, HEAD_DIM).unbind(0) for _ in range(batch)]
    arena_k = torch.randn(LAYERS, batch, KV_HEADS, HEAD_DIM, capacity).unbind(0)
    arena_v = torch.randn(LAYERS, batch, KV_HEADS, capacity, HEAD_DIM).unbind(0)
    slots = torch.arange(batch)
    out = torch.empty(batch, KV_HEADS, GROUPS, HEAD_DIM)

    def loop() -> None:
        for layer in range(LAYERS):
            for b, length in enumerate(lengths):
                keys, values = own_k[b][layer], own_v[b][layer]
                keys[:, :, length], values[:, length] = new_k[b], new_v[b]
                decode_attention(q[b], keys[:, :, : length + 1], values[:, : length + 1], scale=1.0, out=out[b])

    def pool() -> None:
        for layer in range(LAYERS):
            keys, values = arena_k[layer], arena_v[layer]
            keys[slots, :, :, positions] = new_k
            values[slots, :, positions] = new_v
            batched_decode_attention(q, keys[..., :width], values[:, :, :width], hidden, scale=1.0, out=out)

    def gather() -> None:
        for layer in range(LAYERS):
            keys = q.new_empty(batch, KV_HEADS, HEAD_DIM, width)
            values = q.new_empty(batch, KV_HEADS, width, HEAD_DIM)
            for b, length in enumerate(lengths):
                own_k[b][layer][:, :, length], own_v[b][layer][:, length] = new_k[b], new_v[b]
                keys[b] = own_k[b][layer][..., :width]
                values[b] = own_v[b][layer][:, :width]
            batched_decode_attention(q, keys, values, hidden, scale=1.0, out=out)

    return {"loop": loop, "pool": pool, "gather": gather}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", default="160,1000", help="tokens per sequence, comma-separated")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the daemon's default here: cores - 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} thread(s); {args.repeats} repeats, interleaved\n")
    print("| context | batch | loop (ms) | pool (ms) | gather (ms) | loop / pool | gather / pool |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for context in (int(c) for c in args.contexts.split(",")):
            for batch in BATCHES:
                case = make_case(batch, context)
                times: dict[str, list[float]] = {name: [] for name in case}
                for run in list(case.values()) * 2:  # warm-up
                    run()
                for _ in range(args.repeats):
                    for name, run in case.items():
                        started = time.perf_counter()
                        run()
                        times[name].append(time.perf_counter() - started)
                med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
                loop_ratio = statistics.median(a / b for a, b in zip(times["loop"], times["pool"]))
                gather_ratio = statistics.median(a / b for a, b in zip(times["gather"], times["pool"]))
                print(
                    f"| {context} | {batch} | {med['loop']:.2f} | {med['pool']:.2f} | {med['gather']:.2f} | "
                    f"{loop_ratio:.2f}× | {gather_ratio:.2f}× |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
