"""Projection kernels chosen by measurement vs always packed vs always dense, side by side in one run.

The SmolLM2-135M-shaped random Llama of ``bench_transformer.py`` is loaded three
times in this process, with ``AGENTD_PROJECTION`` = ``packed``, ``dense`` and
``measure`` (the default: each weight shape gets the kernel that was faster on
this CPU, :mod:`agentd.plugins.kernel_choice`, with a fresh cache), next to
transformers (sdpa) as the outside reference. Decode tokens/s (64 greedy tokens
after a 128-token prompt) and 128-token prefill seconds, the implementations
interleaved within every repeat; medians and paired ratios.

    python benchmarks/bench_kernel_choice.py --repeats 5 --markdown docs/bench_kernel_choice.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_planner import cpu_model  # noqa: E402
from bench_transformer import AgentdRunner, HFRunner, decode_tokens_per_second, interleaved, make_checkpoint, prefill_seconds  # noqa: E402

MODES = ("packed", "dense", "measure")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    from agentd.plugins import kernel_choice

    with tempfile.TemporaryDirectory(prefix="bench_kernel_choice_") as tmp:
        directory = Path(tmp) / "model"
        make_checkpoint(directory)
        os.environ["AGENTD_CACHE_DIR"] = str(Path(tmp) / "cache")
        runners = {}
        for mode in MODES:
            os.environ["AGENTD_PROJECTION"] = mode
            kernel_choice.reset()
            runners[f"agentd {mode}"] = AgentdRunner(directory)
            if mode == "measure":
                picks = kernel_choice.summary()
                timings = kernel_choice.choices()
        runners["transformers sdpa"] = HFRunner(directory, "sdpa")
        for runner in runners.values():
            cache, token = runner.prefill(torch.randint(0, 1000, (16,)).numpy())
            runner.decode(cache, token)
        decode = interleaved(runners, args.repeats, decode_tokens_per_second)
        prefill = interleaved(runners, args.repeats, lambda r: prefill_seconds(r, 128))

    med_decode = {name: statistics.median(v) for name, v in decode.items()}
    med_prefill = {name: statistics.median(v) for name, v in prefill.items()}
    paired = [m / p for m, p in zip(decode["agentd measure"], decode["agentd packed"])]
    lines = [
        "# Projection kernel chosen by measurement",
        "",
        f"Command: `python benchmarks/bench_kernel_choice.py --repeats {args.repeats}`  ",
        f"Machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads  ",
        "Model: random SmolLM2-135M shape (float32), batch 1, greedy; implementations interleaved per repeat.",
        "",
        "| | decode tok/s (64 after 128) | prefill 128 tokens, s |",
        "|---|---|---|",
    ]
    for name in runners:
        lines.append(f"| {name} | {med_decode[name]:.1f} | {med_prefill[name]:.3f} |")
    lines += [
        "",
        f"Paired decode ratio, measured choice / always packed: median {statistics.median(paired):.3f} "
        f"(per repeat: {', '.join(f'{r:.3f}' for r in paired)}).  ",
        f"measured / transformers sdpa: {med_decode['agentd measure'] / med_decode['transformers sdpa']:.2f}x decode.",
        "",
        f"Kernels picked: {picks}.",
        "",
        "| weight shape | packed ms | dense ms | picked |",
        "|---|---|---|---|",
    ]
    for shape, (kernel, packed_ms, dense_ms) in sorted(timings.items()):
        lines.append(f"| {shape} | {packed_ms:.4f} | {dense_ms:.4f} | {kernel} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown is not None:
        tmp_path = args.markdown.with_name(f".{args.markdown.name}.tmp")
        tmp_path.write_text(text)
        tmp_path.replace(args.markdown)


if __name__ == "__main__":
    main()
