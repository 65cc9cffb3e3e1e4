"""agentd's Llama decoder vs Hugging Face transformers (eager and sdpa), side by side.

A random-weight model of SmolLM2-135M's shape (vocab 49152, hidden 576, 30
layers, 9 heads over 3 KV heads, intermediate 1536, tied embeddings, context
8192), float32, batch 1, on CPU. Measured in one run, the implementations
interleaved within every repeat so machine load drifts hit them alike:

* decode tokens/s: 64 greedy tokens after a 128-token prompt (prefill untimed);
* prefill seconds for 128 and 2048 tokens from an empty cache;
* peak RSS of an 8192-token prefill, each case in a fresh subprocess: the
  process peak (loading included) and the peak of the prefill alone (Linux
  ``VmHWM`` reset through ``/proc/self/clear_refs`` right before it).

transformers runs with ``logits_to_keep=1`` in prefill, the way its
``generate`` does, so neither side pays for 2048 vocabulary projections.

    python benchmarks/bench_transformer.py --repeats 3 --json docs/bench_transformer.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

SMOLLM2_135M: dict[str, Any] = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    tie_word_embeddings=True,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
)
IMPLEMENTATIONS = ("agentd", "hf-eager", "hf-sdpa")
PROMPT_TOKENS = 128
DECODE_TOKENS = 64


def make_checkpoint(directory: Path) -> None:
    """Save a random-weight SmolLM2-135M-shaped LlamaForCausalLM (float32 safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).save_pretrained(directory, safe_serialization=True)


class Runner:
    """Prefill/decode of one implementation, greedy, batch 1."""

    def prefill(self, token_ids: np.ndarray) -> tuple[Any, int]:
        """Consume the prompt from an empty cache; return (cache, next token)."""
        raise NotImplementedError

    def decode(self, cache: Any, token: int) -> int:
        raise NotImplementedError


class AgentdRunner(Runner):
    def __init__(self, directory: Path):
        from agentd.formats import open_checkpoint
        from agentd.plugins.transformer.decoder import load

        self.backend = load(open_checkpoint(directory))

    def prefill(self, token_ids: np.ndarray) -> tuple[Any, int]:
        state = self.backend.new_state()
        return state, int(self.backend.prefill(token_ids, state)[0].argmax())

    def decode(self, cache: Any, token: int) -> int:
        return int(self.backend.decode(np.array([token], dtype=np.int64), [cache])[0].argmax())


class HFRunner(Runner):
    def __init__(self, directory: Path, attention: str):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, attn_implementation=attention
        ).eval()

    def prefill(self, token_ids: np.ndarray) -> tuple[Any, int]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            out = self.model(
                torch.from_numpy(token_ids)[None], past_key_values=cache, use_cache=True, logits_to_keep=1
            )
        return cache, int(out.logits[0, -1].argmax())

    def decode(self, cache: Any, token: int) -> int:
        with torch.inference_mode():
            out = self.model(torch.tensor([[token]]), past_key_values=cache, use_cache=True)
        return int(out.logits[0, -1].argmax())


def make_runner(name: str, directory: Path) -> Runner:
    if name == "agentd":
        return AgentdRunner(directory)
    return HFRunner(directory, name.removeprefix("hf-"))


def prompt(tokens: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, SMOLLM2_135M["vocab_size"], tokens).astype(np.int64)


def decode_tokens_per_second(runner: Runner) -> float:
    cache, token = runner.prefill(prompt(PROMPT_TOKENS))
    start = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        token = runner.decode(cache, token)
    return DECODE_TOKENS / (time.perf_counter() - start)


def prefill_seconds(runner: Runner, tokens: int) -> float:
    ids = prompt(tokens, seed=tokens)
    start = time.perf_counter()
    runner.prefill(ids)
    return time.perf_counter() - start


