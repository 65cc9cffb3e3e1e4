"""The continuous-batching engine: one step loop per model, on its own thread.

Each step:

1. drops cancelled and expired requests (queued or running), freeing their state;
2. admits queued requests into free slots (at most ``max_batch`` run at once);
3. prefills at most ``prefill_chunk`` prompt tokens in total, split fairly
   between the requests still prefilling (max-min fair, see :func:`fair_shares`):
   one long prompt is spread over several steps while every running stream
   keeps producing a token per step, and a short prompt that arrives behind a
   long one is prefilled at once instead of after it;
4. runs ONE ``backend.decode`` over every sequence that is decoding, whatever
   its length, and samples each row with that request's own
   :class:`~agentd.generation.GenerationSequence`. The grammar masks of the
   constrained ones (:mod:`agentd.constraint`) are computed on another thread
   while that decode runs (llguidance releases the GIL); a step with no
   constrained sequence does no constraint work at all.

A request may arrive with a ready state that already holds the first
``cached_tokens`` of its prompt (a session's next turn) and may ask to
``keep_state``: the state it ends in is then handed back on its handle
(:class:`~agentd.engine.handle.RetainedState`) instead of being freed. With a
:class:`~agentd.engine.prefix_cache.PrefixCache`, a fresh request starts from
the saved state of its longest cached ``prefix_boundaries`` prefix, and the
state at its longest uncached boundary is saved for the requests after it.

Requests wait in a bounded queue; beyond it ``submit`` raises
:class:`ResourceExhausted` at once. A backend error fails only the requests it
belongs to: a failed batched decode is retried row by row to find them (the
backend contract leaves a state unchanged when its step raises, as the KV
cache and the SSM states do). Torch-free: everything crosses the backend
contract as NumPy.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Sequence

import numpy as np

from agentd.backend import Backend, State
from agentd.constraint import start_masks
from agentd.engine.handle import RequestHandle, RetainedState
from agentd.engine.prefix_cache import PrefixCache
from agentd.errors import InvalidArgument, ResourceExhausted, Unavailable
from agentd.generation import GenerationEvent, GenerationSequence, SamplingParams

if TYPE_CHECKING:
    from agentd.constraint import Constraint, Grammar, MaskBatch
    from agentd.model import Model
    from agentd.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    """A request inside the engine: the caller's handle and the sequence it reads."""

    handle: RequestHandle
    sequence: GenerationSequence
    #: Hand the final state back on the handle rather than freeing it.
    keep_state: bool = False
    #: Prompt lengths at which the prefix cache may look up / save a state.
    boundaries: tuple[int, ...] = ()
    #: Prompt length at which to save the state into the prefix cache (None: nowhere).
    snapshot_at: int | None = None
    #: Sampled ids, recorded only for ``keep_state`` (the retained state's history).
    generated: list[int] = dataclasses.field(default_factory=list)


