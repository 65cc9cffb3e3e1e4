"""Which CPU matmul could run quantised weights in the torch backends: one decode row, SmolLM2-135M's shapes.

Side by side in one run, per weight shape (the fused QKV, gate+up, down and
the tied LM head), each timed as the fastest of N calls after warm-up:

* fp32, oneDNN-packed (what agentd runs today, :mod:`agentd.plugins.projection`);
* fp32 ``F.linear`` (MKL);
* int8 weight-only, per-channel scales: ``torch._weight_int8pack_mm``;
* int4 weight-only, groups of 32 with scale and zero point (llama.cpp Q4_1's
  shape): ``torch._weight_int4pack_mm_for_cpu`` with bfloat16 activations
  (the only activation dtype it is fast with; float32 is a slow fallback).

Accuracy is reported against the same quantised weights dequantised in fp32
(what the kernel should compute), as a relative error of the output row.

    python benchmarks/bench_int4_kernel.py --markdown docs/bench_int4_kernel.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from bench_planner import cpu_model  # noqa: E402

#: (out, in) of SmolLM2-135M's projections: fused QKV, gate+up, down, the tied LM head.
SHAPES = ((960, 576), (3072, 576), (576, 1536), (49152, 576))
GROUP = 32


def fastest_ms(run: Callable[[], object], calls: int) -> float:
    for _ in range(5):
        run()
    best = float("inf")
    for _ in range(calls):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes 0..15, scales and zero points per group of :data:`GROUP` (w = (q - 8) * scale + zero)."""
    out, inn = weight.shape
    groups = weight.reshape(out, inn // GROUP, GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-8)
    codes = torch.clamp(torch.round((groups - low) / scale), 0, 15)
    zero = low + 8 * scale
    dequantised = ((codes - 8) * scale + zero).reshape(out, inn)
    return codes.to(torch.int32).reshape(out, inn), torch.stack([scale[..., 0], zero[..., 0]], -1), dequantised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    from agentd.plugins.projection import _reorder, linear

    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for out, inn in SHAPES:
            weight, x = torch.randn(out, inn), torch.randn(1, inn)
            packed = _reorder(weight)
            scales8 = weight.abs().amax(dim=1) / 127
            codes8 = torch.clamp(torch.round(weight / scales8[:, None]), -127, 127).to(torch.int8)
            codes4, scales_zeros, dequantised4 = int4_groups(weight)
            packed4 = torch._convert_weight_to_int4pack_for_cpu(codes4, 8)
            scales_zeros = scales_zeros.transpose(0, 1).contiguous().to(torch.bfloat16)  # (in/G, out, 2)
            x16 = x.to(torch.bfloat16)
            times = {
                "fp32 packed": fastest_ms(lambda: linear(x, packed, None), args.calls),
                "fp32 F.linear": fastest_ms(lambda: F.linear(x, weight), args.calls),
                "int8 weight-only": fastest_ms(lambda: torch._weight_int8pack_mm(x, codes8, scales8), args.calls),
                "int4 weight-only (bf16 act.)": fastest_ms(
                    lambda: torch._weight_int4pack_mm_for_cpu(x16, packed4, GROUP, scales_zeros), args.calls),
            }
            reference8 = x @ (codes8.float() * scales8[:, None]).T
            reference4 = x @ dequantised4.T
            got8 = torch._weight_int8pack_mm(x, codes8, scales8)
            got4 = torch._weight_int4pack_mm_for_cpu(x16, packed4, GROUP, scales_zeros).float()
            errors = {"int8": float((got8 - reference8).norm() / reference8.norm()),
                      "int4": float((got4 - reference4).norm() / reference4.norm())}
            rows.append(((out, inn), times, errors))

    names = list(rows[0][1])
    lines = [
        "# Quantised matmul kernels on this CPU (one decode row)",
        "",
        f"Command: `python benchmarks/bench_int4_kernel.py --calls {args.calls}`  ",
        f"Machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Each time: the fastest of {args.calls} calls, ms.",
        "",
        "| shape (out x in) | " + " | ".join(names) + " | int4 vs fp32 packed | rel. error int8 / int4 |",
        "|---" * (len(names) + 3) + "|",
    ]
    for (out, inn), times, errors in rows:
        cells = " | ".join(f"{times[n]:.4f}" for n in names)
        ratio = times["fp32 packed"] / times["int4 weight-only (bf16 act.)"]
        lines.append(f"| {out} x {inn} | {cells} | {ratio:.2f}x faster | {errors['int8']:.1e} / {errors['int4']:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown is not None:
        tmp = args.markdown.with_name(f".{args.markdown.name}.tmp")
        tmp.write_text(text)
        tmp.replace(args.markdown)


if __name__ == "__main__":
    main()
