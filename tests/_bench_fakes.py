"""Fake engines for tests/test_bench_cli.py, imported by ``agentd bench``'s worker processes.

They answer like a real engine (a next token per call) without a model, and
misbehave on purpose: a segfault where a peer's native kernel would crash,
a refusal where a peer is not installed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from agentd.bench.engines import Engine, EngineUnavailable


class FakeEngine(Engine):
    """Counts tokens; ``crash_in`` = ``prepare`` or ``decode`` kills the process with SIGSEGV there."""

    def __init__(self, crash_in: str | None = None, missing: bool = False):
        super().__init__()
        self.crash_in, self.missing = crash_in, missing

    def prepare(self, model_dir: Path, work: Path, threads: int) -> None:
        if self.missing:
            raise EngineUnavailable("fake peer is not installed")
        if self.crash_in == "prepare":
            os.kill(os.getpid(), signal.SIGSEGV)
        self.info["build"] = "fake build"
        self.calls = 0

    def prefill(self, tokens: np.ndarray) -> int:
        return int(tokens[-1]) + 1

    def decode(self, token: int) -> int:
        self.calls += 1
        if self.crash_in == "decode" and self.calls > 4:  # past the harness's warm-up
            os.kill(os.getpid(), signal.SIGSEGV)
        return token + 1
