"""Engines side by side on one model: prepared once each, then timed interleaved, repeat after repeat.

Every engine runs in its own worker process (:mod:`.worker`). After one
untimed warm-up measurement each, every repeat times every engine once, the
order rotating from repeat to repeat, so load drifting on a shared machine
hits them alike; a measurement is a prefill of the same prompt from an empty
state, then ``decode_tokens`` greedy steps. Reported per engine: medians, the
samples themselves by repeat (so ratios can be paired repeat by repeat), RSS,
and what happened when it did not run: *skipped* (with the reason: a peer not
installed, an architecture it lacks, a precision agentd cannot run yet),
*crashed* (the signal; an engine with a fallback, llama.cpp without weight
repacking, is then retried once) or *failed* (the error).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .engines import EngineSpec
from .models import ModelSpec
from .worker import Worker, WorkerDied

PREPARE_TIMEOUT_S = 1800.0
MEASURE_TIMEOUT_S = 600.0
#: Pause before each measurement: the previous engine's idle threads stop spin-waiting (OpenMP, ggml's pool)
#: instead of competing with the next one for the cores.
SETTLE_S = 0.3
#: The reference the others' greedy tokens are compared with (nobody here wrote it).
REFERENCE = "transformers eager fp32"


@dataclass(frozen=True)
class Workload:
    """What one measurement does, and how often."""

    prompt_tokens: int = 128
    decode_tokens: int = 64
    repeats: int = 5
    threads: int = 2


@dataclass
class EngineResult:
    """One engine's outcome on one model."""

    name: str
    precision: str
    #: ``measured``, ``skipped``, ``crashed`` or ``failed``.
    status: str = "measured"
    reason: str = ""
    #: Crashes survived on the way (a fallback took over), e.g. ``crashed (SIGSEGV) with repack``.
    incidents: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: Per repeat (None where the engine did not run that repeat).
    prefill_s: list[float | None] = field(default_factory=list)
    decode_tok_s: list[float | None] = field(default_factory=list)
    rss_mib: float | None = None
    bytes_per_token: float | None = None
    tokens: list[int] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        values = [v for v in getattr(self, key) if v is not None]
        return statistics.median(values) if values else None


Progress = Callable[[str], None]


class _Running:
    """An engine's worker and its result, as the harness drives them."""

    def __init__(self, spec: EngineSpec, result: EngineResult):
        self.spec, self.result = spec, result
        self.options = dict(spec.options)
        self.worker: Worker | None = None
        self.fallback_used = False


