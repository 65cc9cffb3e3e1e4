"""Test doubles for the engine: a recording, gateable NumPy backend and tiny real checkpoints.

:class:`RecordingBackend` is a decoder whose logits are a pure function of a
sequence's own token history (a rolling hash seeds the noise), so a sequence
decoded in any batch gets exactly the logits it gets alone, and mixing up two
rows changes the tokens. It records every prefill and decode call with the
tags of the states involved, so tests can read the schedule the engine ran.
A :class:`StepGate` lets a test hold the engine inside ``decode`` and release
it one step at a time: schedules are then observed without any timing.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np

from agentd.backend import Backend, ModelInfo

#: A prompt starting with this id makes the sequence's third decode raise.
DECODE_POISON = 62
#: A prompt containing this id makes its prefill raise.
PREFILL_POISON = 63
_HASH_MOD = (1 << 61) - 1


class StepGate:
    """Counts permits for ``decode`` calls; ``open()`` lets every call through."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._permits = 0
        self._open = False
        self._waiting = 0

    def allow(self, steps: int = 1) -> None:
        with self._cond:
            self._permits += steps
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def wait_blocked(self) -> None:
        """Return once a ``decode`` call is waiting for a permit (the engine is mid-step)."""
        with self._cond:
            self._cond.wait_for(lambda: self._waiting > 0)

    def enter(self) -> None:
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open or self._permits > 0)
            self._waiting -= 1
            if not self._open:
                self._permits -= 1


class FakeState:
    """One sequence: its tokens, a rolling hash of them, and a tag naming it in the log."""

    def __init__(self, tag: int):
        self.tag = tag
        self.tokens: list[int] = []
        self.digest = 17
        self.decodes = 0

    def push(self, token: int) -> None:
        self.tokens.append(token)
        self.digest = (self.digest * 1_000_003 + token + 1) % _HASH_MOD


class RecordingBackend(Backend):
    """Deterministic history-hash logits; logs ``("prefill", tag, n)`` and ``("decode", tags)``."""

    def __init__(self, vocab_size: int = 64, *, context_length: int = 4096, gate: StepGate | None = None):
        self.info = ModelInfo(
            architecture="RecordingForCausalLM",
            kind="decoder",
            parameters=0,
            context_length=context_length,
            vocab_size=vocab_size,
            dtype="float32",
            state_bytes_per_sequence=64,
        )
        self.gate = gate
        self.log: list[tuple] = []
        #: States not yet garbage: the engine must not keep finished ones alive.
        self.live: weakref.WeakSet[FakeState] = weakref.WeakSet()
        self._tags = itertools.count()
        self._lock = threading.Lock()

    def new_state(self) -> FakeState:
        state = FakeState(next(self._tags))
        self.live.add(state)
        return state

    def prefill(self, token_ids: np.ndarray, state: FakeState, *, all_logits: bool = False) -> np.ndarray:
        assert token_ids.dtype == np.int64 and token_ids.ndim == 1 and token_ids.size > 0
        if PREFILL_POISON in token_ids.tolist():
            raise RuntimeError("poisoned prefill")
        for token in token_ids.tolist():
            state.push(token)
        self._record(("prefill", state.tag, int(token_ids.size)))
        return self._logits(state)[None, :]  # (1, V)

    def decode(self, token_ids: np.ndarray, states: Sequence[FakeState]) -> np.ndarray:
        assert token_ids.dtype == np.int64 and token_ids.shape == (len(states),)
        assert len({id(s) for s in states}) == len(states)
        if self.gate is not None:
            self.gate.enter()
        # Raise before touching any state, as the real backends do.
        if any(s.tokens[0] == DECODE_POISON and s.decodes >= 2 for s in states):
            raise RuntimeError("poisoned decode")
        for token, state in zip(token_ids.tolist(), states):
            state.push(token)
            state.decodes += 1
        self._record(("decode", tuple(s.tag for s in states)))
        return np.stack([self._logits(s) for s in states])  # (B, V)

    def state_bytes(self, state: FakeState) -> int:
        return 64

    def decode_sizes(self) -> list[int]:
        return [len(entry[1]) for entry in self.log if entry[0] == "decode"]

    def _record(self, entry: tuple) -> None:
        with self._lock:
            self.log.append(entry)

    def _logits(self, state: FakeState) -> np.ndarray:
        return 3.0 * np.random.default_rng(state.digest).standard_normal(self.info.vocab_size).astype(np.float32)


def save_tiny_llama(directory: Path, *, seed: int = 0) -> Path:
    """A random-weight HF LlamaForCausalLM (hidden 64, 2 layers, vocab 128) saved to ``directory``."""
    from _llama_fixtures import make_hf_model

    model = make_hf_model("llama", seed=seed, vocab_size=128)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def save_tiny_mamba(directory: Path) -> Path:
    """A random-weight HF MambaForCausalLM (hidden 32, 2 layers, vocab 128) saved to ``directory``."""
    from _ssm_fixtures import make_hf_mamba

    make_hf_mamba(directory)
    return directory
