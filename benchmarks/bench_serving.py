"""Serving throughput: the batched decode step in-process, then streams through a real daemon.

Two random-weight models: ``smollm2``, a SmolLM2-135M-shaped Llama (as in
bench_transformer.py), and ``mamba``, a mamba-130m-shaped Mamba (as in
bench_ssm.py); float32, greedy, no EOS (every request streams all its tokens).

1. **Decode step, in-process** (no gRPC, no engine): ``backend.decode`` of B
   sequences that each hold ``--context`` tokens, B = 1, 4, 8, 16, interleaved;
   median of ``--steps`` steps. What batching can give at best.
2. **Through the daemon**: ``agentd serve`` as its own process on a Unix
   socket (``max_batch`` 16, prefix cache off). At each level C = 1, 4, 8, 16,
   C client threads (one channel each) send one request each at the same
   instant (a barrier): ``--prompt`` prompt tokens, ``--tokens`` new tokens;
   ``--rounds`` times. Reported:

   * *decode tokens/s*: steady state, while all C streams are decoding: the
     tokens received between the moment the last stream got its first token
     (every prompt prefilled) and the moment the first stream finished,
     divided by that window (median over rounds);
   * *end-to-end tokens/s*: all tokens / wall time from the barrier to the
     last token (prefill and ramp-down included);
   * TTFT p50/p99 (request sent -> first token) over all requests of the level.

The target (issue 4) is at 8 streams >= 4x the single-stream aggregate.

    python benchmarks/bench_serving.py                 # both parts, prints markdown tables
    python benchmarks/bench_serving.py --step-only     # part 1 only
    python benchmarks/bench_serving.py --layers 4      # quick look (fewer layers)
    python benchmarks/bench_serving.py --threads 1     # only with one torch thread

Every part runs once per ``--threads`` entry (default: torch's default, then
1): on a 2-core machine shared with the clients, one intra-op thread was
measured faster for the daemon at every level.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentd.v1 import inference_pb2 as pb  # noqa: E402
from agentd.v1 import inference_pb2_grpc  # noqa: E402

LEVELS = (1, 4, 8, 16)
AGENTD = [sys.executable, "-c", "from agentd.cli import main; main()"]


def build_models(root: Path, layers: int | None) -> dict[str, Path]:
    """The two random-weight checkpoints (``layers`` overrides both depths for a quick look)."""
    import bench_ssm
    import bench_transformer
    from transformers import LlamaConfig, LlamaForCausalLM

    smollm = root / "smollm2"
    config = dict(bench_transformer.SMOLLM2_135M)
    if layers is not None:
        config["num_hidden_layers"] = layers
    torch.manual_seed(0)
    # No EOS id: every request streams exactly --tokens tokens.
    LlamaForCausalLM(LlamaConfig(**config, eos_token_id=None, bos_token_id=None)).save_pretrained(smollm)
    mamba = root / "mamba"
    bench_ssm.build_hf(mamba, layers if layers is not None else 24)
    return {"smollm2": smollm, "mamba": mamba}


# -- part 1: the decode step in-process ------------------------------------------------------
def step_times(path: Path, context: int, steps: int, warmup_seconds: float = 5.0) -> list[dict]:
    """Median ``backend.decode`` time at each batch size, every sequence holding ~``context`` tokens.

    Batch sizes are interleaved within every repeat, so load from other work
    on the machine hits them alike; a few seconds of decoding first let the
    process settle (the first seconds after loading 500 MB of weights were
    seen to run steps up to 50x slower, not reproducibly).
    """
    from agentd.model import load_model

    backend = load_model(path).backend
    rng = np.random.default_rng(0)
    vocab = backend.info.vocab_size
    batches = {}
    for batch in LEVELS:
        states = [backend.new_state() for _ in range(batch)]
        for state in states:
            backend.prefill(rng.integers(0, vocab, context), state)
        batches[batch] = (rng.integers(0, vocab, batch), states)
    spare = [backend.new_state() for _ in range(LEVELS[-1])]  # warm-up sequences, so the timed ones stay at `context`
    for state in spare:
        backend.prefill(rng.integers(0, vocab, context), state)
    settle = time.monotonic() + warmup_seconds
    while time.monotonic() < settle:
        for batch in LEVELS:
            backend.decode(rng.integers(0, vocab, batch), spare[:batch])
    del spare
    times: dict[int, list[float]] = {batch: [] for batch in LEVELS}
    for _ in range(steps):
        for batch, (token_ids, states) in batches.items():
            started = time.perf_counter()
            backend.decode(token_ids, states)
            times[batch].append(time.perf_counter() - started)
    return [{"batch": batch, "step_ms": statistics.median(times[batch]) * 1e3} for batch in LEVELS]


# -- part 2: through the daemon ---------------------------------------------------------------
class DaemonProcess:
    """``agentd serve`` in its own process, serving ``models`` on ``socket``.

    ``threads`` sets the daemon's torch intra-op threads (``OMP_NUM_THREADS``);
    None leaves torch's default (one per core).
    """

    def __init__(
        self, models: dict[str, Path], socket: Path, home: Path, extra: list[str] = (), threads: int | None = None
    ):
        self.socket = socket
        args = [*AGENTD, "serve", "--no-defaults", "--socket", str(socket), "--log-level", "warning"]
        for name, path in models.items():
            args += ["--model", f"{name}={path}"]
        self.args = args + list(extra)
        self.env = dict(os.environ, AGENTD_HOME=str(home), PYTHONUNBUFFERED="1")
        if threads is not None:
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.log = home / "serve.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "DaemonProcess":
        with self.log.open("w") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_serving(f"unix://{self.socket}", self.process, self.log)
        return self

    @property
    def target(self) -> str:
        return f"unix://{self.socket}"

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_serving(target: str, process: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    """Block until the daemon's health service says SERVING (its models are loaded)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"agentd serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"agentd serve was not serving after {timeout:.0f} s")


