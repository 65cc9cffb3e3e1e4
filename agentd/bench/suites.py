"""The long-context curve and concurrency scaling, measured by the benchmarks that already exist.

``benchmarks/bench_long_context.py`` and ``benchmarks/bench_serving.py`` own
these measurements; this module calls their functions (it does not copy
them), so a change to either benchmark shows up in ``agentd bench`` too:

* long context: ``ensure_checkpoint`` + ``run_paired`` (decode steps at every
  context interleaved in one process, agentd's torch backends) for the
  transformer, Mamba and RWKV-4;
* concurrency: ``build_models`` + ``DaemonProcess`` + ``run_level``
  (``agentd serve`` as its own process, C simultaneous greedy streams).

They live in the source tree, not in the installed package: from a wheel
install, both suites are reported as skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import agentd

BENCHMARKS = Path(agentd.__file__).resolve().parent.parent / "benchmarks"

Progress = Callable[[str], None]


class SuiteUnavailable(Exception):
    """The suite cannot run here (reported as skipped, with this reason)."""


def benchmark_module(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported (its folder on ``sys.path``, as when it runs as a script)."""
    if not (BENCHMARKS / f"{name}.py").is_file():
        raise SuiteUnavailable(f"needs the source checkout's benchmarks/{name}.py (not in an installed package)")
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def long_context(contexts: list[int], threads: int, steps: int, rounds: int, models: list[str], work: Path,
                 progress: Progress = lambda label: None) -> dict[str, Any]:
    """Decode tok/s per context for each model (one process per model, contexts interleaved)."""
    bench = benchmark_module("bench_long_context")
    args = argparse.Namespace(contexts=contexts, threads=threads, prefill_piece=512, warmup=2, rounds=rounds, steps=steps)
    # The checkpoints' position limit: the longest context; bench_long_context adds its own margin.
    results: dict[str, Any] = {}
    for name in models:
        progress(f"long context: {name}")
        path = bench.ensure_checkpoint(name, work, max(contexts))
        measured = bench.run_paired(path, args)
        rows = sorted(({"context": int(c), **row} for c, row in measured.items()), key=lambda row: row["context"])
        results[name] = {"label": bench.MODELS[name].label, "contexts": rows}
    return {"threads": threads, "steps": rounds * steps, "results": results}


def concurrency(levels: list[int], threads: int, rounds: int, prompt_tokens: int, tokens: int, layers: int | None,
                progress: Progress = lambda label: None) -> dict[str, Any]:
    """Aggregate decode tok/s through ``agentd serve`` at each number of simultaneous streams."""
    bench = benchmark_module("bench_serving")
    from agentd.formats import open_checkpoint

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="agentd-bench-serving-", dir="/tmp") as tmp:
        root = Path(tmp)
        progress("concurrency: building models")
        paths = bench.build_models(root, layers)
        extra = ["--max-batch", str(max(levels)), "--max-queue", str(4 * max(levels)), "--prefix-cache-budget", "0",
                 "--threads", str(threads)]  # the daemon's own setting defaults to cores - 1
        progress("concurrency: starting agentd serve")
        with bench.DaemonProcess(paths, root / "bench.sock", root, extra, threads) as daemon:
            for name, path in paths.items():
                vocab = int(open_checkpoint(path).config["vocab_size"])
                bench.run_round(daemon.target, name, 1, 8, 4, vocab, seed=0)  # warm-up
                results[name] = []
                for level in levels:
                    progress(f"concurrency: {name}, {level} stream(s)")
                    results[name].append(bench.run_level(daemon.target, name, level, rounds, prompt_tokens, tokens, vocab))
    return {"threads": threads, "levels": levels, "rounds": rounds, "prompt_tokens": prompt_tokens, "tokens": tokens,
            "layers": layers, "results": results}
