"""Mamba and Mamba-2 ONNX bundles' prefill, before and after the parallel-form graphs, side by side with llama.cpp / torch.

``--model mamba`` (the default):

One random-weight ``MambaForCausalLM`` at mamba-130m's shape (the checkpoint
``bench_ssm.py`` builds: vocab 50280, hidden 768, 24 layers, state 16, conv 4),
then, from that one checkpoint:

* ``agentd export --quant {fp32,int4}`` with the current exporter ("after");
* the same with ``exporters/onnx/mamba.py`` as it was at ``--baseline`` (the
  commit before the parallel-form graph: its Scan stepped a ``(D, N)`` state with
  the decays and inputs of all ``T`` tokens materialised outside; "before");
* a GGUF file of the same weights (:mod:`agentd.plugins.gguf.writer`, F32) and
  llama.cpp's own Q4_0 of it (``llama_model_quantize``, ``LLAMA_FTYPE_MOSTLY_Q4_0``),
  run through ``llama-cpp-python``.

``--model mamba2``: one random-weight ``Mamba2ForCausalLM`` at mamba2-130m's
shape (vocab 50288, hidden 768, 24 layers, 24 heads of 64, state 128, 1 group,
conv 4, tied), exported with the current exporter ("after": the chunked SSD
prefill) and with ``exporters/onnx/mamba2.py`` at ``--mamba2-baseline`` ("before":
a Scan stepping one token at a time), against agentd's torch backend
(``agentd.load_model(..., quant)``, its own chunked SSD) at fp32 and int4.
(llama.cpp is not in this case: agentd's GGUF writer has no Mamba-2.)

``--model rwkv7``: a random RWKV-7 x070 state dict at rwkv7-0.1B's shape (vocab
65536, hidden 768, 12 layers, heads of 64; the test fixture's small LoRA ranks),
converted by agentd; the graph at ``--baseline`` (a Scan stepping one token at a
time) against the current one (the chunked delta rule), and the torch backend.

Every engine runs in its own worker process (a crash is reported, not fatal),
loaded once; each repeat asks every worker, in an order that alternates between
repeats, for one 128-token prefill from an empty state and then ``--decode-tokens``
greedy single-token steps. Reported: median prefill seconds, decode tokens/s
(median step), paired ratios (per repeat, then the median), and whether the
greedy tokens agree. onnxruntime's intra-op threads and llama.cpp's
``n_threads``/``n_threads_batch`` are the same ``--threads``.

    flock /tmp/agentd-bench.lock python benchmarks/bench_recurrent_prefill.py --repeats 7 --json /tmp/bench_recurrent_prefill.json
    flock /tmp/agentd-bench.lock python benchmarks/bench_recurrent_prefill.py --model mamba2 --repeats 7 --json /tmp/bench_mamba2_prefill.json
    flock /tmp/agentd-bench.lock python benchmarks/bench_recurrent_prefill.py --model rwkv7 --repeats 7 --json /tmp/bench_rwkv7_prefill.json

Results go to docs/bench_recurrent_prefill.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: The last commit whose Mamba graph prefilled the old way (its parent of the parallel-form change).
DEFAULT_BASELINE = "ed5b6d5^"
#: Per ``--model``: for Mamba-2 and RWKV-7, the last commit that changed their exporter before
#: their chunked prefill (one token per Scan step).
DEFAULT_BASELINES = {"mamba": DEFAULT_BASELINE, "mamba2": "e769dee", "rwkv7": "e769dee"}
PROMPT_TOKENS = 128
VOCAB = 50280


# -- workers (one engine each, in its own process) ---------------------------------------------


class AgentdEngine:
    """agentd's onnxrt backend over a bundle, greedy through the backend contract."""

    def __init__(self, path: str, threads: int):
        from agentd.formats import open_checkpoint
        from agentd.plugins.onnxrt.session import load
        from agentd.threads import configure

        configure(threads)
        self.backend = load(open_checkpoint(Path(path)))

    def prefill(self, prompt: list[int]) -> int:
        self.state = self.backend.new_state()
        return int(self.backend.prefill(np.asarray(prompt, dtype=np.int64), self.state)[-1].argmax())

    def step(self, token: int) -> int:
        return int(self.backend.decode(np.array([token], dtype=np.int64), [self.state])[0].argmax())


