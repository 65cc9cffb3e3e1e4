"""agentd's ONNX bundle vs onnxruntime-genai's own model builder, side by side.

One random-weight checkpoint of SmolLM2-135M's shape (the one
``bench_transformer.py`` uses: vocab 49152, hidden 576, 30 layers, 9 heads over
3 KV heads, intermediate 1536, tied embeddings), saved with transformers'
``save_pretrained`` plus a word-level ``tokenizer.json`` (the builder insists
on a tokenizer). From it, in one run:

* ``python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT -p {fp32,int4} -e cpu``
  (offline), run with ``onnxruntime_genai`` (``append_tokens`` for the prompt,
  ``generate_next_token`` per step, greedy);
* ``agentd export HF_DIR -o OUT --quant {fp32,int4}``, run through agentd's
  onnxrt backend (``prefill`` then ``decode``, greedy argmax in NumPy).

Measured per implementation, all four interleaved within every repeat so load
drift on a shared machine hits them alike: prefill seconds for a 128-token
prompt from an empty cache, then decode tokens/s over the next tokens; medians
over repeats. Bundle size = the graph files (``model.onnx`` + external data).

    python benchmarks/bench_onnx.py --repeats 7 --json docs/bench_onnx.json

``--suite recurrent`` instead measures the fixed-state bundles against
``transformers`` eager on CPU: random-weight Mamba at mamba-130m's shape and
RWKV-4 at rwkv-4-169m's shape (the checkpoints ``bench_ssm.py`` and
``bench_rwkv.py`` build), each exported with ``agentd export --quant int4``
and run through the onnxrt backend; decode tokens/s after a 128-token prompt,
the two sides alternating every few steps, both with the same thread count:

    python benchmarks/bench_onnx.py --suite recurrent --json docs/bench_onnx.json

Each suite's results land under its own key of the JSON file (the other is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_transformer import SMOLLM2_135M, make_checkpoint  # noqa: E402  (same checkpoint shape)

PROMPT_TOKENS = 128
DECODE_TOKENS = 64
QUANTS = ("fp32", "int4")


def add_tokenizer(directory: Path) -> None:
    """A word-level tokenizer covering the vocabulary (``w<id>``), enough for the builder."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i for i in range(1, SMOLLM2_135M["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def build(command: list[str], log: Path) -> float:
    """Run one build command (output to ``log``); returns its wall seconds."""
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return time.perf_counter() - start


def graph_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.name.startswith("model.onnx"))


class GenaiRunner:
    """onnxruntime-genai over the builder's output, greedy."""

    def __init__(self, directory: Path):
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(str(directory))

    def run(self, prompt: np.ndarray, steps: int) -> tuple[float, float, list[int]]:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=prompt.size + steps + 1)
        generator = self.og.Generator(self.model, params)
        start = time.perf_counter()
        generator.append_tokens(prompt.astype(np.int32)[None])  # the prompt's forward
        prefilled = time.perf_counter()
        tokens = []
        for _ in range(steps):
            generator.generate_next_token()  # samples from the last logits, then one decode step
            tokens.append(int(generator.get_next_tokens()[0]))
        return prefilled - start, time.perf_counter() - prefilled, tokens


class AgentdRunner:
    """agentd's onnxrt backend over an exported bundle, greedy (the backend contract directly)."""

    def __init__(self, directory: Path):
        from agentd.formats import open_checkpoint
        from agentd.plugins.onnxrt.session import load

        self.backend = load(open_checkpoint(directory))

    def run(self, prompt: np.ndarray, steps: int) -> tuple[float, float, list[int]]:
        state = self.backend.new_state()
        start = time.perf_counter()
        logits = self.backend.prefill(prompt, state)
        prefilled = time.perf_counter()
        tokens = [int(logits[-1].argmax())]
        while len(tokens) < steps:  # steps - 1 forwards, as generate_next_token makes
            logits = self.backend.decode(np.array(tokens[-1:], dtype=np.int64), [state])
            tokens.append(int(logits[-1].argmax()))
        return prefilled - start, time.perf_counter() - prefilled, tokens


