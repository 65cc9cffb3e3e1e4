"""Issue 12's stalls, before and after, side by side in one run on the real default models.

Two daemons, one after the other on the same machine: the tree at ``--before``
(the revision before issue 12's first fix, checked out into a temporary git
worktree) and the working tree. Each serves all-MiniLM-L6-v2 and SmolLM2-135M
(the embedded defaults' real weights) as a real ``agentd serve`` process on a
Unix socket, and is attacked the way the issue reports:

* ``oversized Tokenize``: a 3 MiB ``Tokenize`` while a second client sends
  ``Health/Check`` with a 5 s deadline every 0.25 s: how long until the big
  request is answered, and the health checks' latency (median, max, failures);
* ``10 MB prompt``: one ``Generate`` with a 10 MB prompt: time to its answer
  and the daemon's peak RSS growth (``VmHWM`` before/after, from /proc);
* ``small Embed behind a large one``: a one-text ``Embed`` sent 0.5 s after a
  256-text ``Embed`` of 60 KB texts started: the small one's latency, next to
  the same small ``Embed`` on the idle daemon (median of ``--repeats``).

Medians over ``--repeats``; the ratios are before / after of the same figure.

    flock /tmp/agentd-bench.lock python benchmarks/bench_attack.py --repeats 3
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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentd.default_models import minilm_dir, smollm2_gguf  # noqa: E402
from agentd.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402

BEFORE = "ba43ed9"  # the parent of issue 12's first fix (51262e3)


@contextmanager
def daemon(source: Path, home: Path) -> Iterator[tuple[str, int]]:
    """``agentd serve`` from the tree at ``source``: yields (target, pid)."""
    socket = home / "a.sock"
    env = {**os.environ, "PYTHONPATH": str(source), "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "XDG_STATE_HOME": str(home / "state")}
    args = [sys.executable, "-c", "from agentd.cli import main; main()", "serve", "--socket", str(socket),
            "--no-defaults", "--model", f"minilm={minilm_dir()}", "--model", f"smollm2={smollm2_gguf()}"]
    with open(home / "serve.err", "w") as err:
        process = subprocess.Popen(args, cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=err)
    target = f"unix://{socket}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"daemon from {source} exited: {(home / 'serve.err').read_text()[-2000:]}")
            if socket.exists() and _health(target, 5) is not None:
                break
            time.sleep(0.5)
        yield target, process.pid
    finally:
        process.kill()
        process.wait()


def _health(target: str, timeout: float) -> float | None:
    """Seconds one Health/Check took, or None if it failed."""
    with grpc.insecure_channel(target) as channel:
        started = time.monotonic()
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
        return time.monotonic() - started


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _timed(call) -> tuple[float, str]:  # noqa: ANN001
    started = time.monotonic()
    try:
        call()
        code = "OK"
    except grpc.RpcError as exc:
        code = exc.code().name
    return time.monotonic() - started, code


def oversized_tokenize(target: str) -> dict:
    text = "word " * (3 * 2**20 // 5)
    latencies: list[float | None] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            latencies.append(_health(target, 5))
            time.sleep(0.25)

    prober = threading.Thread(target=probe)
    prober.start()
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        seconds, code = _timed(lambda: stub.Tokenize(inference_pb2.TokenizeRequest(model="smollm2", text=text), timeout=120))
    time.sleep(1.0)
    done.set()
    prober.join()
    answered = [s for s in latencies if s is not None]
    return {"seconds": seconds, "code": code, "health_median": statistics.median(answered) if answered else None,
            "health_max": max(answered) if answered else None, "health_failed": latencies.count(None)}


def huge_prompt(target: str, pid: int) -> dict:
    prompt = "word " * (10 * 10**6 // 5)
    before = _status_kb(pid, "VmHWM")
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = inference_pb2.GenerateRequest(model="smollm2", prompt=prompt, max_tokens=1)
        seconds, code = _timed(lambda: list(stub.Generate(request, timeout=300)))
    return {"seconds": seconds, "code": code, "peak_rss_growth_mib": (_status_kb(pid, "VmHWM") - before) / 1024}


def small_behind_large(target: str) -> dict:
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        small = inference_pb2.EmbedRequest(model="minilm", texts=["pay my landlord"])
        alone, _ = _timed(lambda: stub.Embed(small, timeout=300))
        large = inference_pb2.EmbedRequest(model="minilm", texts=[f"text {i} " + "lorem ipsum " * 5000 for i in range(256)])
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(large=_timed(lambda: stub.Embed(large, timeout=600))))
        worker.start()
        time.sleep(0.5)
        behind, code = _timed(lambda: stub.Embed(small, timeout=600))
        worker.join()
    return {"alone": alone, "behind": behind, "code": code, "large_seconds": result["large"][0]}


def run(source: Path, repeats: int) -> dict:
    rounds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as home, daemon(source, Path(home)) as (target, pid):
            _timed(lambda: _health(target, 5))
            rounds.append({"tokenize": oversized_tokenize(target), "prompt": huge_prompt(target, pid),
                           "embed": small_behind_large(target)})
    return {"rounds": rounds}


def _median(rounds: list[dict], test: str, key: str) -> float | None:
    values = [r[test][key] for r in rounds if r[test][key] is not None]
    return statistics.median(values) if values else None


def report(results: dict[str, dict], before: str, repeats: int) -> str:
    rows = [
        ("3 MiB Tokenize: seconds to its answer", "tokenize", "seconds"),
        ("... health checks during it: median s", "tokenize", "health_median"),
        ("... health checks during it: max s", "tokenize", "health_max"),
        ("... health checks failed (5 s deadline)", "tokenize", "health_failed"),
        ("10 MB Generate prompt: seconds to its answer", "prompt", "seconds"),
        ("... peak RSS growth, MiB", "prompt", "peak_rss_growth_mib"),
        ("one-text Embed on the idle daemon: s", "embed", "alone"),
        ("one-text Embed behind a 256 x 60 KB Embed: s", "embed", "behind"),
        ("the 256 x 60 KB Embed itself: s", "embed", "large_seconds"),
    ]
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except StopIteration:
        pass
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"CPU: {cpu}, {os.cpu_count()} cores; medians of {repeats} rounds; before = {before}, after = the working tree at {head}.", "",
             "| attack | before | after | before / after |", "|---|---:|---:|---:|"]
    for label, test, key in rows:
        b, a = _median(results["before"]["rounds"], test, key), _median(results["after"]["rounds"], test, key)
        ratio = f"{b / a:.1f}x" if b and a else "-"
        lines.append(f"| {label} | {_fmt(b)} | {_fmt(a)} | {ratio} |")
    codes = {side: sorted({r[t]["code"] for r in results[side]["rounds"] for t in ("tokenize", "prompt")}) for side in results}
    lines += ["", f"Status of the oversized requests: before {codes['before']}, after {codes['after']}."]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else (f"{value:.0f}" if value >= 100 else f"{value:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_attack.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.before], check=True,
                       capture_output=True)
        try:
            results = {"before": run(worktree, args.repeats), "after": run(ROOT, args.repeats)}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    table = report(results, args.before, args.repeats)
    print(table)
    command = f"flock /tmp/agentd-bench.lock python benchmarks/bench_attack.py --repeats {args.repeats}"
    text = f"# Issue 12's stalls before and after\n\n{__doc__.split(chr(10), 1)[1].split('    flock')[0].strip()}\n\n    {command}\n\n{table}\n"
    temporary = args.out.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(args.out)
    (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