class TorchEngine:
    """agentd's torch backend (``quant`` fp32 or int4) through the same backend contract."""

    def __init__(self, path: str, threads: int, quant: str):
        import torch

        import agentd

        torch.set_num_threads(threads)
        self.backend = agentd.load_model(Path(path), quant).backend

    prefill = AgentdEngine.prefill
    step = AgentdEngine.step


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python's ``Llama.eval`` (the whole prompt in one batch)."""

    def __init__(self, path: str, threads: int):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.model = llama_cpp.Llama(
            path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self.vocab = self.model.n_vocab()

    def _argmax(self) -> int:
        logits = self.llama_cpp.llama_get_logits_ith(self.model._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(logits, shape=(self.vocab,)).argmax())

    def prefill(self, prompt: list[int]) -> int:
        self.model.reset()  # eval() then drops the sequence's cache/state from position 0
        self.model.eval(prompt)
        return self._argmax()

    def step(self, token: int) -> int:
        self.model.eval([token])
        return self._argmax()


def worker(kind: str, path: str, threads: int) -> None:
    """Serve ``run <decode tokens>`` lines on stdin with one JSON line each on stdout."""
    if kind == "agentd":
        engine: Any = AgentdEngine(path, threads)
    elif kind.startswith("torch-"):
        engine = TorchEngine(path, threads, kind.removeprefix("torch-"))
    else:
        engine = LlamaCppEngine(path, threads)
    prompt = np.random.RandomState(0).randint(0, VOCAB, PROMPT_TOKENS).tolist()
    print("ready", flush=True)
    for line in sys.stdin:
        steps = int(line.split()[1])
        start = time.perf_counter()
        token = engine.prefill(prompt)
        prefill_s = time.perf_counter() - start
        tokens, times = [token], []
        for _ in range(steps):
            start = time.perf_counter()
            token = engine.step(token)
            times.append(time.perf_counter() - start)
            tokens.append(token)
        print(json.dumps({"prefill_s": prefill_s, "step_s": times, "tokens": tokens}), flush=True)


class Worker:
    """The parent's handle on one worker process; ``error`` is set once it has failed."""

    def __init__(self, label: str, kind: str, path: Path, threads: int):
        self.label = label
        self.error: str | None = None
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, str(path), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        if self.process.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            self._fail("failed to load")

    def run(self, steps: int) -> dict[str, Any] | None:
        if self.error:
            return None
        try:
            self.process.stdin.write(f"run {steps}\n")  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
            line = self.process.stdout.readline()  # type: ignore[union-attr]
        except BrokenPipeError:
            line = ""
        if not line:
            self._fail("crashed")
            return None
        return json.loads(line)

    def _fail(self, what: str) -> None:
        code = self.process.wait(timeout=30)
        self.log.seek(0)
        tail = " | ".join(self.log.read().strip().splitlines()[-3:])
        self.error = f"{what} (exit code {code}): {tail}"
        print(f"{self.label}: {self.error}", file=sys.stderr)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=30)


# -- building the models -------------------------------------------------------------------------


def baseline_module(repo: Path, commit: str, name: str = "mamba") -> Any:
    """``exporters/onnx/<name>.py`` as it was at ``commit``, imported inside the current exporter package."""
    source = subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:exporters/onnx/{name}.py"], check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"agentd.exporters.onnx._{name}_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    module.__package__ = "agentd.exporters.onnx"  # its relative imports (.graph, .layers) resolve to today's
    exec(compile(source, f"{commit}:exporters/onnx/{name}.py", "exec"), module.__dict__)
    return module


def export_bundle(hf_dir: Path, out: Path, quant: str, builder: Any | None = None, name: str = "mamba") -> Path:
    """``agentd export`` of ``hf_dir`` (through the exporter plugin), optionally with another graph module ``name``."""
    from agentd.exporter_registry import ExportOptions
    from agentd.exporters.onnx import export as export_module
    from agentd.formats import open_checkpoint

    options = ExportOptions(quant=quant, block_size=32, force=True)
    with mock.patch.object(export_module, name, builder or getattr(export_module, name)):
        return export_module.export_onnx(open_checkpoint(hf_dir), out, options, lambda *_: None)