def stream_once(stub: inference_pb2_grpc.InferenceStub, model: str, prompt: list[int], tokens: int) -> tuple[float, list[float]]:
    """One greedy generation: (send time, arrival time of every token), perf_counter clock."""
    request = pb.GenerateRequest(model=model, max_tokens=tokens, temperature=0.0)
    request.prompt_token_ids.CopyFrom(pb.TokenIds(ids=prompt))
    sent = time.perf_counter()
    arrivals: list[float] = []
    for message in stub.Generate(request, timeout=3600):
        now = time.perf_counter()
        arrivals += [now] * len(message.token_ids)
    return sent, arrivals


def run_round(target: str, model: str, streams: int, prompt_tokens: int, tokens: int, vocab: int, seed: int) -> dict:
    """C simultaneous requests; the steady-state decode rate, end-to-end rate and TTFTs."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, vocab, prompt_tokens).tolist() for _ in range(streams)]
    results: list[tuple[float, list[float]] | None] = [None] * streams
    start_line = threading.Barrier(streams + 1)
    channels = [grpc.insecure_channel(target) for _ in range(streams)]
    for channel in channels:  # connect before the barrier: the clock measures serving, not dialling
        grpc.channel_ready_future(channel).result(timeout=30)

    def client(index: int) -> None:
        stub = inference_pb2_grpc.InferenceStub(channels[index])
        start_line.wait()
        results[index] = stream_once(stub, model, prompts[index], tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    done = [r for r in results if r is not None and r[1]]
    assert len(done) == streams, "a stream failed or produced no tokens"
    window_start = max(arrivals[0] for _, arrivals in done)  # every stream is decoding from here
    window_end = min(arrivals[-1] for _, arrivals in done)  # ... until the first one finishes
    in_window = sum(sum(window_start < t <= window_end for t in arrivals) for _, arrivals in done)
    total = sum(len(arrivals) for _, arrivals in done)
    return {
        "decode_tps": in_window / (window_end - window_start) if window_end > window_start else float("nan"),
        "e2e_tps": total / (max(arrivals[-1] for _, arrivals in done) - began),
        "ttfts": [arrivals[0] - sent for sent, arrivals in done],
        "tokens": total,
    }


def run_level(target: str, model: str, streams: int, rounds: int, prompt_tokens: int, tokens: int, vocab: int) -> dict:
    runs = [run_round(target, model, streams, prompt_tokens, tokens, vocab, seed=1000 * streams + r) for r in range(rounds)]
    ttfts = [t for run in runs for t in run["ttfts"]]
    return {
        "streams": streams,
        "tokens": sum(run["tokens"] for run in runs),
        "decode_tps": statistics.median(run["decode_tps"] for run in runs),
        "e2e_tps": statistics.median(run["e2e_tps"] for run in runs),
        "ttft_p50": float(np.percentile(ttfts, 50)),
        "ttft_p99": float(np.percentile(ttfts, 99)),
    }


# -- report -------------------------------------------------------------------------------------
def render_steps(steps: dict[str, list[dict]], args: argparse.Namespace) -> list[str]:
    lines = [f"#### Decode step in-process ({args.context}-token contexts, median of {args.steps} steps)", ""]
    lines += ["| model, torch threads | batch | step (ms) | tokens/s | vs batch 1 |", "|---|---:|---:|---:|---:|"]
    for name, rows in steps.items():
        base = 1 / rows[0]["step_ms"]
        for row in rows:
            tps = row["batch"] * 1e3 / row["step_ms"]
            lines.append(f"| {name} | {row['batch']} | {row['step_ms']:.1f} | {tps:.1f} | {tps / (base * 1e3):.2f}× |")
    return lines + [""]


def render_levels(results: dict[str, list[dict]], args: argparse.Namespace) -> list[str]:
    lines = []
    for name, rows in results.items():
        decode_base, e2e_base = rows[0]["decode_tps"], rows[0]["e2e_tps"]
        lines += [
            f"#### {name} through the daemon" + (f" ({args.layers} layers)" if args.layers else ""),
            "",
            "| streams | tokens | decode tokens/s | vs 1 stream | end-to-end tokens/s | vs 1 stream | TTFT p50 (ms) | TTFT p99 (ms) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            lines.append(
                f"| {row['streams']} | {row['tokens']} | {row['decode_tps']:.1f} | {row['decode_tps'] / decode_base:.2f}× | "
                f"{row['e2e_tps']:.1f} | {row['e2e_tps'] / e2e_base:.2f}× | {row['ttft_p50'] * 1e3:.0f} | {row['ttft_p99'] * 1e3:.0f} |"
            )
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=None, help="override both models' depth (quick look)")
    parser.add_argument("--context", type=int, default=160, help="tokens each sequence holds in the step measurement")
    parser.add_argument("--steps", type=int, default=15, help="decode steps timed per batch size")
    parser.add_argument("--step-only", action="store_true", help="only the in-process step measurement")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of simultaneous requests per level")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per request")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument(
        "--threads", default="default,1",
        help="torch intra-op thread counts to measure, comma-separated ('default': torch's choice, one per core)",
    )
    args = parser.parse_args()
    thread_counts = [None if t == "default" else int(t) for t in args.threads.split(",")]

    with tempfile.TemporaryDirectory(prefix="agentd-bench-", dir="/tmp") as tmp:
        root = Path(tmp)
        paths = build_models(root, args.layers)
        default_threads = torch.get_num_threads()
        steps: dict[str, list[dict]] = {}
        for threads in thread_counts:
            torch.set_num_threads(threads or default_threads)
            for name, path in paths.items():
                label = f"{name}, {threads or default_threads}"
                steps[label] = step_times(path, args.context, args.steps)
                print(label, steps[label], flush=True)
        torch.set_num_threads(default_threads)
        load = os.getloadavg()[0]
        results: dict[str, list[dict]] = {}
        extra = ["--max-batch", "16", "--max-queue", "64", "--prefix-cache-budget", "0"]
        for threads in [] if args.step_only else thread_counts:
            with DaemonProcess(paths, root / "bench.sock", root, extra, threads) as daemon:
                for name, path in paths.items():
                    from agentd.formats import open_checkpoint

                    vocab = int(open_checkpoint(path).config["vocab_size"])
                    run_round(daemon.target, name, 1, 8, 4, vocab, seed=0)  # warm-up
                    label = f"{name}, {threads or default_threads} torch thread(s)"
                    results[label] = []
                    for level in LEVELS:
                        row = run_level(daemon.target, name, level, args.rounds, args.prompt, args.tokens, vocab)
                        results[label].append(row)
                        print(label, row, flush=True)
    header = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (torch's default: {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}, Python {platform.python_version()}; load average {load:.1f} "
        f"(1-minute, after part 1) from other work on the machine.",
        f"Daemon part: prompt {args.prompt} tokens, {args.tokens} new tokens, {args.rounds} rounds per level, "
        "greedy, fp32, Unix socket, `agentd serve` in its own process (client threads in this one, on the same cores).",
        "",
    ]
    print("\n".join(header + render_steps(steps, args) + render_levels(results, args)))


if __name__ == "__main__":
    main()
