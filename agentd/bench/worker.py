"""One engine in its own process, driven over a pipe: ``python -m agentd.bench.worker``.

The harness sends one JSON request a line on stdin and reads one JSON reply a
line; the process's own stdout is pointed at stderr first, so whatever a
native library prints there (llama.cpp, onnxruntime) lands in the engine's log
instead of in the protocol. When the process dies instead of answering (a
segfault in a peer's kernel), :class:`Worker` says which signal killed it.

Requests: ``prepare`` (build the engine from its factory, load the model),
``measure`` (a prefill of the given prompt, then ``decode`` greedy steps),
``quit``.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from .engines import EngineUnavailable


class WorkerDied(Exception):
    """The worker process ended (crashed, killed, timed out) instead of answering."""


class Worker:
    """The harness's side of one worker process."""

    def __init__(self, log: Path, threads: int, env: dict[str, str] | None = None):
        self.log = log
        environment = dict(os.environ if env is None else env)
        # The same intra-op thread count for every runtime in the process (OpenMP, MKL, onnxruntime's own).
        environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
                           PYTHONUNBUFFERED="1")
        with log.open("a") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agentd.bench.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=handle, env=environment, text=True,
            )

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait up to ``timeout`` seconds for its reply."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._death()) from None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.process.kill()
            self.process.wait()
            raise WorkerDied(f"no answer within {timeout:.0f} s (killed)")
        line = self.process.stdout.readline()
        if not line:
            raise WorkerDied(self._death())
        return json.loads(line)

    def _death(self) -> str:
        code = self.process.wait()
        if code < 0:
            try:
                return f"crashed ({signal.Signals(-code).name})"
            except ValueError:
                return f"crashed (signal {-code})"
        return f"exited with status {code}"

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request({"op": "quit"}, timeout=30)
            except WorkerDied:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


# -- the worker process ------------------------------------------------------------------------
def _rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _build(factory: str, options: dict[str, Any]) -> Any:
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)(**options)


def _handle(engine: Any, request: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    op = request["op"]
    if op == "prepare":
        engine = _build(request["factory"], request.get("options", {}))
        started = time.perf_counter()
        engine.prepare(Path(request["model_dir"]), Path(request["work"]), int(request["threads"]))
        return engine, {"ok": True, "info": engine.info, "prepare_s": time.perf_counter() - started,
                        "rss_mib": _rss_mib(), "bytes_per_token": engine.bytes_per_token()}
    if op == "measure":
        prompt = np.asarray(request["prompt"], dtype=np.int64)
        started = time.perf_counter()
        tokens = [engine.prefill(prompt)]
        prefilled = time.perf_counter()
        for _ in range(int(request["decode"])):
            tokens.append(engine.decode(tokens[-1]))
        done = time.perf_counter()
        return engine, {"ok": True, "prefill_s": prefilled - started, "decode_s": done - prefilled, "tokens": tokens,
                        "rss_mib": _rss_mib()}
    raise ValueError(f"unknown request {op!r}")


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer requests until ``quit`` or end of input."""
    engine = None
    for line in requests:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            engine, reply = _handle(engine, request)
        except EngineUnavailable as exc:
            reply = {"ok": False, "unavailable": str(exc)}
        except Exception as exc:  # a peer's failure is a result to report, not a reason to stop
            import traceback

            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # native libraries' prints go to the log, not into the protocol
    sys.stdout = sys.stderr
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