def build_hf_mamba2(path: Path) -> None:
    """Random-weight Mamba2ForCausalLM at mamba2-130m's shape, saved to ``path``."""
    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(0)
    config = Mamba2Config(
        vocab_size=50288, hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64, state_size=128,
        n_groups=1, conv_kernel=4, expand=2, tie_word_embeddings=True,
        eos_token_id=None, bos_token_id=None, pad_token_id=None,
    )
    Mamba2ForCausalLM(config).eval().save_pretrained(path, safe_serialization=True)


def build_rwkv7(path: Path) -> None:
    """A random RWKV-7 x070 checkpoint at rwkv7-0.1B's shape (vocab 65536, hidden 768, 12 layers, heads of 64), converted."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _rwkv_fixtures import make_rwkv7_pth

    from agentd.plugins.linear.convert import convert_rwkv7_pth

    path.mkdir(parents=True, exist_ok=True)
    pth = make_rwkv7_pth(path / "rwkv7-0.1b-shape.pth", hidden=768, layers=12, head_size=64, vocab=65536)
    convert_rwkv7_pth(pth, path / "converted")


def build_checked_models(work: Path, repo: Path, baseline: str, name: str) -> dict[str, tuple[str, Path]]:
    """Label -> (worker kind, model path) for the ``mamba2`` or ``rwkv7`` case: onnx before/after and torch, fp32 and int4."""
    if name == "mamba2":
        source = work / "mamba2-130m-hf"
        if not (source / "config.json").exists():
            build_hf_mamba2(source)
    else:
        source = work / "rwkv7-0.1b" / "converted"
        if not (source / "config.json").exists():
            build_rwkv7(source.parent)
    old = baseline_module(repo, baseline, name)
    models: dict[str, tuple[str, Path]] = {}
    for quant in ("int4", "fp32"):
        for label, builder in (("before", old), ("after", None)):
            out = work / f"{name}-bundle-{quant}-{label}"
            if not (out / "manifest.json").exists():
                export_bundle(source, out, quant, builder, name)
            models[f"agentd onnx {quant} {label}"] = ("agentd", out)
        models[f"agentd torch {quant}"] = (f"torch-{quant}", source)
    return models


def build_models(work: Path, repo: Path, baseline: str) -> dict[str, tuple[str, Path]]:
    """Label -> (worker kind, model path), building whatever ``work`` does not hold yet."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_ssm import build_hf

    from agentd.formats import open_checkpoint
    from agentd.plugins.gguf.writer import quantize, write_checkpoint

    hf_dir = work / "mamba-130m-hf"
    if not (hf_dir / "config.json").exists():
        build_hf(hf_dir, 24)
    old = baseline_module(repo, baseline)
    models: dict[str, tuple[str, Path]] = {}
    for quant in ("int4", "fp32"):
        for label, builder in (("before", old), ("after", None)):
            out = work / f"bundle-{quant}-{label}"
            if not (out / "manifest.json").exists():
                export_bundle(hf_dir, out, quant, builder)
            models[f"agentd onnx {quant} {label}"] = ("agentd", out)
    f32, q4 = work / "mamba-f32.gguf", work / "mamba-q4_0.gguf"
    if not f32.exists():
        write_checkpoint(open_checkpoint(hf_dir), f32)
    if not q4.exists():
        quantize(f32, q4, "q4_0")
    models["llama.cpp q4_0"] = ("llama", q4)
    models["llama.cpp f32"] = ("llama", f32)
    return models


# -- measuring -----------------------------------------------------------------------------------

#: (numerator, denominator) pairs reported as paired ratios: speed of the first over the second.
PAIRS = {
    "mamba": (
        ("agentd onnx int4 after", "llama.cpp q4_0"),
        ("agentd onnx fp32 after", "llama.cpp f32"),
        ("agentd onnx int4 after", "agentd onnx int4 before"),
        ("agentd onnx fp32 after", "agentd onnx fp32 before"),
    ),
    "mamba2": (
        ("agentd onnx int4 after", "agentd onnx int4 before"),
        ("agentd onnx fp32 after", "agentd onnx fp32 before"),
        ("agentd onnx int4 after", "agentd torch int4"),
        ("agentd onnx fp32 after", "agentd torch fp32"),
    ),
}
PAIRS["rwkv7"] = PAIRS["mamba2"]


