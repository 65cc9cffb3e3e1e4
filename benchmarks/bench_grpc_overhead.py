"""What the daemon adds per token: streaming through ``agentd serve`` over its Unix socket vs in-process.

One small random-weight Llama (hidden 128, 2 layers, vocab 512, no EOS, no
tokenizer, so every request streams exactly ``--tokens`` tokens and neither
side detokenises). The same greedy generation runs:

* in-process: ``Model.stream`` on the model loaded here (no engine, no gRPC);
* through the daemon: ``agentd serve`` as its own process, the blocking SDK
  (``Client.generate_ids``) over the Unix socket: the engine thread, the
  asyncio servicer, protobuf, the socket and the client's deserialisation.

Runs alternate (in-process, daemon, in-process, ...) ``--runs`` times so load
drift on the machine hits both alike. Per-token latency is the interval
between consecutive tokens as the caller receives them; reported are medians
(and p90) over all intervals, the per-token overhead (daemon median minus
in-process median; target < 0.5 ms) and the time to first token of each.

    python benchmarks/bench_grpc_overhead.py
    python benchmarks/bench_grpc_overhead.py --tokens 512 --runs 7
    python benchmarks/bench_grpc_overhead.py --threads 1    # one torch thread on both sides
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import DaemonProcess  # noqa: E402

from agentd.client import Client, SamplingOptions  # noqa: E402
from agentd.generation import SamplingParams  # noqa: E402
from agentd.model import load_model  # noqa: E402

MODEL = "overhead"


def build_model(path: Path) -> None:
    """A small random Llama without EOS, saved as a Hugging Face checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=None,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(path)


def in_process(model, prompt: list[int], tokens: int) -> list[float]:
    """Arrival times (perf_counter) of each token from ``Model.stream``; the first is relative to the call."""
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    started = time.perf_counter()
    arrivals = [started]
    for event in model.stream(prompt, params):
        if event.token_id is not None:
            arrivals.append(time.perf_counter())
    return arrivals


def through_daemon(client: Client, prompt: list[int], tokens: int) -> list[float]:
    """Arrival times of each token streamed by the daemon; the first entry is the send time."""
    sampling = SamplingOptions(max_tokens=tokens, temperature=0.0)
    started = time.perf_counter()
    arrivals = [started]
    for chunk in client.generate_ids(prompt, model=MODEL, sampling=sampling):
        now = time.perf_counter()
        arrivals += [now] * len(chunk.token_ids)
    return arrivals


def summarise(runs: list[list[float]]) -> dict[str, float]:
    intervals = [b - a for run in runs for a, b in zip(run[1:], run[2:])]
    return {
        "median_ms": statistics.median(intervals) * 1e3,
        "p90_ms": float(np.percentile(intervals, 90)) * 1e3,
        "ttft_ms": statistics.median(run[1] - run[0] for run in runs) * 1e3,
        "tokens": sum(len(run) - 1 for run in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens per generation")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--runs", type=int, default=5, help="generations per side (alternating)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads for both sides (default: torch's, one per core)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="agentd-overhead-", dir="/tmp") as tmp:
        root = Path(tmp)
        build_model(root / MODEL)
        model = load_model(root / MODEL)
        prompt = np.random.default_rng(0).integers(0, model.info.vocab_size, args.prompt).tolist()
        local: list[list[float]] = []
        remote: list[list[float]] = []
        extra = ["--prefix-cache-budget", "0"]
        with DaemonProcess({MODEL: root / MODEL}, root / "o.sock", root, extra, args.threads) as daemon:
            with Client(daemon.target, timeout=120) as client:
                in_process(model, prompt, 8)  # warm-up both sides
                through_daemon(client, prompt, 8)
                for _ in range(args.runs):
                    local.append(in_process(model, prompt, args.tokens))
                    remote.append(through_daemon(client, prompt, args.tokens))
        load = os.getloadavg()[0]
    ours, theirs = summarise(local), summarise(remote)
    overhead = theirs["median_ms"] - ours["median_ms"]
    print(
        "\n".join(
            [
                f"Machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                f"torch {torch.__version__}, "
                f"Python {platform.python_version()}; load average {load:.1f}. "
                f"Prompt {args.prompt} tokens, {args.tokens} new tokens, {args.runs} runs per side, greedy.",
                "",
                "| path | tokens | per-token median (ms) | per-token p90 (ms) | TTFT median (ms) |",
                "|---|---:|---:|---:|---:|",
                f"| in-process `Model.stream` | {ours['tokens']} | {ours['median_ms']:.3f} | {ours['p90_ms']:.3f} | {ours['ttft_ms']:.2f} |",
                f"| daemon, Unix socket, `Client` | {theirs['tokens']} | {theirs['median_ms']:.3f} | {theirs['p90_ms']:.3f} | {theirs['ttft_ms']:.2f} |",
                "",
                f"Per-token overhead of the daemon: {overhead:+.3f} ms (target < 0.5 ms).",
            ]
        )
    )


if __name__ == "__main__":
    main()
