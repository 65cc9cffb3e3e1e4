"""Model work off the event loop: Generate through the model's engine, Embed in a worker thread.

A :class:`GenerationRun` submits one Generate to the decoder's
:class:`~agentd.engine.Engine` (continuous batching: its requests share
decode steps on the engine's thread) and streams the events back on the
asyncio loop. Closing the stream early (client cancel, deadline, server
stopping) cancels the request, which frees its slot by the engine's next
step. With a session the run borrows the session's state and gives the
final one back when the engine ends the request, whatever the reader did.

``run_exclusive`` runs one-shot work (an encoder's embed) in a thread under
the model's lock.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, AsyncIterator, Callable, Sequence, TypeVar

from agentd.server import metrics
from agentd.server.served import ServedModel
from agentd.server.sessions import Outcome, SessionStore

if TYPE_CHECKING:
    from agentd.constraint import Grammar
    from agentd.engine import RequestHandle
    from agentd.generation import GenerationEvent, SamplingParams

T = TypeVar("T")


class GenerationRun:
    """One Generate request on a ready decoder; :meth:`start`, then iterate :meth:`events` once.

    ``completion_tokens`` and ``finish_reason`` are what the engine really did,
    which after a cancellation can be more than the client received.
    """

    def __init__(
        self,
        served: ServedModel,
        prompt_ids: Sequence[int],
        params: "SamplingParams",
        *,
        started: float,
        deadline: float | None = None,
        sessions: SessionStore | None = None,
        session_id: str = "",
        prefix_boundaries: Sequence[int] = (),
        constraint: "Grammar | None" = None,
    ):
        self.served = served
        self.prompt_ids = prompt_ids
        self.params = params
        self.started = started
        self.deadline = deadline
        self.sessions = sessions
        self.session_id = session_id
        self.prefix_boundaries = prefix_boundaries
        #: The grammar the output must follow (compiled for this model), or None.
        self.constraint = constraint
        #: How the session was used (None without a session).
        self.outcome: Outcome | None = None
        self.handle: "RequestHandle | None" = None

    @property
    def completion_tokens(self) -> int:
        return self.handle.completion_tokens if self.handle is not None else 0

    @property
    def finish_reason(self) -> str | None:
        return self.handle.finish_reason if self.handle is not None else None

    @property
    def cached_tokens(self) -> int:
        return self.handle.cached_tokens if self.handle is not None else 0

    def start(self) -> None:
        """Submit to the engine: raises at once if the request is invalid or the queue is full."""
        engine = self.served.engine
        assert engine is not None, f"{self.served.name} has no engine"
        if not self.session_id:
            self.handle = engine.submit(
                self.prompt_ids,
                self.params,
                deadline=self.deadline,
                prefix_boundaries=self.prefix_boundaries,
                constraint=self.constraint,
            )
            return
        assert self.sessions is not None
        sessions, backend = self.sessions, engine.backend
        session, plan = sessions.begin(self.session_id, self.served.name, self.prompt_ids)
        try:
            handle = engine.submit(
                self.prompt_ids,
                self.params,
                deadline=self.deadline,
                state=plan.state,
                cached_tokens=plan.cached_tokens,
                keep_state=True,
                # A continued session already holds more than any shared prefix.
                prefix_boundaries=() if plan.outcome == "continued" else self.prefix_boundaries,
                constraint=self.constraint,
            )
        except BaseException:
            sessions.abort(session, plan)
            raise
        handle.on_done(lambda done: sessions.finish(session, done.retained, backend))
        self.outcome, self.handle = plan.outcome, handle

    async def events(self) -> AsyncIterator["GenerationEvent"]:
        """The engine's events, timed into the latency histograms."""
        assert self.handle is not None, "start() first"
        model = self.served.name
        previous: float | None = None
        try:
            async with aclosing(self.handle.aiter()) as events:
                async for event in events:
                    if event.token_id is not None:
                        now = time.monotonic()
                        if previous is None:
                            metrics.TIME_TO_FIRST_TOKEN.labels(model).observe(now - self.started)
                        else:
                            metrics.INTER_TOKEN_LATENCY.labels(model).observe(now - previous)
                        previous = now
                    yield event
        finally:
            self._count_tokens()

    def _count_tokens(self) -> None:
        model, cached = self.served.name, self.cached_tokens
        metrics.GENERATED_TOKENS.labels(model).inc(self.completion_tokens)
        metrics.PROMPT_TOKENS.labels(model, "cached").inc(cached)
        metrics.PROMPT_TOKENS.labels(model, "prefilled").inc(max(0, len(self.prompt_ids) - cached))


async def run_exclusive(served: ServedModel, work: Callable[[], T]) -> T:
    """Run ``work`` in a thread while holding the model's lock, which outlives a cancellation."""
    async with served.lock:
        worker = asyncio.ensure_future(asyncio.to_thread(work))
        await _wait_for(worker)
        return worker.result()


async def _wait_for(worker: "asyncio.Future[object]") -> None:
    """Wait until ``worker`` ends even if cancelled meanwhile, then re-raise the cancellation.

    Releasing the lock under a still-running worker would let two calls touch
    one model at once.
    """
    interrupted = False
    while not worker.done():
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
