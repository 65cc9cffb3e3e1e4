"""Backend conformance: what :mod:`agentd.backend` promises, checked on a loaded backend.

Every backend the registry knows runs these checks in
``tests/test_backend_conformance.py``. A third-party backend author runs the
same checks on a small model of theirs, with NumPy only (no torch, no pytest)::

    import agentd
    from agentd import conformance

    backend = agentd.load_model("path/to/a/tiny/model").backend
    conformance.check_backend(
        backend,
        tolerance=conformance.Tolerance(atol=1e-4, rtol=1e-4),
        # Make the decode under test raise InjectedFailure after it has done part
        # of its work: here a method the backend calls once per row fails on the
        # batch's last row (a torch backend would fail its last layer instead).
        inject_failure=lambda batch: conformance.fail_on_call(backend, "_row", after=batch - 1),
    )

To have agentd's own suite (``tests/test_backend_conformance.py``) run your
backend next to the built-in ones, offer a :class:`Fixture` from your
package's ``pyproject.toml``::

    [project.entry-points."agentd.conformance"]
    mybackend = "my_plugin:conformance_fixture"   # the BackendSpec name; returns Fixture(s)

The suite fails for any registered backend that has no fixture.

Each ``check_*`` raises :class:`ConformanceError` saying what broke. What is checked:

decoders
  * :func:`check_prefill_decode_matches_forward`: a prompt prefilled in two
    chunks and then decoded token by token gives the logits of one full
    forward over the whole sequence (within ``tolerance``);
  * :func:`check_batched_decode_matches_alone`: sequences of different
    lengths decoded together give each the logits it gets decoded alone
    (within ``tolerance.batch_*``);
  * :func:`check_save_load_round_trip`: ``load_state(save_state(s))`` saves
    to the same bytes and continues decoding bit for bit like ``s``;
  * :func:`check_failed_decode_is_all_or_nothing`: when ``decode`` raises in
    the middle of a batch (a batch of one and a larger one), every state saves
    to the bytes it saved before, and decoding on continues bit for bit like a
    run that never failed. The engine relies on this: it retries a failed batch
    row by row, and a half-committed row would be decoded twice.

encoders
  * :func:`check_embed_batch_matches_alone`: a batch of inputs of different
    lengths embeds each like embedding it alone.

both
  * :func:`check_info`: ``ModelInfo`` is complete, including ``weight_bytes``.

A :class:`Fixture` packages one backend variant for the test module: a
builder of a small model, the failure injector, the tolerance. An installed
plugin can contribute fixtures for its backends through the entry-point group
:data:`ENTRY_POINT_GROUP` (name: the backend's name; value: a callable
returning a :class:`Fixture` or a list of them), and the conformance test
module then runs them like the built-in ones.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Literal, Sequence

import numpy as np

from agentd.backend import Backend

#: Entry-point group through which a plugin offers conformance fixtures for its backends.
ENTRY_POINT_GROUP = "agentd.conformance"

#: Given the batch size of the decode about to run, a context manager inside which that
#: decode raises :class:`InjectedFailure` after it has started its work.
FailureInjector = Callable[[int], ContextManager[Any]]


class ConformanceError(AssertionError):
    """A backend broke the contract; the message says how."""


class InjectedFailure(RuntimeError):
    """Raised by a failure injector inside ``decode`` (never by a backend on its own)."""


@dataclass(frozen=True)
class Tolerance:
    """How close logits (or embeddings) must be, as in ``numpy.testing.assert_allclose``."""

    #: Prefill + decode against one full forward: the chunked/parallel form and the
    #: recurrent form are different arithmetic, so they agree to rounding only.
    atol: float = 1e-5
    rtol: float = 1e-5
    #: A row decoded in a batch against the same row decoded alone: matmul kernels
    #: may pick other blockings for other row counts.
    batch_atol: float = 1e-5
    batch_rtol: float = 1e-5


@dataclass(frozen=True)
class Workload:
    """Prompts of different lengths and the tokens fed to them, one decode step at a time."""

    prompts: tuple[tuple[int, ...], ...]
    #: ``steps[t][b]``: the token decoded for prompt ``b`` at step ``t``.
    steps: tuple[tuple[int, ...], ...]

    def sequence(self, b: int) -> list[int]:
        """Prompt ``b`` followed by every token decoded for it."""
        return [*self.prompts[b], *(step[b] for step in self.steps)]


def workload(vocab_size: int, *, lengths: Sequence[int] = (6, 1, 11), steps: int = 4, seed: int = 0) -> Workload:
    """Reproducible random prompts of ``lengths`` (include a one-token prompt) and decode tokens."""
    if len(lengths) < 2 or len(set(lengths)) < 2:
        raise ValueError("need at least two prompts of different lengths")
    if steps < 3:
        raise ValueError("need at least three decode steps (one before a failure, two after)")
    rng = np.random.default_rng(seed)
    prompts = tuple(tuple(int(t) for t in rng.integers(0, vocab_size, n)) for n in lengths)
    decoded = tuple(tuple(int(t) for t in rng.integers(0, vocab_size, len(lengths))) for _ in range(steps))
    return Workload(prompts, decoded)


@dataclass(frozen=True)
class Fixture:
    """One backend variant as the conformance test module runs it."""

    #: Short name of the variant (a test id), e.g. ``llama-tied``.
    variant: str
    kind: Literal["decoder", "encoder"]
    #: Writes a small model under the (empty) directory and returns its loaded backend.
    build: Callable[[Path], Backend]
    #: ``inject(backend)`` -> the decode failure injector (decoders).
    inject: Callable[[Backend], FailureInjector] | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    #: Mark the variant's tests ``slow`` (still run in CI).
    slow: bool = False
    #: Why ``tolerance`` is what it is (shown in the test module).
    why: str = ""


# -- injecting a failure -------------------------------------------------------------


@contextlib.contextmanager
def fail_on_call(owner: Any, attribute: str, *, after: int) -> Iterator[None]:
    """Within the block, ``owner.attribute`` runs ``after`` times, then raises :class:`InjectedFailure`.

    ``owner`` is an instance (its method is shadowed by an instance attribute,
    restored on exit) — a layer method the backend calls once per layer, or the
    ``run`` of an onnxruntime session the backend calls once per row.
    """
    original = getattr(owner, attribute)
    shadowed = attribute in getattr(owner, "__dict__", {})
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > after:
            raise InjectedFailure(f"injected failure in {attribute} (call {calls})")
        return original(*args, **kwargs)

    setattr(owner, attribute, failing)
    try:
        yield
    finally:
        if shadowed:
            setattr(owner, attribute, original)
        else:
            delattr(owner, attribute)


# -- the checks ------------------------------------------------------------------------


def check_backend(
    backend: Backend,
    *,
    tolerance: Tolerance = Tolerance(),
    inject_failure: FailureInjector | None = None,
    work: Workload | None = None,
) -> list[str]:
    """Every check that applies to ``backend``'s kind; returns the names of those run.

    A decoder needs ``inject_failure``: all-or-nothing decode is part of the contract.
    """
    check_info(backend)
    if backend.info.kind == "encoder":
        check_embed_batch_matches_alone(backend, tolerance=tolerance)
        return ["info", "embed_batch"]
    if inject_failure is None:
        raise ConformanceError("a decoder needs a failure injector to check that a failed decode changes nothing")
    work = work or workload(backend.info.vocab_size)
    check_prefill_decode_matches_forward(backend, work, tolerance=tolerance)
    check_batched_decode_matches_alone(backend, work, tolerance=tolerance)
    check_save_load_round_trip(backend, work)
    check_failed_decode_is_all_or_nothing(backend, work, inject_failure)
    return ["info", "prefill_decode", "batched_decode", "save_load", "failed_decode"]


def check_info(backend: Backend) -> None:
    """``ModelInfo`` is filled in: kind, sizes, and the resident weight bytes."""
    info = backend.info
    if info.kind not in ("decoder", "encoder"):
        raise ConformanceError(f"info.kind is {info.kind!r}")
    for name in ("parameters", "context_length", "vocab_size", "weight_bytes"):
        value = getattr(info, name)
        if not isinstance(value, int) or value <= 0:
            raise ConformanceError(f"info.{name} must be a positive int, got {value!r}")
    if info.kind == "encoder" and info.embedding_dim <= 0:
        raise ConformanceError("an encoder's info.embedding_dim must be positive")
    if info.kind == "decoder" and info.state_bytes_per_token <= 0 and info.state_bytes_per_sequence <= 0:
        raise ConformanceError("a decoder's state takes memory: state_bytes_per_token or _per_sequence must be set")


def check_prefill_decode_matches_forward(backend: Backend, work: Workload, *, tolerance: Tolerance) -> None:
    """Prefill (in two chunks when the prompt allows) then decode == one forward over it all."""
    vocab = backend.info.vocab_size
    for b, prompt in enumerate(work.prompts):
        sequence = work.sequence(b)
        full = _logits(backend.prefill(_ids(sequence), backend.new_state(), all_logits=True), len(sequence), vocab, "prefill")
        last = _logits(backend.prefill(_ids(sequence), backend.new_state()), 1, vocab, "prefill(all_logits=False)")
        _close(last[0], full[-1], tolerance.atol, tolerance.rtol, f"prompt {b}: last-position prefill vs all_logits prefill")

        state = backend.new_state()
        cut = len(prompt) - 2 if len(prompt) >= 3 else len(prompt)  # a short second chunk (conv windows carry)
        rows = [_logits(backend.prefill(_ids(prompt[:cut]), state, all_logits=True), cut, vocab, "prefill")]
        if cut < len(prompt):
            rows.append(_logits(backend.prefill(_ids(prompt[cut:]), state, all_logits=True), len(prompt) - cut, vocab, "prefill"))
        for step in work.steps:
            rows.append(_logits(backend.decode(_ids([step[b]]), [state]), 1, vocab, "decode"))
        incremental = np.concatenate(rows)
        _close(incremental, full, tolerance.atol, tolerance.rtol, f"prompt {b} (length {len(prompt)}): prefill + decode vs one forward")


def check_batched_decode_matches_alone(backend: Backend, work: Workload, *, tolerance: Tolerance) -> None:
    """Sequences of different lengths decoded in one batch == each decoded alone."""
    batch = len(work.prompts)
    together = _prefilled(backend, work)
    alone = [_prefilled(backend, work, [b])[0] for b in range(batch)]
    for t, step in enumerate(work.steps):
        rows = _logits(backend.decode(_ids(step), together), batch, backend.info.vocab_size, "decode")
        for b in range(batch):
            single = _logits(backend.decode(_ids([step[b]]), [alone[b]]), 1, backend.info.vocab_size, "decode")
            _close(rows[b], single[0], tolerance.batch_atol, tolerance.batch_rtol, f"step {t}, row {b}: batched vs alone")


def check_save_load_round_trip(backend: Backend, work: Workload) -> None:
    """A restored state saves to the same bytes and decodes on bit for bit like the original."""
    originals = _prefilled(backend, work)
    backend.decode(_ids(work.steps[0]), originals)
    blobs = [_save(backend, state) for state in originals]
    restored = [backend.load_state(blob) for blob in blobs]
    for b, (blob, state) in enumerate(zip(blobs, restored)):
        if _save(backend, state) != blob:
            raise ConformanceError(f"state {b}: load_state(save_state(s)) saves to different bytes")
        if backend.state_bytes(state) <= 0:
            raise ConformanceError(f"state {b}: state_bytes of a restored state is {backend.state_bytes(state)}")
    for t, step in enumerate(work.steps[1:], start=1):
        want = backend.decode(_ids(step), originals)
        got = backend.decode(_ids(step), restored)
        _equal(got, want, f"step {t}: decoding a restored batch vs the original batch")
    for b, (a, c) in enumerate(zip(originals, restored)):
        if _save(backend, a) != _save(backend, c):
            raise ConformanceError(f"state {b}: original and restored states diverged after decoding the same tokens")


def check_failed_decode_is_all_or_nothing(backend: Backend, work: Workload, inject_failure: FailureInjector) -> None:
    """A decode that raises midway leaves every state as it was, for a batch of one and of all."""
    for rows in ([0], list(range(len(work.prompts)))):
        label = f"batch of {len(rows)}"
        states = _prefilled(backend, work, rows)
        backend.decode(_ids([work.steps[0][b] for b in rows]), states)
        before = [_save(backend, state) for state in states]
        failing = _ids([work.steps[1][b] for b in rows])
        try:
            with inject_failure(len(rows)):
                backend.decode(failing, states)
        except InjectedFailure:
            pass
        else:
            raise ConformanceError(f"{label}: the injected failure did not fire (decode returned)")
        for b, (state, saved) in zip(rows, zip(states, before)):
            if _save(backend, state) != saved:
                raise ConformanceError(f"{label}: state of row {b} changed although decode raised")

        undisturbed = _prefilled(backend, work, rows)
        backend.decode(_ids([work.steps[0][b] for b in rows]), undisturbed)
        for t in range(1, len(work.steps)):
            tokens = _ids([work.steps[t][b] for b in rows])
            got = backend.decode(tokens, states)
            want = backend.decode(tokens, undisturbed)
            _equal(got, want, f"{label}, step {t}: decoding on after a failed decode vs an undisturbed run")


def check_embed_batch_matches_alone(
    backend: Backend, *, tolerance: Tolerance, lengths: Sequence[int] = (5, 1, 12, 3), seed: int = 0
) -> None:
    """A batch of different lengths embeds each input like embedding it alone."""
    info = backend.info
    rng = np.random.default_rng(seed)
    batch = [[int(t) for t in rng.integers(0, info.vocab_size, n)] for n in lengths]
    together = np.asarray(backend.embed(batch))
    if together.shape != (len(batch), info.embedding_dim) or together.dtype != np.float32:
        raise ConformanceError(
            f"embed returned {together.dtype} {together.shape}, expected float32 {(len(batch), info.embedding_dim)}"
        )
    for row, ids in enumerate(batch):
        alone = np.asarray(backend.embed([ids]))
        _close(together[row], alone[0], tolerance.batch_atol, tolerance.batch_rtol, f"input {row} (length {len(ids)}): in a batch vs alone")


# -- helpers -------------------------------------------------------------------------


def _ids(tokens: Sequence[int]) -> np.ndarray:
    return np.asarray(tokens, dtype=np.int64)


def _prefilled(backend: Backend, work: Workload, rows: Sequence[int] | None = None) -> list[Any]:
    states = []
    for b in range(len(work.prompts)) if rows is None else rows:
        state = backend.new_state()
        backend.prefill(_ids(work.prompts[b]), state)
        states.append(state)
    return states


def _save(backend: Backend, state: Any) -> bytes:
    blob = backend.save_state(state)
    if not isinstance(blob, (bytes, bytearray)):
        raise ConformanceError(f"save_state returned {type(blob).__name__}, not bytes")
    return bytes(blob)


def _logits(value: Any, rows: int, vocab: int, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != (rows, vocab) or array.dtype != np.float32:
        raise ConformanceError(f"{what} returned {array.dtype} {array.shape}, expected float32 {(rows, vocab)}")
    return array


def _close(got: np.ndarray, want: np.ndarray, atol: float, rtol: float, what: str) -> None:
    if not np.allclose(got, want, atol=atol, rtol=rtol):
        worst = float(np.max(np.abs(got - want)))
        raise ConformanceError(f"{what}: max |difference| {worst:.3g} exceeds atol={atol:g} rtol={rtol:g}")


def _equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    if not np.array_equal(np.asarray(got), np.asarray(want)):
        worst = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
        raise ConformanceError(f"{what}: not bit for bit equal (max |difference| {worst:.3g})")
