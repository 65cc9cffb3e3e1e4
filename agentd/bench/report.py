"""``docs/BENCHMARKS.md`` and its plots, from one ``agentd bench`` run's results.

Everything is written to a temporary name in the target folder and renamed,
so an interrupted run never leaves a half-written report. The raw results go
next to the report as JSON (``BENCHMARKS.json``), so figures can be re-plotted
or compared with a later run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .bandwidth import BYTES_PER_WEIGHT, weight_bytes_per_token
from .harness import REFERENCE, EngineResult, comparison_pairs, paired_ratio

FAMILY_COLOURS = {"agentd torch": "#1f77b4", "agentd onnx": "#17becf", "transformers": "#7f7f7f",
                  "onnxruntime-genai": "#ff7f0e", "llama.cpp": "#2ca02c"}
MB = 1e6


def family(name: str) -> str:
    return next((f for f in FAMILY_COLOURS if name.startswith(f)), "other")


def results_of(model: dict[str, Any]) -> list[EngineResult]:
    return [EngineResult(**row) for row in model["results"]]


def bytes_per_token(result: EngineResult, counts: dict[str, int]) -> float | None:
    """The engine's own figure (llama.cpp: its GGUF), else the nominal one at its precision."""
    if result.bytes_per_token:
        return result.bytes_per_token
    return weight_bytes_per_token(counts, result.precision) if result.precision in BYTES_PER_WEIGHT else None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


