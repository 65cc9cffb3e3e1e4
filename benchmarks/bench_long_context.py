"""Decode speed and memory against context length: a transformer beside Mamba and RWKV-4.

The picture that motivates agentd: a transformer's KV cache grows with every
token and its per-token attention cost with the context; a state-space model
or RWKV keeps a fixed-size state. Three random-weight models, fp32, batch 1,
all run by agentd's own backends:

* ``transformer``: Llama at SmolLM2-135M's shape (vocab 49152, hidden 576,
  30 layers, 9 heads over 3 KV heads, intermediate 1536, tied embeddings);
* ``mamba``: mamba-130m's shape (vocab 50280, hidden 768, 24 layers, state
  16, conv 4, expand 2);
* ``rwkv4``: rwkv-4-169m's shape (vocab 50277, hidden 768, 12 layers).

For each model and context (default 128, 2048, 8192), in a fresh subprocess so
its memory figures are its own: load the model, prefill the context in pieces
through ``backend.prefill`` (untimed), reset the peak-RSS mark, then decode
greedily ``--warmup`` untimed steps and ``--rounds`` x ``--steps`` timed ones
through ``backend.decode``. Reported: median per-step latency as tokens/s (and
the 25th-75th percentile band of the step times, as a noise gauge),
``backend.state_bytes`` after decoding, the process's resident memory while
decoding (peak after the reset) and its peak over the whole run (loading and
prefill included).

Results accumulate in a JSON file (``--json``, by default in ``--workdir``)
keyed by model and context, so each case can be run alone and the table and
plot cover everything measured so far::

    python benchmarks/bench_long_context.py                                # all cases
    python benchmarks/bench_long_context.py --models mamba --contexts 8192  # one case
    python benchmarks/bench_long_context.py --report-only                   # table + plot from the JSON

Checkpoints are built once (with ``transformers``' ``save_pretrained``, a
dev-only dependency; agentd itself never imports it) into ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONTEXTS = (128, 2048, 8192)
DEFAULT_PLOT = ROOT / "docs" / "long_context.png"
#: Room past the longest context for warm-up and timed decode steps.
POSITION_MARGIN = 1024


# -- checkpoints -------------------------------------------------------------------
def _build_transformer(directory: Path, max_context: int) -> None:
    from bench_transformer import SMOLLM2_135M  # the one definition of the shape (this script's folder)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**SMOLLM2_135M, "max_position_embeddings": max_context + POSITION_MARGIN})
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)


def _build_mamba(directory: Path, max_context: int) -> None:
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(
        vocab_size=50280,
        hidden_size=768,
        num_hidden_layers=24,
        state_size=16,
        conv_kernel=4,
        expand=2,
        tie_word_embeddings=True,
    )
    MambaForCausalLM(config).save_pretrained(directory, safe_serialization=True)


def _build_rwkv4(directory: Path, max_context: int) -> None:
    from transformers import RwkvConfig, RwkvForCausalLM

    config = RwkvConfig(
        vocab_size=50277,
        hidden_size=768,
        num_hidden_layers=12,
        intermediate_size=4 * 768,
        context_length=max_context + POSITION_MARGIN,
        tie_word_embeddings=False,
    )
    RwkvForCausalLM(config).save_pretrained(directory, safe_serialization=True)


@dataclass(frozen=True)
class ModelCase:
    """One benchmarked model: how to label it and how to build its checkpoint."""

    label: str
    build: Callable[[Path, int], None]


MODELS: dict[str, ModelCase] = {
    "transformer": ModelCase("Llama (SmolLM2-135M shape)", _build_transformer),
    "mamba": ModelCase("Mamba (mamba-130m shape)", _build_mamba),
    "rwkv4": ModelCase("RWKV-4 (rwkv-4-169m shape)", _build_rwkv4),
}


def ensure_checkpoint(name: str, workdir: Path, max_context: int) -> Path:
    """``workdir/name-ctxN``, built once in a subprocess (so the builder's memory is freed)."""
    directory = workdir / f"{name}-ctx{max_context}"
    if not (directory / "config.json").is_file():
        print(f"building {name} checkpoint in {directory} ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, __file__, "--build", name, "--workdir", str(workdir), "--max-context", str(max_context)],
            check=True,
        )
    return directory


def _build_main(name: str, workdir: Path, max_context: int) -> None:
    import torch

    torch.manual_seed(0)
    directory = workdir / f"{name}-ctx{max_context}"
    staging = directory.with_name(directory.name + ".partial")
    MODELS[name].build(staging, max_context)
    staging.rename(directory)  # a crashed build never looks finished


# -- one measurement (runs in its own process) ---------------------------------------
def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_case(path: Path, context: int, args: argparse.Namespace) -> dict[str, Any]:
    """Prefill ``context`` tokens, then time greedy decode steps; memory figures in bytes."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import agentd

    backend = agentd.load_model(path).backend
    vocab = backend.info.vocab_size
    prompt = np.random.default_rng(0).integers(0, vocab, size=context, dtype=np.int64)

    state = backend.new_state()
    start = time.perf_counter()
    for offset in range(0, context, args.prefill_piece):
        logits = backend.prefill(prompt[offset : offset + args.prefill_piece], state)
    prefill_seconds = time.perf_counter() - start

    reset = _reset_peak_rss()
    token = np.array([int(logits[-1].argmax())])
    for _ in range(args.warmup):
        token = np.array([int(backend.decode(token, [state])[0].argmax())])
    steps: list[float] = []
    for _ in range(args.rounds * args.steps):
        start = time.perf_counter()
        logits = backend.decode(token, [state])
        steps.append(time.perf_counter() - start)
        token = np.array([int(logits[0].argmax())])

    quartiles = statistics.quantiles(steps, n=4)
    return {
        "context": context,
        "threads": args.threads,
        "steps": len(steps),
        "median_step_s": statistics.median(steps),
        "p25_step_s": quartiles[0],
        "p75_step_s": quartiles[2],
        "tokens_per_s": 1.0 / statistics.median(steps),
        "prefill_s": prefill_seconds,
        "state_bytes": backend.state_bytes(state),
        "state_bytes_per_token": backend.info.state_bytes_per_token,
        "state_bytes_per_sequence": backend.info.state_bytes_per_sequence,
        "decode_rss_bytes": _proc_status_kib("VmHWM") * 1024 if reset else None,
        "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def run_case(name: str, path: Path, context: int, args: argparse.Namespace) -> dict[str, Any]:
    """``measure_case`` in a fresh interpreter: its RSS holds one model and one context only."""
    command = [
        sys.executable, __file__, "--case", name, str(path), str(context),
        "--threads", str(args.threads), "--prefill-piece", str(args.prefill_piece),
        "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_paired(path: Path, contexts: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Decode speed at every context in one process, steps interleaved round-robin.

    One prompt is prefilled up to the longest context; at each shorter context
    the state is snapshotted with ``save_state``/``load_state``. Then each round
    runs one decode step on every state in turn, so load drifting on a shared
    machine hits every context alike and the ratios between them stay fair.
    """
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import agentd

    backend = agentd.load_model(path).backend
    prompt = np.random.default_rng(0).integers(0, backend.info.vocab_size, size=max(contexts), dtype=np.int64)
    state, done, states, tokens = backend.new_state(), 0, {}, {}
    for context in sorted(contexts):
        for offset in range(done, context, args.prefill_piece):
            logits = backend.prefill(prompt[offset : min(offset + args.prefill_piece, context)], state)
        done = context
        states[context] = backend.load_state(backend.save_state(state))
        tokens[context] = np.array([int(logits[-1].argmax())])
    steps: dict[int, list[float]] = {context: [] for context in contexts}
    for round_index in range(args.warmup + args.rounds * args.steps):
        order = contexts[round_index % len(contexts) :] + contexts[: round_index % len(contexts)]
        for context in order:
            start = time.perf_counter()
            logits = backend.decode(tokens[context], [states[context]])
            elapsed = time.perf_counter() - start
            tokens[context] = np.array([int(logits[0].argmax())])
            if round_index >= args.warmup:
                steps[context].append(elapsed)
    return {
        str(context): {
            "threads": args.threads,
            "tokens_per_s": 1.0 / statistics.median(times),
            "p25_step_s": statistics.quantiles(times, n=4)[0],
            "p75_step_s": statistics.quantiles(times, n=4)[2],
        }
        for context, times in steps.items()
    }


def run_paired(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--paired-case", str(path), *map(str, args.contexts),
        "--threads", str(args.threads), "--prefill-piece", str(args.prefill_piece),
        "--warmup", str(args.warmup), "--rounds", str(args.rounds), "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------
MIB = 1 << 20


Summary = dict[str, Any]


def summarize(runs: list[dict[str, Any]]) -> Summary:
    """One case over its runs (sweeps): medians, and the band the decode speed moved in.

    The band is the lowest to highest run's tokens/s when there are several
    runs (machine load drifting between sweeps), else the single run's
    25th-75th percentile of step times.
    """
    speeds = [run["tokens_per_s"] for run in runs]
    if len(runs) > 1:
        band = (min(speeds), max(speeds))
    else:
        band = (1 / runs[0]["p75_step_s"], 1 / runs[0]["p25_step_s"])
    decode_rss = [run["decode_rss_bytes"] for run in runs if run["decode_rss_bytes"]]
    return {
        "runs": len(runs),
        "threads": sorted({run["threads"] for run in runs}),
        "tokens_per_s": statistics.median(speeds),
        "band": band,
        "state_bytes": statistics.median(run["state_bytes"] for run in runs),
        "decode_rss_bytes": statistics.median(decode_rss) if len(decode_rss) == len(runs) else None,
        "peak_rss_bytes": statistics.median(run["process_peak_rss_bytes"] for run in runs),
        "prefill_s": statistics.median(run["prefill_s"] for run in runs),
    }


def _change(cases: dict[int, Summary], key: str) -> str:
    """Change of ``key`` from the shortest to the longest measured context, in percent."""
    first, last = cases[min(cases)][key], cases[max(cases)][key]
    if len(cases) < 2 or first is None or last is None:
        return "n/a"
    return f"{100.0 * (last - first) / first:+.1f}%"


def markdown_table(summaries: dict[str, dict[int, Summary]]) -> str:
    """One row per model and context, then each model's change from shortest to longest context."""
    lines = [
        "| model | context | decode tok/s (band) | runs | state MB | RSS while decoding MB | peak RSS MB | prefill s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, cases in summaries.items():
        for context, r in sorted(cases.items()):
            decode_rss = f"{r['decode_rss_bytes'] / MIB:.0f}" if r["decode_rss_bytes"] else "n/a"
            lines.append(
                f"| {MODELS[name].label} | {context} | {r['tokens_per_s']:.1f} ({r['band'][0]:.1f}-{r['band'][1]:.1f}) "
                f"| {r['runs']} | {r['state_bytes'] / MIB:.3f} | {decode_rss} | {r['peak_rss_bytes'] / MIB:.0f} "
                f"| {r['prefill_s']:.1f} |"
            )
    lines += [
        "",
        "| model | contexts | decode tok/s change | state bytes change | RSS while decoding change |",
        "|---|---|---:|---:|---:|",
    ]
    for name, cases in summaries.items():
        lines.append(
            f"| {MODELS[name].label} | {min(cases)} → {max(cases)} | {_change(cases, 'tokens_per_s')} "
            f"| {_change(cases, 'state_bytes')} | {_change(cases, 'decode_rss_bytes')} |"
        )
    return "\n".join(lines)


def summarize_paired(runs: list[dict[str, Any]]) -> Summary:
    """One context of the interleaved measurement: median over runs, band over runs (or quartiles)."""
    speeds = [run["tokens_per_s"] for run in runs]
    band = (min(speeds), max(speeds)) if len(runs) > 1 else (1 / runs[0]["p75_step_s"], 1 / runs[0]["p25_step_s"])
    return {"runs": len(runs), "threads": [runs[0]["threads"]], "tokens_per_s": statistics.median(speeds), "band": band}


def paired_table(paired: dict[str, dict[int, Summary]]) -> str:
    """Decode tokens/s per context from the interleaved measurement, and the change shortest -> longest."""
    contexts = sorted({c for cases in paired.values() for c in cases})
    lines = [
        "| model (interleaved, one process) | " + " | ".join(f"tok/s @ {c}" for c in contexts) + " | change |",
        "|---|" + "---:|" * (len(contexts) + 1),
    ]
    for name, cases in paired.items():
        cells = [
            f"{cases[c]['tokens_per_s']:.1f} ({cases[c]['band'][0]:.1f}-{cases[c]['band'][1]:.1f})" if c in cases else ""
            for c in contexts
        ]
        lines.append(f"| {MODELS[name].label} | " + " | ".join(cells) + f" | {_change(cases, 'tokens_per_s')} |")
    return "\n".join(lines)


def plot(summaries: dict[str, dict[int, Summary]], paired: dict[str, dict[int, Summary]], out: Path) -> None:
    """Two panels over context (log x): decode tokens/s with its band, and state memory (log y).

    The speed panel shows the interleaved measurement where there is one (its
    ratios between contexts are the fair ones), else the per-case runs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, cases in summaries.items():
        xs = sorted(cases)
        memory.plot(xs, [cases[x]["state_bytes"] / MIB for x in xs], marker="o", label=MODELS[name].label)
    for name, cases in (paired or summaries).items():
        xs = sorted(cases)
        rows = [cases[x] for x in xs]
        line = speed.plot(xs, [r["tokens_per_s"] for r in rows], marker="o", label=MODELS[name].label)[0]
        speed.fill_between(xs, [r["band"][0] for r in rows], [r["band"][1] for r in rows], alpha=0.15, color=line.get_color())
    threads = sorted({t for cases in (paired or summaries).values() for r in cases.values() for t in r["threads"]})
    speed.set(
        xscale="log",
        xlabel="context (tokens)",
        ylabel="decode tokens/s (median; band: spread)",
        title=f"Decode speed{' (interleaved)' if paired else ''}, batch 1, fp32, {'/'.join(map(str, threads))} thread(s)",
    )
    memory.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="MB (log)", title="State per sequence")
    for axis in (speed, memory):
        axis.grid(True, which="major", alpha=0.3)
        axis.set_xticks(sorted({x for cases in summaries.values() for x in cases}))
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.legend(fontsize=8)
    speed.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"machine": {}, "results": {}}


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_before": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--contexts", nargs="+", type=int, default=list(DEFAULT_CONTEXTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for every model")
    parser.add_argument("--prefill-piece", type=int, default=512, help="tokens per backend.prefill call")
    parser.add_argument("--warmup", type=int, default=4, help="untimed decode steps")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of --steps decode steps")
    parser.add_argument("--steps", type=int, default=32, help="decode steps per round")
    parser.add_argument("--sweeps", type=int, default=1, help="times every case is run (fresh process each)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/agentd-long-context"), help="checkpoint cache")
    parser.add_argument(
        "--json", type=Path, help="results file; new runs are added to a case's earlier ones (default: WORKDIR/results.json)"
    )
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--report-only", action="store_true", help="table and plot from --json, no measuring")
    parser.add_argument("--max-context", type=int, default=max(DEFAULT_CONTEXTS), help=argparse.SUPPRESS)
    parser.add_argument("--build", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--case", nargs=3, metavar=("MODEL", "PATH", "CONTEXT"), help=argparse.SUPPRESS)
    parser.add_argument("--paired-case", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument(
        "--paired", action="store_true", help="also time all contexts in one process, decode steps interleaved"
    )
    args = parser.parse_args()

    if args.build:
        _build_main(args.build, args.workdir, args.max_context)
        return
    if args.paired_case:
        contexts = [int(c) for c in args.paired_case[1:]]
        print(json.dumps(measure_paired(Path(args.paired_case[0]), contexts, args)))
        return
    if args.case:
        print(json.dumps(measure_case(Path(args.case[1]), int(args.case[2]), args)))
        return

    args.json = args.json or args.workdir / "results.json"
    stored = _load_results(args.json)
    if not args.report_only:
        if max(args.contexts) > args.max_context:
            parser.error(f"--contexts go up to {args.max_context} (the checkpoints' position limit)")
        args.workdir.mkdir(parents=True, exist_ok=True)
        stored["machine"] = _machine()
        print(f"load average before: {stored['machine']['load_average_before']}", file=sys.stderr)
        paths = {name: ensure_checkpoint(name, args.workdir, args.max_context) for name in args.models}
        # Interleaved (every model at one context, then the next context), sweep after
        # sweep, so load drifting on a shared machine hits every case alike.
        for sweep in range(args.sweeps):
            for context in args.contexts:
                for name in args.models:
                    result = run_case(name, paths[name], context, args)
                    print(
                        f"sweep {sweep + 1}/{args.sweeps} {name:12s} ctx {context:5d}: "
                        f"{result['tokens_per_s']:7.1f} tok/s, state {result['state_bytes'] / MIB:8.3f} MB, "
                        f"peak RSS {result['process_peak_rss_bytes'] / MIB:6.0f} MB, prefill {result['prefill_s']:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    stored["results"].setdefault(name, {}).setdefault(str(context), []).append(result)
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(stored, indent=1) + "\n")  # after every case: partial runs count
        if args.paired:
            for name in args.models:
                paired = run_paired(paths[name], args)
                print(f"paired {name}: " + ", ".join(f"ctx {c} {r['tokens_per_s']:.1f} tok/s" for c, r in paired.items()),
                      file=sys.stderr, flush=True)  # fmt: skip
                for context, result in paired.items():
                    stored.setdefault("paired", {}).setdefault(name, {}).setdefault(context, []).append(result)
                args.json.write_text(json.dumps(stored, indent=1) + "\n")
        stored["machine"]["load_average_after"] = os.getloadavg()
        args.json.write_text(json.dumps(stored, indent=1) + "\n")
    summaries = {
        name: {int(context): summarize(runs) for context, runs in stored["results"][name].items()}
        for name in MODELS
        if stored["results"].get(name)
    }
    paired = {
        name: {int(context): summarize_paired(runs) for context, runs in stored.get("paired", {})[name].items()}
        for name in MODELS
        if stored.get("paired", {}).get(name)
    }
    print(markdown_table(summaries))
    if paired:
        print("\n" + paired_table(paired))
    if summaries:
        plot(summaries, paired, args.plot)
        print(f"\nplot: {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
