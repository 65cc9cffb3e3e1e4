"""Soak: thousands of mixed requests against a real daemon process; zero errors, flat memory.

``agentd serve`` runs as its own process on a Unix socket, serving a small
random-weight Llama (hidden 128, 2 layers, vocab 512, context 1024, no EOS).
``--clients`` threads, each with its own SDK client, send ``--requests``
Generate requests in total (default 2,000), drawn from one seeded stream:

* prompt lengths 1..``--max-prompt`` tokens and max_tokens 1..``--max-tokens``
  (uniform), greedy or sampled (half each, seeded);
* ``--cancel-fraction`` (default 10%) are cancelled mid-stream, after a
  random number of tokens short of their max_tokens;
* every request ends with a checked outcome: the right finish_reason
  ("length", or "cancelled" for cancelled ones) and exactly max_tokens tokens
  for those not cancelled. Anything else counts as an error.

The daemon's resident memory (``VmRSS`` from ``/proc``) is sampled after
every ``--sample-every`` completed requests; growth is measured from request
200 (warm: every allocation pattern has been seen) to the last request;
target < 5%. The run is bounded in count and in time (``--max-seconds``), and
exits non-zero on any error or if memory grew too much.

    python benchmarks/soak.py                   # 2,000 requests, prints a markdown report
    python benchmarks/soak.py --requests 300    # quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import DaemonProcess  # noqa: E402

from agentd.client import Client, SamplingOptions  # noqa: E402
from agentd.errors import AgentdError  # noqa: E402

MODEL = "soak"
#: Growth is measured from this request on (the first ones warm allocators and caches up).
BASELINE_REQUEST = 200


@dataclass(frozen=True)
class Job:
    """One request of the soak, fully decided up front by the seed."""

    index: int
    prompt: tuple[int, ...]
    max_tokens: int
    temperature: float
    seed: int
    #: Cancel after this many tokens (None: let it finish).
    cancel_after: int | None


def build_model(path: Path, context: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        eos_token_id=None,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(path)


def make_jobs(count: int, max_prompt: int, max_tokens: int, cancel_fraction: float, seed: int) -> list[Job]:
    rng = np.random.default_rng(seed)
    jobs = []
    for index in range(count):
        length = int(rng.integers(1, max_prompt + 1))
        budget = int(rng.integers(1, max_tokens + 1))
        # Only a request that streams at least 2 tokens can be cancelled mid-stream.
        cancel = budget >= 2 and rng.random() < cancel_fraction
        jobs.append(
            Job(
                index=index,
                prompt=tuple(int(t) for t in rng.integers(0, 512, length)),
                max_tokens=budget,
                temperature=0.0 if rng.random() < 0.5 else 0.8,
                seed=int(rng.integers(0, 2**31)),
                cancel_after=int(rng.integers(1, budget)) if cancel else None,
            )
        )
    return jobs


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def run_job(client: Client, job: Job) -> str | None:
    """Stream one job; returns None if it ended as it should, else what went wrong."""
    sampling = SamplingOptions(max_tokens=job.max_tokens, temperature=job.temperature, seed=job.seed)
    stream = client.generate_ids(list(job.prompt), model=MODEL, sampling=sampling)
    received = 0
    for chunk in stream:
        received += len(chunk.token_ids)
        if job.cancel_after is not None and received >= job.cancel_after:
            stream.cancel()
            break
    if job.cancel_after is not None:
        return None if received >= job.cancel_after else f"cancelled job got {received} < {job.cancel_after} tokens"
    if stream.finish_reason != "length" or received != job.max_tokens:
        return f"finish_reason {stream.finish_reason!r} after {received}/{job.max_tokens} tokens"
    return None


class Soak:
    """Runs the jobs on ``clients`` threads, sampling the daemon's RSS as requests complete."""

    def __init__(self, target: str, pid: int, jobs: list[Job], clients: int, sample_every: int, max_seconds: float):
        self.target, self.pid, self.jobs = target, pid, jobs
        self.clients, self.sample_every, self.max_seconds = clients, sample_every, max_seconds
        self.lock = threading.Lock()
        self.next_job = 0
        self.completed = 0
        self.errors: list[str] = []
        self.rss: dict[int, int] = {}
        self.latencies: list[float] = []
        self.deadline = 0.0

    def run(self) -> float:
        self.deadline = time.monotonic() + self.max_seconds
        started = time.perf_counter()
        threads = [threading.Thread(target=self._client, name=f"soak-{i}") for i in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    def _take(self) -> Job | None:
        with self.lock:
            if self.next_job >= len(self.jobs) or time.monotonic() > self.deadline:
                return None
            job = self.jobs[self.next_job]
            self.next_job += 1
            return job

    def _client(self) -> None:
        with Client(self.target, timeout=120) as client:
            while (job := self._take()) is not None:
                began = time.perf_counter()
                try:
                    problem = run_job(client, job)
                except AgentdError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.latencies.append(time.perf_counter() - began)
                    if problem is not None:
                        self.errors.append(f"request {job.index}: {problem}")
                    self.completed += 1
                    done = self.completed
                if done % self.sample_every == 0 or done == len(self.jobs) or done == BASELINE_REQUEST:
                    self.rss[done] = rss_bytes(self.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--max-prompt", type=int, default=256, help="longest prompt (tokens)")
    parser.add_argument("--max-tokens", type=int, default=48, help="largest max_tokens")
    parser.add_argument("--cancel-fraction", type=float, default=0.10)
    parser.add_argument("--sample-every", type=int, default=200, help="RSS sample interval (completed requests)")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop taking new requests after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prefix-cache-budget", default="8MiB",
        help="the daemon's prefix cache cap; small, so it is full (and flat) before the baseline request",
    )
    args = parser.parse_args()

    jobs = make_jobs(args.requests, args.max_prompt, args.max_tokens, args.cancel_fraction, args.seed)
    with tempfile.TemporaryDirectory(prefix="agentd-soak-", dir="/tmp") as tmp:
        root = Path(tmp)
        build_model(root / MODEL, context=1024)
        extra = ["--prefix-cache-budget", args.prefix_cache_budget]
        with DaemonProcess({MODEL: root / MODEL}, root / "soak.sock", root, extra) as daemon:
            assert daemon.process is not None
            soak = Soak(daemon.target, daemon.process.pid, jobs, args.clients, args.sample_every, args.max_seconds)
            seconds = soak.run()
            with Client(daemon.target, timeout=60) as client:
                state_after = client.model_info(MODEL).state_bytes
    cancelled = sum(job.cancel_after is not None for job in jobs[: soak.completed])
    samples = sorted(soak.rss.items())
    base = soak.rss.get(BASELINE_REQUEST)
    last_count, last = samples[-1]
    growth = (last - base) / base if base else float("nan")
    ok = not soak.errors and soak.completed == len(jobs) and growth < 0.05
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.1f} at the end.",
        f"{soak.completed} of {len(jobs)} requests in {seconds:.0f} s on {args.clients} concurrent clients "
        f"({cancelled} cancelled mid-stream), prompts 1-{args.max_prompt} tokens, max_tokens 1-{args.max_tokens}, "
        f"half greedy, half sampled; request latency median {statistics.median(soak.latencies) * 1e3:.0f} ms; "
        f"prefix cache budget {args.prefix_cache_budget}.",
        "",
        f"* errors: **{len(soak.errors)}**" + (f" (first: {soak.errors[0]})" if soak.errors else ""),
        f"* daemon RSS at request {BASELINE_REQUEST}: {base / 2**20:.1f} MiB; at request {last_count}: {last / 2**20:.1f} MiB; "
        f"growth **{growth * 100:+.2f}%** (target < 5%)",
        f"* model state held after the run (requests, sessions, prefix cache): {state_after} bytes",
        "",
        "| completed requests | daemon RSS (MiB) |",
        "|---:|---:|",
        *(f"| {count} | {value / 2**20:.1f} |" for count, value in samples),
        "",
        "PASS" if ok else "FAIL",
    ]
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