def measure(work: Path, repeats: int, decode_tokens: int) -> dict[str, Any]:
    hf_dir = work / "hf"
    if not (hf_dir / "config.json").exists():
        make_checkpoint(hf_dir)
        add_tokenizer(hf_dir)
    agentd_cli = str(Path(sys.executable).parent / "agentd")
    builds: dict[str, dict[str, Any]] = {}
    for quant in QUANTS:
        for impl, command in (
            ("ort-genai", [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-p", quant, "-e", "cpu", "-o"]),
            ("agentd", [agentd_cli, "export", str(hf_dir), "--quant", quant, "-q", "--force", "-o"]),
        ):
            out = work / f"{impl}-{quant}"
            seconds = build([*command, str(out)], work / f"{impl}-{quant}.log")
            builds[f"{impl} {quant}"] = {"dir": out, "build_s": round(seconds, 1), "graph_mb": round(graph_bytes(out) / 1e6, 1)}
            print(f"built {impl} {quant}: {builds[f'{impl} {quant}']['graph_mb']} MB in {seconds:.0f} s", file=sys.stderr)

    runners = {name: (GenaiRunner if name.startswith("ort-genai") else AgentdRunner)(info["dir"]) for name, info in builds.items()}
    prompt = np.random.RandomState(0).randint(0, SMOLLM2_135M["vocab_size"], PROMPT_TOKENS).astype(np.int64)
    for runner in runners.values():  # warm-up: first-run allocations, pre-packing
        runner.run(prompt[:16], 4)
    samples: dict[str, dict[str, list[float]]] = {name: {"prefill_s": [], "decode_tok_s": []} for name in runners}
    outputs: dict[str, list[int]] = {}
    for repeat in range(repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))  # no fixed position in the cycle
        for name in order:
            prefill, decode, tokens = runners[name].run(prompt, decode_tokens)
            samples[name]["prefill_s"].append(prefill)
            samples[name]["decode_tok_s"].append(decode_tokens / decode)
            outputs[name] = tokens
        print(f"repeat {repeat + 1}/{repeats} done", file=sys.stderr)

    results: dict[str, Any] = {}
    for name, info in builds.items():
        quant = name.split()[1]
        results[name] = {
            "graph_mb": info["graph_mb"],
            "build_s": info["build_s"],
            "prefill_s_median": round(statistics.median(samples[name]["prefill_s"]), 4),
            "decode_tok_s_median": round(statistics.median(samples[name]["decode_tok_s"]), 2),
            "prefill_s": [round(v, 4) for v in samples[name]["prefill_s"]],
            "decode_tok_s": [round(v, 2) for v in samples[name]["decode_tok_s"]],
            "same_greedy_tokens_as_ort_genai": outputs[name] == outputs[f"ort-genai {quant}"],
        }
    return {"results": results, "ratios": ratios_of(results)}


def ratios_of(results: dict[str, Any]) -> dict[str, Any]:
    """agentd / onnxruntime-genai speed ratios (> 1: agentd faster) and int4/fp32 sizes.

    Two statistics: the ratio of the medians, and the median of the per-repeat
    ratios. On a shared machine the load swings between repeats (every
    implementation runs once per repeat, back to back), so the paired one
    compares runs that saw the same load.
    """
    ratios: dict[str, Any] = {}
    for quant in QUANTS:
        ours, theirs = results[f"agentd {quant}"], results[f"ort-genai {quant}"]
        ratios[quant] = {
            "decode_speed_ratio": round(ours["decode_tok_s_median"] / theirs["decode_tok_s_median"], 2),
            "prefill_speed_ratio": round(theirs["prefill_s_median"] / ours["prefill_s_median"], 2),
            "decode_speed_ratio_paired": round(
                statistics.median(a / b for a, b in zip(ours["decode_tok_s"], theirs["decode_tok_s"])), 2
            ),
            "prefill_speed_ratio_paired": round(statistics.median(b / a for a, b in zip(ours["prefill_s"], theirs["prefill_s"])), 2),
        }
    for impl in ("agentd", "ort-genai"):
        ratios[f"{impl} int4/fp32 size"] = round(results[f"{impl} int4"]["graph_mb"] / results[f"{impl} fp32"]["graph_mb"], 3)
    return ratios


class HFRecurrentRunner:
    """transformers' Mamba or RWKV model, greedy, through its own cache/state API."""

    def __init__(self, model, cache_name: str):
        self.model, self.cache_name = model, cache_name
        self.cache: Any = None

    def start(self, prompt: np.ndarray) -> int:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(prompt)[None], use_cache=True, logits_to_keep=1)
        self.cache = getattr(out, self.cache_name)
        return int(out.logits[0, -1].argmax())

    def step(self, token: int) -> int:
        import torch

        with torch.inference_mode():
            out = self.model(torch.tensor([[token]]), use_cache=True, **{self.cache_name: self.cache})
        self.cache = getattr(out, self.cache_name)
        return int(out.logits[0, -1].argmax())


