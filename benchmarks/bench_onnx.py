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
        from agentd.checkpoint import Checkpoint
        from agentd.plugins.onnxrt.session import load

        self.backend = load(Checkpoint(directory))

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
    ratios = {}
    for quant in QUANTS:
        ours, theirs = results[f"agentd {quant}"], results[f"ort-genai {quant}"]
        ratios[quant] = {
            "decode_speed_ratio": round(ours["decode_tok_s_median"] / theirs["decode_tok_s_median"], 2),
            "prefill_speed_ratio": round(theirs["prefill_s_median"] / ours["prefill_s_median"], 2),
        }
    for impl in ("agentd", "ort-genai"):
        ratios[f"{impl} int4/fp32 size"] = round(results[f"{impl} int4"]["graph_mb"] / results[f"{impl} fp32"]["graph_mb"], 3)
    return {"results": results, "ratios": ratios}


def environment() -> dict[str, Any]:
    import onnxruntime
    import onnxruntime_genai

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
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--decode-tokens", type=int, default=DECODE_TOKENS)
    parser.add_argument("--work", type=Path, help="keep checkpoint and bundles here (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    env = environment()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        report = measure(args.work, args.repeats, args.decode_tokens)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
            report = measure(Path(tmp), args.repeats, args.decode_tokens)
    report = {
        "command": "python benchmarks/bench_onnx.py " + " ".join(sys.argv[1:]),
        "environment": env,
        "shape": SMOLLM2_135M,
        "prompt_tokens": PROMPT_TOKENS,
        "decode_tokens": args.decode_tokens,
        "repeats": args.repeats,
        **report,
    }
    print(f"{'implementation':<16} {'graph MB':>9} {'prefill s':>10} {'decode tok/s':>13}  same tokens")
    for name, row in report["results"].items():
        print(
            f"{name:<16} {row['graph_mb']:>9.1f} {row['prefill_s_median']:>10.3f} {row['decode_tok_s_median']:>13.1f}"
            f"  {row['same_greedy_tokens_as_ort_genai']}"
        )
    print(json.dumps(report["ratios"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
