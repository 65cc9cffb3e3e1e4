"""agentd through Ray Serve with 1 and 2 replicas, next to the local daemon, in one run on one machine.

Each configuration serves SmolLM2-135M (the default model's real weights, Q4_1
GGUF) as a real ``agentd serve`` process, one after the other:

* ``local``: ``agentd serve`` (the engine in the daemon, its Unix socket);
* ``ray-1`` / ``ray-2``: ``agentd serve --ray local --replicas N``, clients
  straight at Ray Serve's gRPC proxy;
* ``ray-1 via front``: the same deployment as ray-1 through agentd's Unix-socket
  listener in front of the proxy (one more hop, what local clients use).

Workload: ``--clients`` concurrent greedy streams of ``--tokens`` tokens each,
``--rounds`` times; figures: aggregate tokens/s, the median time per token
inside a stream (the inter-token gap: the added latency of the proxy hop), and
the median time to first token. Then a session of ``--turns`` turns on each
(a transformer: its KV cache moves through Ray's object store every turn): the
median turn time and the bytes a turn moves. Medians over ``--repeats``; ratios
are each configuration's figure over the local daemon's.

    flock /tmp/agentd-bench.lock python benchmarks/bench_ray.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentd.default_models import smollm2_gguf  # noqa: E402
from agentd.v1 import inference_pb2 as pb  # noqa: E402
from agentd.v1 import inference_pb2_grpc  # noqa: E402

PROMPT = "Write a short note to a friend about the weather this weekend."
CONFIGS = ("local", "ray-1", "ray-2", "ray-1 via front")


@contextmanager
def serving(config: str, home: Path) -> Iterator[str]:
    """``agentd serve`` for ``config``; yields the target the clients dial."""
    socket = home / "a.sock"
    args = [sys.executable, "-c", "from agentd.cli import main; main()", "serve", "--socket", str(socket), "--no-defaults",
            "--model", f"smollm2={smollm2_gguf()}"]
    if config.startswith("ray"):
        args += ["--ray", "local", "--replicas", config.split()[0].split("-")[1]]
    env = {**os.environ, "AGENTD_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    out, err = open(home / "serve.out", "w"), open(home / "serve.err", "w")
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 600
        while "listening on" not in (home / "serve.out").read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{config}: agentd serve did not start:\n{(home / 'serve.err').read_text()[-3000:]}")
            time.sleep(0.5)
        proxy = re.search(r"Ray Serve gRPC proxy on (\S+)", (home / "serve.out").read_text())
        target = proxy.group(1) if proxy and config in ("ray-1", "ray-2") else f"unix://{socket}"
        _generate(target, 4)  # warm up every path once
        yield target
    finally:
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
        out.close()
        err.close()


def _generate(target: str, tokens: int, session: str = "", prompt: str = PROMPT) -> dict:
    """One greedy stream: first-token time, inter-token gaps, the reply."""
    with grpc.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        started = time.perf_counter()
        stamps, text = [], []
        request = pb.GenerateRequest(prompt=prompt, max_tokens=tokens, temperature=0.0, session_id=session)
        for response in stub.Generate(request, timeout=600):
            if response.token_ids:
                stamps.append(time.perf_counter())
                text.append(response.text)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"first": stamps[0] - started, "gaps": gaps, "tokens": len(stamps), "text": "".join(text)}


def throughput(target: str, clients: int, tokens: int, rounds: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(rounds):
            result = _generate(target, tokens)
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    gaps = [gap for result in results for gap in result["gaps"]]
    return {
        "tokens_per_s": sum(r["tokens"] for r in results) / elapsed,
        "inter_token_ms": statistics.median(gaps) * 1000,
        "first_token_ms": statistics.median(r["first"] for r in results) * 1000,
    }


def session_turns(target: str, turns: int, tokens: int) -> dict:
    """A chat on one session: each turn repeats the conversation and adds a line."""
    conversation, times = PROMPT, []
    session = f"bench-{time.monotonic_ns()}"
    for turn in range(turns):
        started = time.perf_counter()
        reply = _generate(target, tokens, session=session, prompt=conversation)
        times.append(time.perf_counter() - started)
        conversation += reply["text"] + f" And then, point {turn + 1}:"
    with grpc.insecure_channel(target) as channel:
        listed = inference_pb2_grpc.InferenceStub(channel).ListSessions(pb.ListSessionsRequest(), timeout=60).sessions
    held = next((s for s in listed if s.session_id == session), None)
    return {"turn_ms": statistics.median(times[1:]) * 1000, "session_tokens": held.tokens if held else 0,
            "session_bytes": held.state_bytes if held else 0}


def run(config: str, args: argparse.Namespace) -> list[dict]:
    rounds = []
    with tempfile.TemporaryDirectory(prefix="agentd-bench-ray-") as home, serving(config, Path(home)) as target:
        for _ in range(args.repeats):
            figures = throughput(target, args.clients, args.tokens, args.rounds)
            figures.update(session_turns(target, args.turns, 16))
            rounds.append(figures)
            print(config, {k: round(v, 2) for k, v in figures.items()}, flush=True)
    return rounds


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    def median(config: str, key: str) -> float:
        return statistics.median(r[key] for r in results[config])

    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except StopIteration:
        pass
    lines = [
        "# agentd through Ray Serve: 1 and 2 replicas next to the local daemon", "",
        "SmolLM2-135M (Q4_1 GGUF, the default model's real weights) served by `agentd serve`, then by",
        "`agentd serve --ray local --replicas N`, one after the other on the same machine. "
        f"{args.clients} concurrent greedy streams of {args.tokens} tokens, {args.rounds} rounds; then a "
        f"{args.turns}-turn chat on one session (16 tokens a turn). Medians over {args.repeats} repeats; "
        "the ratio is the configuration's figure over the local daemon's.", "",
        f"    flock /tmp/agentd-bench.lock python benchmarks/bench_ray.py --repeats {args.repeats}", "",
        f"CPU: {cpu}, {os.cpu_count()} cores.", "",
        "| configuration | tokens/s | ratio | inter-token ms | ratio | first token ms | ratio | session turn ms | ratio | session bytes into the object store, last turn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in results:
        row = [config]
        for key in ("tokens_per_s", "inter_token_ms", "first_token_ms", "turn_ms"):
            value = median(config, key)
            row += [f"{value:.1f}", f"{value / median('local', key):.2f}x"]
        moved = median(config, "session_bytes") if config != "local" else 0
        row.append(f"{moved / 2**20:.1f} MiB ({median(config, 'session_tokens'):.0f} tokens)" if moved else "0 (the state stays in the daemon)")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_ray.md")
    args = parser.parse_args()
    results = {config: run(config, args) for config in CONFIGS}
    text = report(results, args)
    print(text)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