class AgentdRecurrentRunner:
    """agentd's onnxrt backend over a fixed-state bundle, greedy (the backend contract directly)."""

    def __init__(self, directory: Path):
        from agentd.formats import open_checkpoint
        from agentd.plugins.onnxrt.session import load

        self.backend = load(open_checkpoint(directory))
        self.state: Any = None

    def start(self, prompt: np.ndarray) -> int:
        self.state = self.backend.new_state()
        return int(self.backend.prefill(prompt, self.state)[-1].argmax())

    def step(self, token: int) -> int:
        return int(self.backend.decode(np.array([token], dtype=np.int64), [self.state])[0].argmax())


def build_recurrent(name: str, directory: Path) -> Any:
    """The random-weight transformers model of ``name``, saved to ``directory`` (the shapes bench_ssm/bench_rwkv use)."""
    if name == "mamba-130m":
        from bench_ssm import build_hf

        return build_hf(directory, 24)
    from bench_rwkv import build_reference

    return build_reference(directory)


def measure_recurrent(work: Path, rounds: int, block: int) -> dict[str, Any]:
    """Decode tokens/s of each int4 bundle vs transformers eager, alternating every ``block`` steps."""
    from transformers import AutoModelForCausalLM

    agentd_cli = str(Path(sys.executable).parent / "agentd")
    results: dict[str, Any] = {}
    for name, cache_name in (("mamba-130m", "cache_params"), ("rwkv-4-169m", "state")):
        hf_dir, bundle = work / f"{name}-hf", work / f"{name}-int4"
        if not (hf_dir / "config.json").exists():
            build_recurrent(name, hf_dir)
        seconds = build([agentd_cli, "export", str(hf_dir), "--quant", "int4", "-q", "--force", "-o", str(bundle)], work / f"{name}-int4.log")
        print(f"exported {name} int4: {graph_bytes(bundle) / 1e6:.1f} MB in {seconds:.0f} s", file=sys.stderr)
        model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
        runners = {"transformers eager fp32": HFRecurrentRunner(model, cache_name), "agentd onnx int4": AgentdRecurrentRunner(bundle)}
        prompt = np.random.RandomState(0).randint(0, model.config.vocab_size, PROMPT_TOKENS).astype(np.int64)
        tokens = {label: runner.start(prompt) for label, runner in runners.items()}
        for label, runner in runners.items():  # warm-up steps
            tokens[label] = runner.step(tokens[label])
        steps: dict[str, list[float]] = {label: [] for label in runners}
        for round_index in range(rounds):
            order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
            for label in order:
                for _ in range(block):
                    start = time.perf_counter()
                    tokens[label] = runners[label].step(tokens[label])
                    steps[label].append(time.perf_counter() - start)
        rates = {label: 1.0 / statistics.median(times) for label, times in steps.items()}
        results[name] = {
            "checkpoint_mb_fp32": round(sum(p.stat().st_size for p in hf_dir.glob("*.safetensors")) / 1e6, 1),
            "bundle_mb_int4": round(graph_bytes(bundle) / 1e6, 1),
            "decode_tok_s_median": {label: round(rate, 2) for label, rate in rates.items()},
            "decode_speed_ratio": round(rates["agentd onnx int4"] / rates["transformers eager fp32"], 2),
            "decode_ms": {label: [round(t * 1e3, 2) for t in times] for label, times in steps.items()},
        }
        print(f"{name}: " + ", ".join(f"{label} {rate:.1f} tok/s" for label, rate in rates.items())
              + f"; ratio {results[name]['decode_speed_ratio']}x", file=sys.stderr)
        del model, runners
    return {"results": results}