def interleaved(runners: dict[str, Runner], repeats: int, measure: Callable[[Runner], float]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            results[name].append(measure(runner))
    return results


# -- peak RSS, in a fresh process per case --------------------------------------
def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, field
    return int(match.group(1))


def rss_child(name: str, directory: Path, tokens: int) -> None:
    """Load ``name``, prefill ``tokens``; print RSS figures (MiB) as JSON."""
    runner = make_runner(name, directory)
    after_load = _status_kib("VmRSS")
    load_peak = _status_kib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    runner.prefill(prompt(tokens, seed=tokens))
    prefill_peak = _status_kib("VmHWM")
    print(
        json.dumps(
            {
                "after_load_mib": after_load / 1024,
                "load_peak_mib": load_peak / 1024,
                "prefill_peak_mib": prefill_peak / 1024,
                "prefill_extra_mib": (prefill_peak - after_load) / 1024,
                "process_peak_mib": max(load_peak, prefill_peak) / 1024,
            }
        )
    )


def measure_rss(name: str, directory: Path, tokens: int, threads: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--rss-child", name, "--model-dir", str(directory)]
    command += ["--rss-tokens", str(tokens), "--threads", str(threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------
def report(results: dict[str, Any]) -> str:
    med = {key: {name: statistics.median(v) for name, v in values.items()} for key, values in results["timings"].items()}
    decode, p128, p2048 = med["decode_tok_s"], med["prefill_128_s"], med["prefill_2048_s"]
    lines = [
        "| | agentd | HF eager | HF sdpa | agentd / eager | agentd / sdpa |",
        "|---|---|---|---|---|---|",
        f"| decode tok/s (64 after 128), higher is better | {decode['agentd']:.1f} | {decode['hf-eager']:.1f} | "
        f"{decode['hf-sdpa']:.1f} | {decode['agentd'] / decode['hf-eager']:.2f}x | {decode['agentd'] / decode['hf-sdpa']:.2f}x |",
    ]
    for label, values in (("prefill 128 tokens, s", p128), ("prefill 2048 tokens, s", p2048)):
        lines.append(
            f"| {label}, lower is better | {values['agentd']:.3f} | {values['hf-eager']:.3f} | {values['hf-sdpa']:.3f} | "
            f"{values['hf-eager'] / values['agentd']:.2f}x faster | {values['hf-sdpa'] / values['agentd']:.2f}x faster |"
        )
    if results.get("kernels_summary"):
        lines += ["", f"agentd projection kernels: {results['kernels_summary']}."]
    rss = results["rss"]
    names = [n for n in ("agentd", "hf-eager", "hf-sdpa") if n in rss]
    lines += ["", f"Peak RSS, {results['rss_tokens']}-token prefill, fresh process each (MiB):", ""]
    lines += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label in (
        ("after_load_mib", "RSS after loading"),
        ("prefill_peak_mib", "peak during the prefill"),
        ("prefill_extra_mib", "prefill peak minus RSS after loading"),
        ("process_peak_mib", "process peak (loading included)"),
    ):
        lines.append(f"| {label} | " + " | ".join(f"{rss[n][key]:.0f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats per measurement (medians reported)")
    parser.add_argument("--model-dir", type=Path, help="reuse a checkpoint made by an earlier run")
    parser.add_argument("--rss-tokens", type=int, default=8192)
    parser.add_argument("--rss-eager", action="store_true", help="also measure HF eager's RSS (N^2 attention: GBs)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument("--rss-child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_transformer_") as tmp:
        directory = args.model_dir or Path(tmp)
        if args.rss_child:
            rss_child(args.rss_child, directory, args.rss_tokens)
            return
        if not (directory / "config.json").exists():
            make_checkpoint(directory)

        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", file=sys.stderr)
        runners = {name: make_runner(name, directory) for name in IMPLEMENTATIONS}
        for runner in runners.values():  # warm-up: first-call allocations, kernel selection
            cache, token = runner.prefill(prompt(16))
            runner.decode(cache, token)
        timings = {
            "decode_tok_s": interleaved(runners, args.repeats, decode_tokens_per_second),
            "prefill_128_s": interleaved(runners, 2 * args.repeats, lambda r: prefill_seconds(r, 128)),
            "prefill_2048_s": interleaved(runners, args.repeats, lambda r: prefill_seconds(r, 2048)),
        }
        del runners
        rss_names = ["agentd", "hf-sdpa"] + (["hf-eager"] if args.rss_eager else [])
        rss = {name: measure_rss(name, directory, args.rss_tokens, args.threads) for name in rss_names}

    from agentd.plugins import kernel_choice

    results = {
        "timings": timings,
        # Which projection kernel each weight shape ran with (measured on this CPU unless AGENTD_PROJECTION forces one).
        "kernels": {shape: kernel for shape, (kernel, _, _) in kernel_choice.choices().items()},
        "kernels_summary": kernel_choice.summary(),
        "rss": rss,
        "rss_tokens": args.rss_tokens,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