class Engine:
    """Serves concurrent generations of one decoder with continuous batching.

    ``submit`` is cheap and thread-safe (it validates and enqueues); all model
    work runs on the engine's thread, never on the caller's (or an asyncio
    loop's) thread. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        backend: Backend,
        tokenizer: "Tokenizer | None",
        *,
        eos_token_ids: Collection[int] | None = None,
        max_batch: int = 16,
        max_queue: int = 64,
        prefill_chunk: int = 256,
        prefix_cache: PrefixCache | None = None,
        name: str = "engine",
    ):
        if backend.info.kind != "decoder":
            raise InvalidArgument("model", f"{backend.info.architecture} is an encoder: it cannot generate")
        for field, value, least in (("max_batch", max_batch, 1), ("max_queue", max_queue, 0), ("prefill_chunk", prefill_chunk, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InvalidArgument(field, f"must be an integer >= {least}")
        self.backend = backend
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.prefix_cache = prefix_cache
        self.name = name
        # State bytes of the running sequences, measured by the engine thread after each step.
        self._state_bytes = 0

        # Guards _queue, _running and the flags; the engine thread waits on it when idle.
        self._cond = threading.Condition()
        self._queue: collections.deque[_Request] = collections.deque()
        # Admission order: the oldest request gets what the fair split of the prefill budget leaves over.
        self._running: list[_Request] = []
        self._accepting = True
        self._stopping = False
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._loop, name=f"agentd-{name}", daemon=True)
        self._thread.start()

    @classmethod
    def from_model(
        cls, model: "Model", *, prefix_cache: PrefixCache | None = None, name: str | None = None, **limits: int
    ) -> "Engine":
        """An engine over a loaded :class:`~agentd.model.Model` (its backend, tokenizer and EOS ids).

        ``limits`` are ``max_batch``, ``max_queue`` and ``prefill_chunk``.
        """
        # A tokenizer knows its EOS ids; without one the checkpoint's config names them.
        eos = model.eos_token_ids
        return cls(
            model.backend,
            model.tokenizer,
            eos_token_ids=eos,
            prefix_cache=prefix_cache,
            name=name or model.path.name,
            **limits,
        )

    # -- callers -----------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: np.ndarray | Sequence[int],
        params: SamplingParams,
        *,
        deadline: float | None = None,
        state: State | None = None,
        cached_tokens: int = 0,
        keep_state: bool = False,
        prefix_boundaries: Sequence[int] = (),
        constraint: "Constraint | Grammar | None" = None,
    ) -> RequestHandle:
        """Queue a generation; returns its handle at once.

        Everything is checked before the request is queued (``params``, prompt
        ids, prompt length against the context): :class:`InvalidArgument` or
        :class:`OutOfRange`. A full queue raises :class:`ResourceExhausted`, a
        closing engine :class:`Unavailable`; neither ever blocks. ``deadline``
        is a ``time.monotonic()`` value after which the request is cancelled.

        ``state`` (made by this backend) already holds the first
        ``cached_tokens`` prompt ids, which are then not prefilled again; the
        engine owns it from here on. With ``keep_state`` the final state is put
        on ``handle.retained``. ``prefix_boundaries`` are prompt lengths worth
        caching (e.g. where the system prompt ends) for the prefix cache.
        ``constraint`` keeps the output inside a grammar; an invalid one raises
        :class:`InvalidArgument` here. Pass a :class:`~agentd.constraint.Grammar`
        compiled beforehand (off the caller's event loop) to keep this call cheap.
        """
        sequence = GenerationSequence(
            self.backend.info,
            self.tokenizer,
            prompt_ids,
            params,
            eos_token_ids=self.eos_token_ids,
            state=state,
            constraint=constraint,
        )
        if (state is None) != (cached_tokens == 0) or not 0 <= cached_tokens < sequence.prompt.size:
            raise InvalidArgument(
                "cached_tokens", "must be 0 without a state, and leave at least one prompt token to prefill"
            )
        sequence.prefilled = cached_tokens
        handle = RequestHandle(next(self._ids), int(sequence.prompt.size), deadline)
        handle.cached_tokens = cached_tokens
        with self._cond:
            if not self._accepting:
                raise Unavailable(f"model {self.name!r} is shutting down")
            # Cancelled requests leave the queue at the next step; they hold no place meanwhile.
            if len(self._queue) >= self.max_queue and sum(not r.handle.cancel_requested for r in self._queue) >= self.max_queue:
                raise ResourceExhausted(
                    f"model {self.name!r}: {len(self._queue)} requests are already queued (max_queue); retry later"
                )
            boundaries = tuple(sorted({int(b) for b in prefix_boundaries if 0 < b < sequence.prompt.size}))
            self._queue.append(_Request(handle, sequence, keep_state=keep_state, boundaries=boundaries))
            self._cond.notify_all()
        return handle

    def active_count(self) -> int:
        """Requests holding a slot (prefilling or decoding)."""
        with self._cond:
            return len(self._running)

    def queued_count(self) -> int:
        """Requests waiting for a slot."""
        with self._cond:
            return len(self._queue)

    def state_bytes(self) -> int:
        """Bytes held by the running sequences' states (as of the last step)."""
        return self._state_bytes

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is queued or running; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._running, timeout)

    def close(self, *, drain: bool = False, grace: float | None = None) -> None:
        """Stop the engine. New submissions fail with :class:`Unavailable` at once.

        With ``drain``, running and queued requests may finish for up to
        ``grace`` seconds (None: as long as they take); whatever is left then
        ends with finish_reason "cancelled". Idempotent.
        """
        with self._cond:
            self._accepting = False
        if drain:
            self.wait_idle(grace)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the engine thread -------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._queue or self._running)
                if self._stopping:
                    break
            try:
                self._step()
            except Exception as exc:  # a bug in the step itself: fail everyone, keep serving
                log.exception("%s: engine step failed; failing its %d requests", self.name, self.active_count())
                with self._cond:
                    failed, self._running = self._running, []
                for request in failed:
                    self._fail(request, exc)
            self._measure()
            with self._cond:
                if not self._queue and not self._running:
                    self._cond.notify_all()  # wakes wait_idle() (only now: waking it every step costs the GIL)
        self._shutdown()
        self._measure()

    def _measure(self) -> None:
        try:
            self._state_bytes = sum(
                self.backend.state_bytes(r.sequence.state) for r in list(self._running) if r.sequence.state is not None
            )
        except Exception:  # a metric must never take the engine down
            log.debug("%s: state_bytes failed", self.name, exc_info=True)

    def _step(self) -> None:
        dropped = self._admit()
        for request in dropped:
            self._end(request, request.sequence.finish("cancelled"))
        now = time.monotonic()
        for request in list(self._running):
            if request.handle.cancel_requested or request.handle.expired(now):
                self._remove(request)
                self._end(request, request.sequence.finish("cancelled"))
        self._prefill()
        self._decode()

    def _admit(self) -> list[_Request]:
        """Move queued requests into free slots; returns the queued ones to drop."""
        now = time.monotonic()
        dropped: list[_Request] = []
        with self._cond:
            if any(r.handle.cancel_requested or r.handle.expired(now) for r in self._queue):
                keep: collections.deque[_Request] = collections.deque()
                for request in self._queue:
                    ended = request.handle.cancel_requested or request.handle.expired(now)
                    (dropped if ended else keep).append(request)
                self._queue = keep
            admitted = []
            while self._queue and len(self._running) < self.max_batch:
                request = self._queue.popleft()
                self._running.append(request)
                admitted.append(request)
        for request in admitted:
            try:
                self._prepare_state(request)
            except Exception as exc:  # whatever a backend raises fails this request only
                self._remove(request)
                self._fail(request, exc)
        return dropped

    def _prepare_state(self, request: _Request) -> None:
        """Give an admitted request its state: its own, a cached prefix's, or a new one."""
        sequence, cache = request.sequence, self.prefix_cache
        if sequence.state is None:
            hit = cache.lookup(sequence.prompt, request.boundaries) if cache is not None and request.boundaries else None
            if hit is not None:
                sequence.state = self.backend.load_state(hit[1])  # a copy: the entry stays untouched
                sequence.prefilled = hit[0]
                request.handle.cached_tokens = hit[0]
            else:
                sequence.state = self.backend.new_state()
        if cache is not None:
            # Save at the longest boundary past what the state already holds, unless cached.
            later = [b for b in request.boundaries if b > sequence.prefilled]
            if later and not cache.contains(sequence.prompt[: later[-1]]):
                request.snapshot_at = later[-1]

    def _prefill(self) -> None:
        """Spend at most ``prefill_chunk`` prompt tokens, shared fairly by the prefilling requests."""
        prefilling = [r for r in self._running if r.sequence.needs_prefill]
        if not prefilling:
            return
        needs = []
        for request in prefilling:
            sequence = request.sequence
            need = int(sequence.prompt.size) - sequence.prefilled
            if request.snapshot_at is not None:
                need = min(need, request.snapshot_at - sequence.prefilled)  # stop exactly at the boundary
            needs.append(need)
        for request, share in zip(prefilling, fair_shares(needs, self.prefill_chunk)):
            if share == 0:
                continue
            sequence = request.sequence
            chunk = sequence.next_prompt_chunk(share)
            try:
                logits = self.backend.prefill(chunk, sequence.state)
                events = sequence.accept_prefill(chunk.size, logits)
            except Exception as exc:  # a backend or tokenizer error fails this request only
                self._remove(request)
                self._fail(request, exc)
                continue
            if request.snapshot_at == sequence.prefilled:
                self._snapshot(request)
            self._publish(request, events)

    def _snapshot(self, request: _Request) -> None:
        """Save the state at ``snapshot_at`` into the prefix cache (a failure only skips it)."""
        boundary, request.snapshot_at = request.snapshot_at, None
        assert self.prefix_cache is not None and boundary is not None
        try:
            self.prefix_cache.store(request.sequence.prompt[:boundary], self.backend.save_state(request.sequence.state))
        except Exception:
            log.warning("%s: could not save a prefix state; continuing without", self.name, exc_info=True)

    def _decode(self) -> None:
        """One batched decode step for every decoding sequence."""
        batch = [r for r in self._running if r.sequence.decoding]
        if not batch:
            return
        constrained = [r for r in batch if r.sequence.matcher is not None]
        # The masks depend only on tokens already consumed: compute them during the forward pass.
        pending = start_masks([r.sequence.matcher for r in constrained]) if constrained else None
        try:
            logits = self._decode_rows(batch)
        except Exception:
            masks = self._masks(constrained, pending)
            # Find the culprits: a failed step leaves the states as they were.
            log.warning("%s: batched decode of %d failed; retrying row by row", self.name, len(batch), exc_info=True)
            for request in batch:
                try:
                    rows = self._decode_rows([request])
                except Exception as exc:
                    self._remove(request)
                    self._fail(request, exc)
                else:
                    self._sample(request, rows[0], masks.get(id(request)))
            return
        masks = self._masks(constrained, pending)
        for request, row in zip(batch, logits):
            self._sample(request, row, masks.get(id(request)))

    def _masks(self, constrained: list[_Request], pending: "MaskBatch | None") -> dict[int, np.ndarray]:
        """The finished mask of each constrained request, by ``id(request)``; if the batch
        computation failed, none (each sequence then computes its own, failing alone)."""
        if pending is None:
            return {}
        try:
            rows = pending.result()
        except Exception:
            log.warning("%s: batched grammar masks failed; computing them one by one", self.name, exc_info=True)
            return {}
        return {id(request): row for request, row in zip(constrained, rows)}

    def _decode_rows(self, batch: list[_Request]) -> np.ndarray:
        token_ids = np.array([r.sequence.last_token for r in batch], dtype=np.int64)  # (B,)
        logits = self.backend.decode(token_ids, [r.sequence.state for r in batch])
        if logits.shape[0] != len(batch):
            raise RuntimeError(f"backend returned {logits.shape[0]} logits rows for a batch of {len(batch)}")
        return logits  # (B, V)

    def _sample(self, request: _Request, row: np.ndarray, allowed: np.ndarray | None = None) -> None:
        try:
            events = request.sequence.accept_logits(row, allowed)
        except Exception as exc:  # e.g. a tokenizer error while detokenising: this request only
            self._remove(request)
            self._fail(request, exc)
            return
        self._publish(request, events)

    # -- bookkeeping ---------------------------------------------------------------------
    def _publish(self, request: _Request, events: list[GenerationEvent]) -> None:
        """Hand ``events`` to the caller; a final event frees the slot first."""
        if request.keep_state:
            request.generated.extend(e.token_id for e in events if e.token_id is not None)
        if request.sequence.finished:
            self._remove(request)
        for event in events:
            request.handle.publish(event)

    def _end(self, request: _Request, final: GenerationEvent) -> None:
        """Publish the final event of a request already out of the queue and slots."""
        self._release(request)
        request.handle.publish(final)

    def _remove(self, request: _Request) -> None:
        """Free the request's slot and state (before its final item is published, so a
        caller that has seen the end also sees the slot free)."""
        with self._cond:
            if request in self._running:
                self._running.remove(request)
        self._release(request)

    def _release(self, request: _Request) -> None:
        """Drop the request's state, or hand it back on the handle for ``keep_state``."""
        sequence = request.sequence
        if request.keep_state and sequence.state is not None:
            tokens = sequence.prompt[: sequence.prefilled].tolist()
            pending = None
            if sequence.prefilled >= sequence.prompt.size and request.generated:
                # The newest token was sampled but never fed back: it is not in the state.
                tokens += request.generated[:-1]
                pending = request.generated[-1]
            request.handle.retained = RetainedState(sequence.state, tuple(tokens), pending)
        sequence.state = None

    def _fail(self, request: _Request, error: BaseException) -> None:
        log.warning("%s: request %d failed: %s: %s", self.name, request.handle.request_id, type(error).__name__, error)
        request.sequence.state = None
        request.handle.retained = None  # a failed step may have left the state anywhere
        request.handle.fail(error)

    def _shutdown(self) -> None:
        """End every queued and running request as "cancelled" (the engine is stopping)."""
        with self._cond:
            left = list(self._running) + list(self._queue)
            self._running, self._queue = [], collections.deque()
            self._cond.notify_all()
        for request in left:
            self._end(request, request.sequence.finish("cancelled"))
        with self._cond:
            self._cond.notify_all()


def fair_shares(needs: Sequence[int], budget: int) -> list[int]:
    """Split ``budget`` tokens between requests needing ``needs`` tokens, max-min fairly.

    Water-filling: every request is offered an equal share and what a short request does not need
    goes to the others, so a request needing less than its share gets all it needs this step. Of
    equal needs the older request (earlier in ``needs``) is served last, so it receives the tokens
    an equal split leaves over.
    """
    shares = [0] * len(needs)
    left = budget
    order = sorted(range(len(needs)), key=lambda i: (needs[i], -i))
    for rank, index in enumerate(order):
        shares[index] = min(needs[index], left // (len(needs) - rank))
        left -= shares[index]
    return shares