def environment() -> dict[str, Any]:
    import onnxruntime
    import onnxruntime_genai
    import torch

    from agentd.plugins.onnxrt.session import intra_op_threads

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_1min_at_start": load,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_genai": onnxruntime_genai.__version__,
        "onnxruntime_intra_op_threads": intra_op_threads(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def print_transformer(report: dict[str, Any]) -> None:
    print(f"{'implementation':<16} {'graph MB':>9} {'prefill s':>10} {'decode tok/s':>13}  same tokens")
    for name, row in report["results"].items():
        print(
            f"{name:<16} {row['graph_mb']:>9.1f} {row['prefill_s_median']:>10.3f} {row['decode_tok_s_median']:>13.1f}"
            f"  {row['same_greedy_tokens_as_ort_genai']}"
        )
    print(json.dumps(report["ratios"], indent=2))


def print_recurrent(report: dict[str, Any]) -> None:
    for name, row in report["results"].items():
        rates = ", ".join(f"{label} {rate:.1f} tok/s" for label, rate in row["decode_tok_s_median"].items())
        print(f"{name}: {rates}; agentd/transformers {row['decode_speed_ratio']}x; int4 bundle {row['bundle_mb_int4']} MB"
              f" (fp32 checkpoint {row['checkpoint_mb_fp32']} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("transformer", "recurrent"), default="transformer")
    parser.add_argument("--repeats", type=int, default=7, help="transformer suite: repeats of the whole cycle")
    parser.add_argument("--decode-tokens", type=int, default=DECODE_TOKENS)
    parser.add_argument("--rounds", type=int, default=8, help="recurrent suite: alternations of --block decode steps")
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=0,
        help="recurrent suite: intra-op threads for both sides (default: agentd's threads setting, cores - 1; "
        "torch at 2 threads on this loaded 2-core box runs 2-4x slower than at 1)",
    )
    parser.add_argument("--work", type=Path, help="keep checkpoints and bundles here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="write the results here (under the suite's key)")
    args = parser.parse_args()

    if args.suite == "recurrent":
        import torch

        from agentd.threads import configure

        threads = configure(args.threads)  # the same count for onnxruntime and torch
        torch.set_num_threads(threads)
    env = environment()

    def run(work: Path) -> dict[str, Any]:
        if args.suite == "recurrent":
            return measure_recurrent(work, args.rounds, args.block)
        return measure(work, args.repeats, args.decode_tokens)

    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        report = run(args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
            report = run(Path(tmp))
    report = {"command": "python benchmarks/bench_onnx.py " + " ".join(sys.argv[1:]), "environment": env, **report}
    if args.suite == "transformer":
        report = {**report, "shape": SMOLLM2_135M, "prompt_tokens": PROMPT_TOKENS, "decode_tokens": args.decode_tokens, "repeats": args.repeats}
        print_transformer(report)
    else:
        report = {**report, "prompt_tokens": PROMPT_TOKENS, "rounds": args.rounds, "block": args.block}
        print_recurrent(report)
    if args.json:
        existing = json.loads(args.json.read_text()) if args.json.exists() else {}
        suites = {key: existing[key] for key in ("transformer", "recurrent") if key in existing}
        args.json.write_text(json.dumps({**suites, args.suite: report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
