"""Serving throughput: the batched decode step in-process, concurrent streams through a real daemon,
and transformers' static batching as the peer, side by side in one run.

A random-weight SmolLM2-135M-shaped Llama (as in bench_transformer.py), float32,
greedy, no EOS (every request streams all its tokens). Two agentd arms:

* ``batched``: the shipped decode, attention in one masked call per layer for
  the whole batch over the slot-pool KV cache;
* ``per-seq``: the same code with ``LlamaModel.batched_decode_from`` raised, so
  attention loops over the sequences (what decode did before the slot pool).

1. **Decode step, in-process** (no gRPC, no engine): ``backend.decode`` of B
   sequences that each hold ~``--context`` tokens, B = 1, 4, 8, 16, the two arms
   interleaved step by step; medians and per-step paired ratios.
2. **Through the daemon**: one ``agentd serve`` process per arm on a Unix
   socket (``max_batch`` = the largest level, prefix cache off, ``--threads``).
   At each level C (default 1, 2, 4, 8) C client threads (one gRPC channel each)
   send one request each at the same instant (a barrier): ``--prompt`` prompt
   tokens, ``--tokens`` new tokens. *Decode tokens/s* is the steady state while
   all C streams decode: the tokens received between the moment the last stream
   got its first token and the moment the first stream finished, over that
   window. End-to-end tokens/s and TTFT are reported too.
3. **Peer: transformers static batching** in this process (same threads):
   ``generate`` on a batch of 1 and of 8 equal-length prompts; decode tokens/s
   = B x (tokens - 1) / (time of ``tokens`` new tokens - time of 1 new token).

Every round runs every level of every arm, then the peer, so load from other
work on the machine hits them alike; reported: medians over ``--rounds`` and
ratios paired within a round (C streams / 1 stream, batched / per-seq).
The target (issue 11) is 8 streams >= 6x one stream through the daemon.

    flock /tmp/agentd-bench.lock python benchmarks/bench_serving.py            # all three parts
    flock /tmp/agentd-bench.lock python benchmarks/bench_serving.py --step-only
    python benchmarks/bench_serving.py --layers 4 --rounds 1                    # quick look

``build_models``, ``DaemonProcess``, ``run_round`` and ``run_level`` are also
used by ``agentd bench`` (agentd/bench/suites.py) and other benchmarks.
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
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentd.v1 import inference_pb2 as pb  # noqa: E402
from agentd.v1 import inference_pb2_grpc  # noqa: E402

LEVELS = (1, 2, 4, 8)
STEP_BATCHES = (1, 4, 8, 16)
AGENTD_MAIN = "from agentd.cli import main; main()"
AGENTD = [sys.executable, "-c", AGENTD_MAIN]
#: Python run before the daemon's main, per arm: ``per-seq`` makes decode attention loop over sequences.
ARMS = {
    "batched": "",
    "per-seq": "from agentd.plugins.transformer.llama import LlamaModel; LlamaModel.batched_decode_from = 1 << 30; ",
}
#: The peer's batch sizes (its ratio is batch 8 over batch 1).
PEER_BATCHES = (1, 8)


def build_models(root: Path, layers: int | None, names: tuple[str, ...] = ("smollm2", "mamba")) -> dict[str, Path]:
    """Random-weight checkpoints: ``smollm2`` (SmolLM2-135M shape) and ``mamba`` (mamba-130m shape).

    ``layers`` overrides the depths for a quick look.
    """
    import bench_transformer
    from transformers import LlamaConfig, LlamaForCausalLM

    paths = {}
    if "smollm2" in names:
        paths["smollm2"] = smollm = root / "smollm2"
        config = dict(bench_transformer.SMOLLM2_135M)
        if layers is not None:
            config["num_hidden_layers"] = layers
        torch.manual_seed(0)
        # No EOS id: every request streams exactly --tokens tokens.
        LlamaForCausalLM(LlamaConfig(**config, eos_token_id=None, bos_token_id=None)).save_pretrained(smollm)
    if "mamba" in names:
        import bench_ssm

        paths["mamba"] = root / "mamba"
        bench_ssm.build_hf(paths["mamba"], layers if layers is not None else 24)
    return paths


# -- part 1: the decode step in-process ------------------------------------------------------
def step_times(path: Path, context: int, steps: int, warmup_seconds: float = 5.0) -> dict[str, dict[int, list[float]]]:
    """``backend.decode`` times (s) per arm and batch size, every sequence holding ~``context`` tokens.

    The arms alternate on the same states step by step (each step adds a token,
    so contexts end ``2 * steps`` longer); a few seconds of decoding first let
    the process settle (oneDNN compiles a kernel per row count on first use).
    """
    from agentd.model import load_model

    backend = load_model(path).backend
    model = backend.model
    rng = np.random.default_rng(0)
    vocab = backend.info.vocab_size
    batches = {}
    for batch in STEP_BATCHES:
        states = [backend.new_state() for _ in range(batch)]
        for state in states:
            backend.prefill(rng.integers(0, vocab, context), state)
        batches[batch] = states
    spare = [backend.new_state() for _ in range(STEP_BATCHES[-1])]  # warm-up sequences, so the timed ones stay at `context`
    for state in spare:
        backend.prefill(rng.integers(0, vocab, context), state)
    settle = time.monotonic() + warmup_seconds
    while time.monotonic() < settle:
        for batch in STEP_BATCHES:
            backend.decode(rng.integers(0, vocab, batch), spare[:batch])
    del spare
    shipped = model.batched_decode_from
    times: dict[str, dict[int, list[float]]] = {arm: {batch: [] for batch in STEP_BATCHES} for arm in ARMS}
    try:
        for _ in range(steps):
            for batch, states in batches.items():
                for arm in ARMS:
                    model.batched_decode_from = shipped if arm == "batched" else 1 << 30
                    token_ids = rng.integers(0, vocab, batch)
                    started = time.perf_counter()
                    backend.decode(token_ids, states)
                    times[arm][batch].append(time.perf_counter() - started)
    finally:
        model.batched_decode_from = shipped
    return times


# -- part 2: through the daemon ---------------------------------------------------------------
class DaemonProcess:
    """``agentd serve`` in its own process, serving ``models`` on ``socket``.

    ``threads`` sets the daemon's torch intra-op threads (``OMP_NUM_THREADS``);
    None leaves torch's default (one per core). ``prelude`` is Python run in the
    daemon process before its main (a benchmark arm's setting).
    """

    def __init__(
        self,
        models: dict[str, Path],
        socket: Path,
        home: Path,
        extra: list[str] = (),
        threads: int | None = None,
        prelude: str = "",
    ):
        self.socket = socket
        args = [sys.executable, "-c", prelude + AGENTD_MAIN, "serve", "--no-defaults", "--socket", str(socket)]
        args += ["--log-level", "warning"]
        for name, path in models.items():
            args += ["--model", f"{name}={path}"]
        self.args = args + list(extra)
        self.env = dict(os.environ, AGENTD_HOME=str(home), PYTHONUNBUFFERED="1")
        if threads is not None:
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.log = home / f"serve-{socket.stem}.log"
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


def summarise_level(streams: int, runs: list[dict]) -> dict:
    """Medians over rounds of one level (the row ``run_level`` returns)."""
    ttfts = [t for run in runs for t in run["ttfts"]]
    return {
        "streams": streams,
        "tokens": sum(run["tokens"] for run in runs),
        "decode_tps": statistics.median(run["decode_tps"] for run in runs),
        "e2e_tps": statistics.median(run["e2e_tps"] for run in runs),
        "ttft_p50": float(np.percentile(ttfts, 50)),
        "ttft_p99": float(np.percentile(ttfts, 99)),
    }


def run_level(target: str, model: str, streams: int, rounds: int, prompt_tokens: int, tokens: int, vocab: int) -> dict:
    """``rounds`` rounds of one level back to back, summarised."""
    runs = [run_round(target, model, streams, prompt_tokens, tokens, vocab, seed=1000 * streams + r) for r in range(rounds)]
    return summarise_level(streams, runs)


# -- part 3: the peer, transformers static batching ----------------------------------------------
def peer_times(hf_model, batch: int, prompt_tokens: int, tokens: int, vocab: int, seed: int) -> float:
    """Decode tokens/s summed over a batch: ``generate`` of ``tokens`` minus ``generate`` of 1 new token."""
    rng = np.random.default_rng(seed)
    input_ids = torch.from_numpy(rng.integers(0, vocab, (batch, prompt_tokens)))
    options = dict(do_sample=False, eos_token_id=None, pad_token_id=0, attention_mask=torch.ones_like(input_ids))
    elapsed = {}
    with torch.inference_mode():
        for new in (1, tokens):
            started = time.perf_counter()
            out = hf_model.generate(input_ids, max_new_tokens=new, min_new_tokens=new, **options)
            elapsed[new] = time.perf_counter() - started
            assert out.shape[1] == prompt_tokens + new
    return batch * (tokens - 1) / (elapsed[tokens] - elapsed[1])


# -- report -------------------------------------------------------------------------------------
def _paired(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def render_steps(times: dict[str, dict[int, list[float]]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"#### Decode step in-process (~{args.context}-token contexts, {args.threads} torch thread(s), "
        f"median of {args.steps} steps per arm)",
        "",
        "| batch | batched (ms) | per-seq (ms) | per-seq / batched (paired) | batched tokens/s | batched vs batch 1 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    base = statistics.median(times["batched"][STEP_BATCHES[0]])
    for batch in STEP_BATCHES:
        batched, per_seq = times["batched"][batch], times["per-seq"][batch]
        step = statistics.median(batched)
        lines.append(
            f"| {batch} | {step * 1e3:.1f} | {statistics.median(per_seq) * 1e3:.1f} | {_paired(per_seq, batched):.3f}× | "
            f"{batch / step:.1f} | {batch * base / step:.2f}× |"
        )
    return lines + [""]


def render_daemon(rounds: dict[str, dict[int, list[dict]]], peer: dict[int, list[float]], args: argparse.Namespace) -> list[str]:
    levels = sorted(next(iter(rounds.values())))
    lines = [
        f"#### Through the daemon ({args.threads} torch thread(s), {args.rounds} rounds, medians; ratios paired by round)",
        "",
        "| streams | batched decode tok/s | vs 1 stream | per-seq decode tok/s | vs 1 stream | batched / per-seq | "
        "batched end-to-end tok/s | TTFT p50 / p99 (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    decode = {arm: {level: [r["decode_tps"] for r in rounds[arm][level]] for level in levels} for arm in rounds}
    for level in levels:
        row = summarise_level(level, rounds["batched"][level])
        lines.append(
            f"| {level} | {row['decode_tps']:.1f} | {_paired(decode['batched'][level], decode['batched'][1]):.2f}× | "
            f"{statistics.median(decode['per-seq'][level]):.1f} | {_paired(decode['per-seq'][level], decode['per-seq'][1]):.2f}× | "
            f"{_paired(decode['batched'][level], decode['per-seq'][level]):.3f}× | {row['e2e_tps']:.1f} | "
            f"{row['ttft_p50'] * 1e3:.0f} / {row['ttft_p99'] * 1e3:.0f} |"
        )
    lines += [
        "",
        f"#### Peer: transformers static batching (`generate`, {args.threads} torch thread(s), same rounds)",
        "",
        "| batch | decode tok/s (summed) | vs batch 1 |",
        "|---:|---:|---:|",
    ]
    for batch in PEER_BATCHES:
        lines.append(f"| {batch} | {statistics.median(peer[batch]):.1f} | {_paired(peer[batch], peer[PEER_BATCHES[0]]):.2f}× |")
    top = max(levels)
    if top == PEER_BATCHES[-1]:
        ours = _paired(decode["batched"][top], decode["batched"][1])
        theirs = _paired(peer[top], peer[1])
        lines += ["", f"**{top} streams / 1 stream: agentd daemon {ours:.2f}× (target ≥ 6×), transformers static batching {theirs:.2f}×.**"]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=None, help="override the model's depth (quick look)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the daemons, part 1 and the peer")
    parser.add_argument("--context", type=int, default=160, help="tokens each sequence holds in the step measurement")
    parser.add_argument("--steps", type=int, default=15, help="decode steps timed per batch size and arm")
    parser.add_argument("--step-only", action="store_true", help="only the in-process step measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds: every level of every arm, then the peer")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent streams, comma-separated")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per request")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    args = parser.parse_args()
    levels = sorted({int(level) for level in args.levels.split(",")} | {1})
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="agentd-bench-", dir="/tmp") as tmp:
        root = Path(tmp)
        path = build_models(root, args.layers, names=("smollm2",))["smollm2"]
        steps = step_times(path, args.context, args.steps)
        print(json.dumps({arm: {b: statistics.median(t) * 1e3 for b, t in s.items()} for arm, s in steps.items()}), flush=True)
        load_after_steps = os.getloadavg()[0]
        rounds: dict[str, dict[int, list[dict]]] = {arm: {level: [] for level in levels} for arm in ARMS}
        peer: dict[int, list[float]] = {batch: [] for batch in PEER_BATCHES}
        if not args.step_only:
            rounds, peer = measure_daemons(path, root, levels, args)
    lines = [
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, Python {platform.python_version()}; "
        f"load average {load_after_steps:.1f} after part 1, {os.getloadavg()[0]:.1f} at the end (1-minute).",
        f"Model: SmolLM2-135M shape{f' ({args.layers} layers)' if args.layers else ''}, random weights, fp32, greedy. "
        f"Daemon: prompt {args.prompt} tokens, {args.tokens} new tokens per stream, Unix socket, one `agentd serve` "
        "process per arm (client threads in this process, on the same cores).",
        "",
        *render_steps(steps, args),
    ]
    if not args.step_only:
        lines += render_daemon(rounds, peer, args)
    print("\n".join(lines))
    if args.json:
        raw = {"steps": steps, "daemon": rounds, "peer": peer, "args": {k: str(v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps(raw, indent=1))


def measure_daemons(path: Path, root: Path, levels: list[int], args: argparse.Namespace):
    """Part 2 and 3, interleaved round by round: every level of every arm, then the peer."""
    from transformers import AutoModelForCausalLM

    from agentd.formats import open_checkpoint

    vocab = int(open_checkpoint(path).config["vocab_size"])
    top = max(levels)
    extra = ["--max-batch", str(top), "--max-queue", str(4 * top), "--prefix-cache-budget", "0", "--threads", str(args.threads)]
    rounds: dict[str, dict[int, list[dict]]] = {arm: {level: [] for level in levels} for arm in ARMS}
    peer: dict[int, list[float]] = {batch: [] for batch in PEER_BATCHES}
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    daemons = {
        arm: DaemonProcess({"smollm2": path}, root / f"{arm}.sock", root, extra, args.threads, prelude)
        for arm, prelude in ARMS.items()
    }
    with daemons["batched"], daemons["per-seq"]:
        for daemon in daemons.values():  # warm-up: every batch size once (oneDNN kernels, kernel choice)
            for level in levels:
                run_round(daemon.target, "smollm2", level, 8, 8, vocab, seed=0)
        peer_times(hf_model, 1, 8, 4, vocab, seed=0)
        for r in range(args.rounds):
            for level in levels:
                for arm, daemon in daemons.items():
                    result = run_round(daemon.target, "smollm2", level, args.prompt, args.tokens, vocab, seed=1000 * level + r)
                    rounds[arm][level].append(result)
                    print(f"round {r} {arm} {level} streams: {result['decode_tps']:.1f} decode tok/s", flush=True)
            for batch in PEER_BATCHES:
                peer[batch].append(peer_times(hf_model, batch, args.prompt, args.tokens, vocab, seed=r))
                print(f"round {r} transformers batch {batch}: {peer[batch][-1]:.1f} decode tok/s", flush=True)
    return rounds, peer


def cpu_name() -> str:
    from agentd.plugins.kernel_choice import cpu_model

    return cpu_model()


if __name__ == "__main__":
    main()