# -- markdown ------------------------------------------------------------------------------------
def engine_table(model: dict[str, Any], bandwidth_gbs: float, prompt_tokens: int) -> list[str]:
    counts = model["parameters"]
    lines = [
        f"| engine | status | decode tok/s | prefill {prompt_tokens} tokens, s | weights read per token, MB "
        f"| bandwidth bound, tok/s | of the bound | RSS, MiB | greedy tokens = {REFERENCE} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results_of(model):
        decode, prefill = r.median("decode_tok_s"), r.median("prefill_s")
        per_token = bytes_per_token(r, counts) if r.status == "measured" else None
        bound = bandwidth_gbs * 1e9 / per_token if per_token else None
        status = r.status if r.status == "measured" else f"**{r.status}**: {r.reason}"
        if r.incidents:
            status += " (" + "; ".join(r.incidents) + ")"
        lines.append(
            f"| {r.name} | {status} | {_fmt(decode)} | {_fmt(prefill, 3)} | {_fmt(per_token and per_token / MB)} "
            f"| {_fmt(bound, 0)} | {_fmt(decode and bound and 100 * decode / bound, 0, '%')} | {_fmt(r.rss_mib, 0)} "
            f"| {r.info.get('same_tokens_as_reference', '—')} |"
        )
    return lines


def ratio_table(model: dict[str, Any]) -> list[str]:
    results = {r.name: r for r in results_of(model) if r.status == "measured"}
    pairs = comparison_pairs(list(results))
    if not pairs:
        return ["No agentd engine and peer were both measured on this model."]
    lines = ["| agentd engine | peer | decode speed, agentd / peer | prefill speed, agentd / peer |", "|---|---|---:|---:|"]
    for ours, theirs in pairs:
        decode = paired_ratio(results[ours], results[theirs], "decode_tok_s")
        prefill = paired_ratio(results[ours], results[theirs], "prefill_s")
        lines.append(f"| {ours} | {theirs} | {_fmt(decode, 2, '×')} | {_fmt(prefill, 2, '×')} |")
    return lines


def _ratio(model: dict[str, Any] | None, ours: str, theirs: str, key: str) -> float | None:
    if model is None:
        return None
    results = {r.name: r for r in results_of(model) if r.status == "measured"}
    if ours not in results or theirs not in results:
        return None
    return paired_ratio(results[ours], results[theirs], key)


def targets_table(data: dict[str, Any]) -> list[str]:
    """The issue's targets, each with the measured paired ratio (or why there is none)."""
    models = data["models"]
    rows: list[tuple[str, float | None, float]] = []
    for key, label in (("smollm2", "transformer"), ("mamba", "Mamba")):
        for ours, peer in (("agentd torch fp32", "llama.cpp f32"), ("agentd torch int8", "llama.cpp q8_0"),
                           ("agentd torch int4", "llama.cpp q4_0")):
            rows.append((f"{label} decode, {ours} vs {peer}", _ratio(models.get(key), ours, peer, "decode_tok_s"), 1.0))
    rows.append(("transformer decode, agentd onnx int4 vs onnxruntime-genai int4",
                 _ratio(models.get("smollm2"), "agentd onnx int4", "onnxruntime-genai int4", "decode_tok_s"), 1.2))
    rows.append(("Mamba prefill, agentd onnx int4 vs llama.cpp q4_0",
                 _ratio(models.get("mamba"), "agentd onnx int4", "llama.cpp q4_0", "prefill_s"), 1.0))
    for name, scale in concurrency_scaling(data.get("concurrency")).items():
        rows.append((f"{name} through the daemon, 8 streams vs 1 (aggregate decode)", scale, 6.0))
    lines = ["| target | measured | goal | met |", "|---|---:|---:|---|"]
    for label, value, goal in rows:
        met = "—" if value is None else ("yes" if value >= goal else "no")
        lines.append(f"| {label} | {_fmt(value, 2, '×')} | ≥ {goal:.1f}× | {met} |")
    return lines


def concurrency_scaling(suite: dict[str, Any] | None) -> dict[str, float | None]:
    if not suite or "results" not in suite:
        return {}
    scaling = {}
    for name, rows in suite["results"].items():
        by_level = {row["streams"]: row["decode_tps"] for row in rows}
        scaling[name] = by_level[8] / by_level[1] if 8 in by_level and 1 in by_level and by_level[1] else None
    return scaling


def kernel_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for key, model in data["models"].items():
        for r in results_of(model):
            if r.info.get("kernels"):
                lines.append(f"- {model['label']}, {r.name}: {r.info['kernels']}")
    if not lines:
        return ["No agentd torch engine ran, so no projection kernel was chosen."]
    remeasured = data.get("kernels_remeasured")
    head = (f"Re-measured for this run (`--remeasure-kernels`: {remeasured} cached verdicts of this CPU dropped first)."
            if remeasured is not None else "From the per-CPU cache where present (`--remeasure-kernels` measures again).")
    return [head, "", *lines]


def build_lines(data: dict[str, Any]) -> list[str]:
    seen: dict[str, str] = {}
    for model in data["models"].values():
        for r in results_of(model):
            if r.info.get("build"):
                took = f" ({r.info['build_s']} s)" if r.info.get("build_s") else ""
                seen.setdefault(r.info["build"], took)
    return [f"- `{command}`{took}" for command, took in seen.items()] or ["(nothing was built)"]


def long_context_lines(suite: dict[str, Any] | None) -> list[str]:
    if not suite:
        return ["Not run (`--suite long-context`)."]
    if "results" not in suite:
        return [f"**{suite['status']}**: {suite['reason']}"]
    contexts = sorted({row["context"] for model in suite["results"].values() for row in model["contexts"]})
    lines = [f"agentd torch backends, fp32, batch 1, {suite['threads']} thread(s); median of {suite['steps']} decode steps "
             "per context, the contexts' steps interleaved in one process (`benchmarks/bench_long_context.py`'s "
             "`run_paired`).", "",
             "| model | " + " | ".join(f"tok/s @ {c}" for c in contexts) + " | change |",
             "|---|" + "---:|" * (len(contexts) + 1)]
    for model in suite["results"].values():
        speeds = {row["context"]: row["tokens_per_s"] for row in model["contexts"]}
        change = 100 * (speeds[max(speeds)] - speeds[min(speeds)]) / speeds[min(speeds)] if len(speeds) > 1 else None
        cells = " | ".join(_fmt(speeds.get(c)) for c in contexts)
        lines.append(f"| {model['label']} | {cells} | {_fmt(change, 0, '%')} |")
    return lines


def concurrency_lines(suite: dict[str, Any] | None) -> list[str]:
    if not suite:
        return ["Not run (`--suite concurrency`)."]
    if "results" not in suite:
        return [f"**{suite['status']}**: {suite['reason']}"]
    layers = f", {suite['layers']} layers" if suite.get("layers") else ""
    lines = [f"`agentd serve` in its own process ({suite['threads']} thread(s){layers}), C client streams started together, "
             f"{suite['prompt_tokens']}-token prompts, {suite['tokens']} new tokens each, greedy; median of {suite['rounds']} "
             "rounds (`benchmarks/bench_serving.py`'s `run_level`). Decode tok/s is the steady state while every stream "
             "is decoding.", "",
             "| model | streams | decode tok/s | vs 1 stream | end-to-end tok/s | TTFT p50, ms | TTFT p99, ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in suite["results"].items():
        base = rows[0]["decode_tps"] if rows else None
        for row in rows:
            lines.append(f"| {name} | {row['streams']} | {_fmt(row['decode_tps'])} | {_fmt(base and row['decode_tps'] / base, 2, '×')} "
                         f"| {_fmt(row['e2e_tps'])} | {row['ttft_p50'] * 1e3:.0f} | {row['ttft_p99'] * 1e3:.0f} |")
    return lines


def markdown(data: dict[str, Any], plots: dict[str, str]) -> str:
    machine, bandwidth, workload = data["machine"], data["bandwidth"], data["workload"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{data['command']}` on {data['generated']} in {data['duration_s'] / 60:.1f} min. "
        "Re-run it to measure the machine at hand; every figure below comes from this one run, engines side by side.",
        "",
        f"- **CPU**: {machine['cpu']} ({machine['cores']} cores; {', '.join(machine['flags']) or 'no AVX2/AVX-512/AMX flags'}), "
        f"{machine['memory_gib']} GiB; load average at start {machine['load_average_at_start']}",
        f"- **Software**: Python {machine['python']}, {versions}",
        f"- **Threads**: {machine['threads']} intra-op thread(s) for every engine (torch, onnxruntime, llama.cpp alike)",
        f"- **Memory read bandwidth**: {bandwidth['gb_per_s']:.1f} GB/s (best of {bandwidth['passes']} sums of a "
        f"{bandwidth['buffer_bytes'] / 2**20:.0f} MiB buffer, {bandwidth['threads']} thread(s)). A decode step at batch 1 reads "
        "every weight once, so *bandwidth bound* = bandwidth / weight bytes read per token; *of the bound* is the "
        "measured decode speed as a fraction of it.",
        f"- **Workload**: random weights, batch 1, greedy; a {workload['prompt_tokens']}-token prompt from an empty state "
        f"(prefill), then {workload['decode_tokens']} decode steps; every engine once per repeat, the order rotating, "
        f"{workload['repeats']} repeat(s); medians, and ratios paired repeat by repeat.",
        "",
        "## Targets (issue 11)",
        "",
        *targets_table(data),
        "",
    ]
    for key, model in data["models"].items():
        lines += [f"## {model['label']}", "", *engine_table(model, bandwidth["gb_per_s"], workload["prompt_tokens"]), "",
                  "Paired ratios (median over repeats of the per-repeat ratio; > 1: agentd faster):", "",
                  *ratio_table(model), ""]
    if "engines" in plots:
        lines += [f"![decode and prefill speed per engine]({plots['engines']})", ""]
    lines += [
        "Weights read per token: llama.cpp's from its GGUF file (its quantiser keeps some tensors at higher precision); "
        "the others' nominal: matrices and the tied embedding/LM head at 4 bytes (fp32), 34/32 (8-bit) or 18/32 (4-bit, "
        "blocks of 32 with a 16-bit scale), vectors at fp32; the KV cache (a few MB here) is left out. The bandwidth is "
        "what torch's sum reaches; a figure above 100% means an engine streams its weights faster than that sum, so "
        "read the shares as a lower estimate of the real bound's use, comparable between engines.",
        "",
        "## Kernels picked on this CPU", "", *kernel_lines(data), "",
        "## Long context", "", *long_context_lines(data.get("long_context")), "",
    ]
    if "long_context" in plots:
        lines += [f"![decode speed against context]({plots['long_context']})", ""]
    lines += ["## Concurrency", "", *concurrency_lines(data.get("concurrency")), ""]
    if "concurrency" in plots:
        lines += [f"![aggregate decode speed against streams]({plots['concurrency']})", ""]
    lines += ["## How each engine was built", "", *build_lines(data), "",
              "Each engine runs in its own worker process (`agentd.bench.worker`), so a peer that crashes "
              "(llama.cpp's weight repacking segfaulted on some AMX CPUs; it is then retried once with "
              "`use_extra_bufts=False`) is reported as such, and the others go on.", ""]
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------------
def plot_engines(data: dict[str, Any], path: Path) -> None:
    """Per model: decode tok/s (with the share of the bandwidth bound) and prefill tok/s, one bar per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(data["models"].values())
    prompt = data["workload"]["prompt_tokens"]
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 0.42 * max(len(m["results"]) for m in models) * len(models) + 1.5),
                             squeeze=False)
    for row, model in zip(axes, models):
        results = results_of(model)
        names = [r.name for r in results]
        colours = [FAMILY_COLOURS.get(family(n), "#999999") for n in names]
        short = model["label"].split(" (")[0]
        for axis, key, title in ((row[0], "decode_tok_s", "decode tok/s"), (row[1], "prefill_s", f"prefill tok/s, {prompt}-token prompt")):
            values = []
            for r in results:
                median = r.median(key)
                values.append(0.0 if median is None else (median if key == "decode_tok_s" else prompt / median))
            axis.barh(names, values, color=colours)
            axis.invert_yaxis()
            axis.set_title(f"{short}: {title}", fontsize=10)
            axis.grid(axis="x", alpha=0.3)
            top = max(values) if any(values) else 1.0
            for y, (r, value) in enumerate(zip(results, values)):
                if r.status != "measured":
                    axis.text(top * 0.01, y, r.status, va="center", fontsize=8, color="#b00000")
                elif key == "decode_tok_s":
                    per_token = bytes_per_token(r, model["parameters"])
                    if per_token:
                        share = value / (data["bandwidth"]["gb_per_s"] * 1e9 / per_token)
                        axis.text(value, y, f" {value:.1f} ({100 * share:.0f}% of bound)", va="center", fontsize=7)
                else:
                    axis.text(value, y, f" {value:.0f}", va="center", fontsize=7)
            axis.set_xlim(0, top * 1.35)
            axis.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"{data['machine']['cpu']}, {data['machine']['threads']} thread(s), batch 1, medians", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_long_context(suite: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    for model in suite["results"].values():
        rows = model["contexts"]
        axis.plot([r["context"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=model["label"])
    axis.set(xscale="log", xlabel="context (tokens)", ylabel="decode tok/s (median)",
             title=f"Decode speed against context, {suite['threads']} thread(s), fp32")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_concurrency(suite: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4))
    for name, rows in suite["results"].items():
        axis.plot([r["streams"] for r in rows], [r["decode_tps"] for r in rows], marker="o", label=name)
    levels = suite["levels"]
    axis.set(xlabel="simultaneous streams", ylabel="aggregate decode tok/s",
             title=f"Through agentd serve, {suite['threads']} thread(s)")
    axis.set_xticks(levels)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    _atomic_write(path, buffer.getvalue())


def write(data: dict[str, Any], out: Path) -> list[Path]:
    """The report at ``out``, its PNGs beside it (``bench_*.png``) and the raw results (``out`` with ``.json``)."""
    written: list[Path] = []
    plots: dict[str, str] = {}
    folder = out.parent
    if data["models"]:
        plot_engines(data, folder / "bench_engines.png")
        plots["engines"] = "bench_engines.png"
    for key, draw in (("long_context", plot_long_context), ("concurrency", plot_concurrency)):
        suite = data.get(key)
        if suite and "results" in suite and suite["results"]:
            draw(suite, folder / f"bench_{key}.png")
            plots[key] = f"bench_{key}.png"
    written += [folder / name for name in plots.values()]
    _atomic_write(out.with_suffix(".json"), (json.dumps(data, indent=1, default=str) + "\n").encode())
    _atomic_write(out, markdown(data, plots).encode())
    return [out, out.with_suffix(".json"), *written]