def measure(models: dict[str, tuple[str, Path]], threads: int, repeats: int, steps: int, pairs: Any) -> dict[str, Any]:
    workers = {label: Worker(label, kind, path, threads) for label, (kind, path) in models.items()}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in workers}
    try:
        for w in workers.values():  # warm-up run, not recorded
            w.run(2)
        for repeat in range(repeats):
            order = list(workers) if repeat % 2 == 0 else list(reversed(workers))
            for label in order:
                result = workers[label].run(steps)
                if result is not None:
                    runs[label].append(result)
            print(f"repeat {repeat + 1}/{repeats} done", file=sys.stderr)
    finally:
        for w in workers.values():
            w.close()

    results: dict[str, Any] = {}
    for label, samples in runs.items():
        if not samples:
            results[label] = {"error": workers[label].error}
            continue
        results[label] = {
            "prefill_s_median": round(statistics.median(s["prefill_s"] for s in samples), 4),
            "decode_tok_s_median": round(1 / statistics.median(t for s in samples for t in s["step_s"]), 1),
            "prefill_s": [round(s["prefill_s"], 4) for s in samples],
            "tokens": samples[-1]["tokens"],
            "error": workers[label].error,
        }
    ratios: dict[str, Any] = {}
    for ours, theirs in pairs:
        a, b = runs.get(ours) or [], runs.get(theirs) or []
        n = min(len(a), len(b))
        if not n:
            ratios[f"{ours} / {theirs}"] = "not measured"
            continue
        prefill = statistics.median(b[i]["prefill_s"] / a[i]["prefill_s"] for i in range(n))
        decode = statistics.median(statistics.median(b[i]["step_s"]) / statistics.median(a[i]["step_s"]) for i in range(n))
        same = a[-1]["tokens"] == b[-1]["tokens"]
        ratios[f"{ours} / {theirs}"] = {"prefill_speed": round(prefill, 2), "decode_speed": round(decode, 2), "same_greedy_tokens": same}
    return {"results": results, "paired_ratios": ratios}


def environment(threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    from agentd.plugins.kernel_choice import cpu_model

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average_1min_at_start": load,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "llama_cpp_python": _version("llama_cpp"),
    }


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return None


def print_report(report: dict[str, Any]) -> None:
    print("| engine | 128-token prefill s (median) | decode tok/s (median step) |\n|---|---:|---:|")
    for label, row in report["results"].items():
        if "prefill_s_median" not in row:
            print(f"| {label} | {row['error']} | — |")
        else:
            print(f"| {label} | {row['prefill_s_median']:.3f} | {row['decode_tok_s_median']:.1f} |")
    print("\n| paired ratio (speed of the first over the second) | prefill | decode | same greedy tokens |\n|---|---:|---:|---|")
    for pair, ratio in report["paired_ratios"].items():
        if isinstance(ratio, str):
            print(f"| {pair} | {ratio} | | |")
        else:
            print(f"| {pair} | {ratio['prefill_speed']:.2f}x | {ratio['decode_speed']:.2f}x | {ratio['same_greedy_tokens']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("mamba", "mamba2", "rwkv7"), default="mamba")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="for every engine (default: agentd's setting, cores - 1)")
    parser.add_argument("--baseline", help="commit whose exporters/onnx/<model>.py builds the 'before' bundles (default: per model)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the git repository --baseline is read from")
    parser.add_argument("--work", type=Path, help="keep checkpoint, bundles and GGUF files here (reused when present)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from agentd.threads import configure

    threads = configure(args.threads)
    if args.worker:
        worker(args.worker[0], args.worker[1], threads)
        return
    wanted = args.baseline or DEFAULT_BASELINES[args.model]
    baseline = subprocess.run(["git", "-C", str(args.repo), "rev-parse", "--short", wanted], check=True, capture_output=True, text=True).stdout.strip()

    def run(work: Path) -> dict[str, Any]:
        if args.model == "mamba":
            models = build_models(work, args.repo, baseline)
        else:
            models = build_checked_models(work, args.repo, baseline, args.model)
        return measure(models, threads, args.repeats, args.decode_tokens, PAIRS[args.model])

    env = environment(threads)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        measured = run(args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-recurrent-prefill-") as tmp:
            measured = run(Path(tmp))
    report = {
        "command": "python benchmarks/bench_recurrent_prefill.py " + " ".join(sys.argv[1:]),
        "environment": env,
        "model": args.model,
        "baseline_commit": baseline,
        "prompt_tokens": PROMPT_TOKENS,
        "decode_tokens": args.decode_tokens,
        "repeats": args.repeats,
        **measured,
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
