"""Projection kernels on CPU: row-major ``(out, in)``, transposed ``(in, out)``, oneDNN-packed.

A decode step at batch 1 multiplies one row by every weight matrix of the
model once, so it is bound by how fast the kernel streams the weights. This
measures, for the real projection shapes of mamba-130m and rwkv-4-169m
(random weights, fp32 unless ``--dtypes`` says otherwise), the ways to compute
``y = x W^T (+ b)``:

* ``linear``      ``F.linear(x, W, b)`` with ``W`` ``(out, in)`` contiguous (as checkpoints store it);
* ``matmul_t``    ``x @ Wt`` with ``Wt = W.t().contiguous()`` ``(in, out)`` (no bias);
* ``addmm_t``     ``torch.addmm(b, x, Wt)`` (bias fused);
* ``linear_view`` ``F.linear(x, Wt.t(), b)``: the transposed storage seen as ``(out, in)``,
  the layout :mod:`agentd.plugins.projection` used before it switched to ``packed``;
* ``packed``      :func:`agentd.plugins.projection.linear` on :func:`~agentd.plugins.projection.pack_weight`
  (oneDNN inner product, rows padded to ``ROW_BUCKETS``): what every torch backend now serves with;
* ``gather_*``    an embedding row gather from ``(V, C)`` storage vs from the transposed
  ``(C, V)`` storage (the price of tying a transposed LM head to the embedding).

Two workloads per model: the stack of layer projections of ``--layers`` layers
(about 100 MB, well above the 32 MB L3, as in a real decode step) and the LM
head. Batches 1/4/8/128, 1 and 2 intra-op threads. The machine is shared and
noisy, so the variants are interleaved round by round (rotating the order) and
the medians and their ratios to ``linear`` are reported.

    python benchmarks/bench_projection.py                 # full run (results go to docs/bench_projection.md)
    python benchmarks/bench_projection.py --rounds 3 --batches 1 --threads 1   # quick look
    python benchmarks/bench_projection.py --threads 1 --batches 1 8 --dtypes bfloat16 float16
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from agentd.plugins.projection import linear as packed_linear
from agentd.plugins.projection import pack_weight

#: (out, in, has_bias) of one layer's projections, in the order a step runs them.
SHAPES: dict[str, dict[str, object]] = {
    "mamba-130m": {
        "layer": [(3072, 768, False), (80, 1536, False), (1536, 48, True), (768, 1536, False)],
        "head": (50280, 768),
        "layers": 6,  # 6 x 3.7 M params = 88 MB
    },
    "rwkv-4-169m": {
        "layer": [(768, 768, False)] * 4 + [(3072, 768, False), (768, 768, False), (768, 3072, False)],
        "head": (50277, 768),
        "layers": 3,  # 3 x 7.7 M params = 92 MB
    },
}


#: Column order of the tables; speed-ups are relative to the first.
VARIANTS = ("linear", "matmul_t", "addmm_t", "linear_view", "packed")


@dataclass
class Weights:
    """One matrix in the three layouts plus a bias (None when the layer has none)."""

    w: torch.Tensor  # (out, in)
    wt: torch.Tensor  # (in, out), contiguous
    bias: torch.Tensor | None  # (out,)
    packed: torch.Tensor  # oneDNN blocked layout (or w itself where oneDNN is unusable)


def both(w: torch.Tensor, bias: torch.Tensor | None) -> Weights:
    return Weights(w, w.t().contiguous(), bias, pack_weight(w))


def make_weights(shapes: list[tuple[int, int, bool]], layers: int, dtype: torch.dtype) -> list[Weights]:
    out = []
    for _ in range(layers):
        for rows, cols, has_bias in shapes:
            w = (torch.randn(rows, cols) / cols**0.5).to(dtype)
            out.append(both(w, torch.randn(rows, dtype=dtype) if has_bias else None))
    return out


def variants(stack: list[Weights]) -> dict[str, Callable[[torch.Tensor], None]]:
    """Each variant runs the whole stack on its own input row(s); x is (B, in) per matrix."""

    def linear(xs: list[torch.Tensor]) -> None:
        for p, x in zip(stack, xs):
            F.linear(x, p.w, p.bias)

    def matmul_t(xs: list[torch.Tensor]) -> None:
        for p, x in zip(stack, xs):
            x @ p.wt

    def addmm_t(xs: list[torch.Tensor]) -> None:
        for p, x in zip(stack, xs):
            torch.addmm(p.bias, x, p.wt) if p.bias is not None else torch.mm(x, p.wt)

    def linear_view(xs: list[torch.Tensor]) -> None:
        for p, x in zip(stack, xs):
            F.linear(x, p.wt.t(), p.bias)

    def packed(xs: list[torch.Tensor]) -> None:
        for p, x in zip(stack, xs):
            packed_linear(x, p.packed, p.bias)

    return {"linear": linear, "matmul_t": matmul_t, "addmm_t": addmm_t, "linear_view": linear_view, "packed": packed}


def interleaved(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median (CPU seconds, wall seconds) per variant, interleaved with a rotating order.

    CPU time (all threads of the process) leaves out the time the OS hands the
    core to another engineer's job, so on this shared box it is the steadier
    clock; memory stalls still count in it. Wall time is what a user waits.
    """
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for name in names:
        fns[name]()  # warm up
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            fns[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in names}