def run_model(
    model: ModelSpec, model_dir: Path, engines: list[EngineSpec], workload: Workload, work: Path,
    progress: Progress = lambda label: None,
) -> list[EngineResult]:
    """Prepare every engine on ``model_dir``, then time them interleaved; one result per engine, in order."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running = [_Running(spec, EngineResult(spec.name, spec.precision)) for spec in engines]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, model.vocab_size, workload.prompt_tokens).tolist()
    warmup = {"op": "measure", "prompt": prompt[:16], "decode": 4}
    try:
        for engine in running:
            progress(f"{model.key}: preparing {engine.spec.name}")
            _start(engine, model, model_dir, workload, work, logs, warmup)
        for repeat in range(workload.repeats):
            shift = repeat % max(len(running), 1)
            for engine in running[shift:] + running[:shift]:
                progress(f"{model.key}: repeat {repeat + 1}/{workload.repeats}, {engine.spec.name}")
                _measure(engine, model, model_dir, workload, work, logs, warmup, prompt, repeat)
    finally:
        for engine in running:
            if engine.worker is not None:
                engine.worker.close()
    results = [engine.result for engine in running]
    _compare_tokens(results)
    return results


def _start(engine: _Running, model: ModelSpec, model_dir: Path, workload: Workload, work: Path, logs: Path,
           warmup: dict[str, Any]) -> None:
    """Start the worker and prepare the engine (and warm it up); a crash falls back once if the spec allows."""
    result = engine.result
    log = logs / f"{model.key}-{engine.spec.name.replace(' ', '_')}.log"
    engine.worker = Worker(log, workload.threads)
    request = {"op": "prepare", "factory": engine.spec.factory, "options": engine.options, "model_dir": str(model_dir),
               "work": str(work), "threads": workload.threads}
    try:
        reply = engine.worker.request(request, PREPARE_TIMEOUT_S)
        if reply.get("ok"):
            result.info, result.rss_mib, result.bytes_per_token = reply["info"], reply["rss_mib"], reply["bytes_per_token"]
            result.info["prepare_s"] = round(reply["prepare_s"], 1)
            warm = engine.worker.request(warmup, MEASURE_TIMEOUT_S)
            if not warm.get("ok"):
                _stop(engine, "failed", warm.get("error", "warm-up failed"))
            return
        if "unavailable" in reply:
            _stop(engine, "skipped", reply["unavailable"])
        else:
            _stop(engine, "failed", reply.get("error", "unknown error"))
    except WorkerDied as died:
        _crashed(engine, model, model_dir, workload, work, logs, warmup, f"{died} while loading", log)


def _measure(engine: _Running, model: ModelSpec, model_dir: Path, workload: Workload, work: Path, logs: Path,
             warmup: dict[str, Any], prompt: list[int], repeat: int) -> None:
    result = engine.result
    result.prefill_s.append(None)
    result.decode_tok_s.append(None)
    if result.status != "measured" or engine.worker is None:
        return
    time.sleep(SETTLE_S)
    request = {"op": "measure", "prompt": prompt, "decode": workload.decode_tokens}
    try:
        reply = engine.worker.request(request, MEASURE_TIMEOUT_S)
    except WorkerDied as died:
        _crashed(engine, model, model_dir, workload, work, logs, warmup, f"{died} in repeat {repeat + 1}", engine.worker.log)
        if result.status != "measured" or engine.worker is None:
            return
        try:  # the fallback took over: this repeat's measurement is its
            reply = engine.worker.request(request, MEASURE_TIMEOUT_S)
        except WorkerDied as again:
            _stop(engine, "crashed", f"{again} in repeat {repeat + 1}, with the fallback too (log: {engine.worker.log})")
            return
    if not reply.get("ok"):
        _stop(engine, "failed", reply.get("error", "unknown error"))
        return
    result.prefill_s[-1] = reply["prefill_s"]
    result.decode_tok_s[-1] = workload.decode_tokens / reply["decode_s"]
    result.tokens = reply["tokens"]
    result.rss_mib = max(result.rss_mib or 0.0, reply["rss_mib"] or 0.0) or None


def _crashed(engine: _Running, model: ModelSpec, model_dir: Path, workload: Workload, work: Path, logs: Path,
             warmup: dict[str, Any], what: str, log: Path) -> None:
    if engine.spec.fallback is not None and not engine.fallback_used:
        engine.fallback_used = True
        changed = ", ".join(f"{k}={v}" for k, v in engine.spec.fallback.items() if engine.options.get(k) != v)
        engine.result.incidents.append(f"{what}; retried with {changed}")
        engine.options = dict(engine.spec.fallback)
        # Samples taken so far came from the other configuration: start the series again.
        engine.result.prefill_s = [None] * len(engine.result.prefill_s)
        engine.result.decode_tok_s = [None] * len(engine.result.decode_tok_s)
        _start(engine, model, model_dir, workload, work, logs, warmup)
        return
    _stop(engine, "crashed", f"{what} (log: {log})")


def _stop(engine: _Running, status: str, reason: str) -> None:
    engine.result.status, engine.result.reason = status, reason
    if engine.worker is not None:
        engine.worker.close()
        engine.worker = None


def _compare_tokens(results: list[EngineResult]) -> None:
    """How many greedy tokens of each engine's last measurement equal the reference's."""
    reference = next((r.tokens for r in results if r.name == REFERENCE and r.tokens), None)
    for result in results:
        if reference and result.tokens:
            same = sum(a == b for a, b in zip(result.tokens, reference))
            result.info["same_tokens_as_reference"] = f"{same}/{len(reference)}"


def paired_ratio(ours: EngineResult, theirs: EngineResult, key: str) -> float | None:
    """Median over repeats of ours/theirs speed (``decode_tok_s``) or theirs/ours time (``prefill_s``): > 1 means ours is faster."""
    pairs = [(a, b) for a, b in zip(getattr(ours, key), getattr(theirs, key)) if a and b]
    if not pairs:
        return None
    return statistics.median(a / b if key == "decode_tok_s" else b / a for a, b in pairs)


def comparison_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(agentd engine, peer) pairs at the same bits per weight, among ``names``."""
    llama = {"fp32": "llama.cpp f32", "int8": "llama.cpp q8_0", "int4": "llama.cpp q4_0"}
    pairs = []
    for precision, peer in llama.items():
        for ours in (f"agentd torch {precision}", f"agentd onnx {precision}"):
            pairs += [(ours, peer), (ours, f"onnxruntime-genai {precision}")]
            if precision == "fp32":
                pairs += [(ours, "transformers eager fp32"), (ours, "transformers sdpa fp32")]
    return [(a, b) for a, b in pairs if a in names and b in names]


def as_dict(result: EngineResult) -> dict[str, Any]:
    return asdict(result)
