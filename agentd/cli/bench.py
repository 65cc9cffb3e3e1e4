"""``agentd bench``: agentd side by side with transformers, onnxruntime-genai and llama.cpp, on this machine."""

from __future__ import annotations

import enum
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agentd.cli import app


class Suite(str, enum.Enum):
    """What ``agentd bench --suite`` can run."""

    engines = "engines"
    long_context = "long-context"
    concurrency = "concurrency"


#: Settings per size: the full run (default) and ``--quick`` (tiny models, seconds per engine).
FULL: dict[str, Any] = dict(repeats=5, prompt_tokens=128, decode_tokens=64, bandwidth_mb=1024,
                            contexts=[128, 2048, 8192], lc_models=["transformer", "mamba", "rwkv4"], lc_rounds=2, lc_steps=16,
                            levels=[1, 4, 8], serving_rounds=2, serving_layers=None)
QUICK: dict[str, Any] = dict(repeats=1, prompt_tokens=16, decode_tokens=8, bandwidth_mb=256,
                             contexts=[32, 128], lc_models=["transformer", "mamba"], lc_rounds=1, lc_steps=4,
                             levels=[1, 2], serving_rounds=1, serving_layers=2)


class Progress:
    """A tqdm bar on stderr (plain lines without tqdm); each call starts the next step."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm

            self.bar: Any = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, unit="step")
        except ImportError:
            self.bar = None
        self.started = False

    def __call__(self, label: str) -> None:
        if self.bar is None:
            print(f"agentd bench: {label}", file=sys.stderr, flush=True)
            return
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_description_str(label)

    def close(self) -> None:
        if self.bar is not None:
            if self.started:
                self.bar.update(1)
            self.bar.close()


@app.command("bench")
def bench_command(
    quick: Annotated[bool, typer.Option("--quick", help="Tiny models, one repeat: checks the whole run in a minute or two.")] = False,
    repeats: Annotated[Optional[int], typer.Option("--repeats", min=1, help="Repeats per engine (default 5; --quick 1).")] = None,
    suite: Annotated[Optional[list[Suite]], typer.Option("--suite", help="Suites to run (repeatable; default all).")] = None,
    models: Annotated[Optional[list[str]], typer.Option("--model", help="Engine-suite models: smollm2, mamba (repeatable; default both).")] = None,
    engines: Annotated[Optional[str], typer.Option("--engines", help="Only engines whose name contains one of these comma-separated words.")] = None,
    out: Annotated[Path, typer.Option("--out", help="The report; its PNGs and JSON go beside it.")] = Path("docs/BENCHMARKS.md"),
    threads: Annotated[int, typer.Option("--threads", min=0, help="Intra-op threads for every engine (0: all cores).")] = 0,
    prompt_tokens: Annotated[Optional[int], typer.Option("--prompt-tokens", min=1, help="Prompt length (default 128; --quick 16).")] = None,
    decode_tokens: Annotated[Optional[int], typer.Option("--decode-tokens", min=1, max=512, help="Decode steps (default 64; --quick 8).")] = None,
    work: Annotated[Optional[Path], typer.Option("--work", help="Keep checkpoints, bundles, GGUF files and logs here and reuse them (default: a temporary folder).")] = None,
    remeasure_kernels: Annotated[bool, typer.Option("--remeasure-kernels", help="Forget this CPU's cached projection-kernel picks first, so they are measured again.")] = False,
) -> None:
    """Measure agentd's torch and ONNX backends against transformers, onnxruntime-genai and llama.cpp, write OUT."""
    from agentd.bench import bandwidth, harness, machine, models as bench_models, report, suites
    from agentd.bench.engines import catalogue
    from agentd.errors import InvalidArgument

    settings = dict(QUICK if quick else FULL)
    repeats = repeats or settings["repeats"]
    prompt_tokens = prompt_tokens or settings["prompt_tokens"]
    decode_tokens = decode_tokens or settings["decode_tokens"]
    threads = threads or os.cpu_count() or 1
    chosen = list(dict.fromkeys(suite or list(Suite)))
    specs = bench_models.specs(quick)
    model_keys = list(dict.fromkeys(models or list(specs)))
    for key in model_keys:
        if key not in specs:
            raise InvalidArgument("model", f"unknown model {key!r} (choose {', '.join(specs)})")
    line_up = catalogue()
    if engines:
        words = [word.strip() for word in engines.split(",") if word.strip()]
        line_up = [spec for spec in line_up if any(word in spec.name for word in words)]
        if not line_up:
            raise InvalidArgument("engines", f"no engine name contains any of {words}")

    command = _command(quick, repeats, chosen, model_keys, engines, out, threads, prompt_tokens, decode_tokens, remeasure_kernels)
    started = time.perf_counter()
    data: dict[str, Any] = {"command": command, "generated": time.strftime("%Y-%m-%d %H:%M %Z"), "models": {}}
    data["kernels_remeasured"] = machine.forget_kernel_choices() if remeasure_kernels else None
    data["machine"] = machine.describe(threads)
    measured = bandwidth.measure(threads, settings["bandwidth_mb"])
    data["bandwidth"] = vars(measured) | {"gb_per_s": round(measured.gb_per_s, 2)}
    workload = harness.Workload(prompt_tokens, decode_tokens, repeats, threads)
    data["workload"] = vars(workload)
    typer.echo(f"{data['machine']['cpu']}, {threads} thread(s), memory read {measured.gb_per_s:.1f} GB/s", err=True)

    steps = 0
    if Suite.engines in chosen:
        steps += len(model_keys) * len(line_up) * (1 + repeats)
    steps += len(settings["lc_models"]) if Suite.long_context in chosen else 0
    steps += 2 + 2 * len(settings["levels"]) if Suite.concurrency in chosen else 0
    progress = Progress(steps)
    with ExitStack() as stack:
        folder = Path(work) if work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentd-bench-")))
        folder.mkdir(parents=True, exist_ok=True)
        try:
            if Suite.engines in chosen:
                for key in model_keys:
                    spec = specs[key]
                    model_dir = bench_models.build(spec, folder / (f"{key}-quick" if quick else key))
                    results = harness.run_model(spec, model_dir, line_up, workload, folder, progress)
                    data["models"][key] = {"label": spec.label, "parameters": bench_models.parameter_counts(model_dir),
                                           "results": [harness.as_dict(r) for r in results]}
            if Suite.long_context in chosen:
                data["long_context"] = _suite(lambda: suites.long_context(
                    settings["contexts"], threads, settings["lc_steps"], settings["lc_rounds"], settings["lc_models"],
                    folder / "long-context", progress))
            if Suite.concurrency in chosen:
                data["concurrency"] = _suite(lambda: suites.concurrency(
                    settings["levels"], threads, settings["serving_rounds"], prompt_tokens, decode_tokens,
                    settings["serving_layers"], progress))
        finally:
            progress.close()
    data["duration_s"] = round(time.perf_counter() - started, 1)
    for path in report.write(data, out):
        typer.echo(str(path))


def _suite(run: Any) -> dict[str, Any]:
    """A suite's results, or why it has none: skipped (cannot run here) or failed (the error), never the end of the run."""
    from agentd.bench.suites import SuiteUnavailable

    try:
        return run()
    except SuiteUnavailable as exc:
        return {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # a broken suite is reported; the engines' figures still get written
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}


def _command(quick: bool, repeats: int, chosen: list[Suite], models: list[str], engines: str | None, out: Path,
             threads: int, prompt_tokens: int, decode_tokens: int, remeasure: bool) -> str:
    """The exact command line that repeats this run (every setting spelt out)."""
    parts = ["agentd bench"] + (["--quick"] if quick else [])
    parts += [f"--repeats {repeats}", f"--threads {threads}", f"--prompt-tokens {prompt_tokens}", f"--decode-tokens {decode_tokens}"]
    if len(chosen) < len(Suite):
        parts += [f"--suite {s.value}" for s in chosen]
    parts += [f"--model {m}" for m in models] if models != ["smollm2", "mamba"] else []
    parts += [f"--engines '{engines}'"] if engines else []
    parts += ["--remeasure-kernels"] if remeasure else []
    parts += [f"--out {out}"]
    return " ".join(parts)