def bench_model(name: str, batches: list[int], rounds: int, dtype: torch.dtype) -> None:
    spec = SHAPES[name]
    torch.manual_seed(0)
    stack = make_weights(spec["layer"], spec["layers"], dtype)  # type: ignore[arg-type]
    rows, cols = spec["head"]  # type: ignore[misc]
    head_w = (torch.randn(rows, cols) / cols**0.5).to(dtype)
    head = [both(head_w, None)]
    size = head_w.element_size()
    stack_bytes = sum(p.w.numel() * size for p in stack)
    print(f"\n## {name}, {str(dtype).removeprefix('torch.')}: {spec['layers']} layers' projections "
          f"({stack_bytes / 1e6:.0f} MB), head {rows}x{cols}")
    print(f"threads={torch.get_num_threads()}")
    print(f"{'workload':<8} {'B':>4} " + " ".join(f"{v:>20}" for v in VARIANTS))
    for workload, weights in (("layers", stack), ("head", head)):
        nbytes = sum(p.w.numel() * size for p in weights)
        for batch in batches:
            xs = [torch.randn(batch, p.w.shape[1], dtype=dtype) for p in weights]
            fns = {v: (lambda fn=fn: fn(xs)) for v, fn in variants(weights).items()}
            reps = rounds if batch <= 8 else max(3, rounds // 3)
            med = interleaved(fns, reps)
            base_cpu, base_wall = med["linear"]
            cells = [f"{base_cpu * 1e3:7.2f}ms {nbytes / base_cpu / 1e9:5.1f}GB/s"]
            for v in VARIANTS[1:]:
                cpu, wall = med[v]
                cells.append(f"{base_cpu / cpu:4.2f}x (wall {base_wall / wall:4.2f}x)")
            print(f"{workload:<8} {batch:>4} " + " ".join(f"{c:>20}" for c in cells))
    # Embedding gather: (V, C) rows vs columns of the transposed (C, V) storage.
    for tokens in (1, 512):
        ids = torch.randint(0, rows, (tokens,))
        fns = {
            "gather_rows": lambda: head_w[ids],
            "gather_transposed": lambda: head[0].wt.t()[ids],
            "index_select_dim1": lambda: head[0].wt.index_select(1, ids).t(),
        }
        med = interleaved(fns, rounds)
        print(f"gather T={tokens:<4} " + "  ".join(f"{k} {cpu * 1e6:8.1f}us" for k, (cpu, _) in med.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 128])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    few = max(3, args.rounds // 3)
    print(f"# torch {torch.__version__}, medians of {args.rounds} interleaved rounds ({few} at B>8)")
    print("# linear: median CPU time and weight bytes / CPU time; "
          "others: speed-up vs linear in CPU time (and wall time)")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype in args.dtypes:
            for name in args.models:
                bench_model(name, args.batches, args.rounds, getattr(torch, dtype))


if __name__ == "__main__":
    main()
