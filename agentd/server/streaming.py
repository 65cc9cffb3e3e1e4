"""Model work off the event loop: Generate through the model's engine, Embed in a worker thread.

A :class:`GenerationRun` submits one Generate to the decoder's
:class:`~agentd.engine.Engine` (continuous batching: its requests share
decode steps on the engine's thread) and streams the events back on the
asyncio loop. Closing the stream early (client cancel, deadline, server
stopping) cancels the request, which frees its slot by the engine's next
step. With a session the run borrows the session's state and gives the
final one back when the engine ends the request, whatever the reader did.

:func:`run_in_turns` runs an encoder's work (Embed, Classify) in a thread, a
piece at a time under the model's lock, so that concurrent callers take turns:
a small request waits for one piece of a large one, not for all of it.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, AsyncIterator, Callable, Sequence, TypeVar

from agentd.errors import ResourceExhausted
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


#: Roughly how many tokens one turn of encoder work covers (a text's cost is its length / 4,
#: at most the model's context): about a second of a small encoder's time on a phone-class CPU.
TURN_TOKENS = 2048


def pieces(texts: Sequence[str], context_length: int, turn_tokens: int = TURN_TOKENS) -> list[tuple[int, list[str]]]:
    """``texts`` cut into consecutive ``(start index, texts)`` pieces of about ``turn_tokens``
    estimated tokens each (at least one text per piece)."""
    found: list[tuple[int, list[str]]] = []
    start, cost = 0, 0
    for index, text in enumerate(texts):
        estimate = min(len(text) // 4 + 1, context_length)
        if index > start and cost + estimate > turn_tokens:
            found.append((start, list(texts[start:index])))
            start, cost = index, 0
        cost += estimate
    if start < len(texts):
        found.append((start, list(texts[start:])))
    return found


async def run_in_turns(
    served: ServedModel, texts: Sequence[str], work: Callable[[list[str], int], Sequence[T]], *, max_queue: int
) -> list[T]:
    """``work(piece, start)`` over ``texts`` piece by piece (see :func:`pieces`), concatenated.

    Each piece takes the model's lock anew, and an asyncio lock hands itself to its waiters in
    order: concurrent requests on one model take turns piece by piece (round robin), so a small
    request is not starved behind a large one. The lock is held until a piece's thread ends,
    also if the caller is cancelled meanwhile. As for a decoder's engine, at most ``max_queue``
    requests wait behind the running one; beyond that :class:`ResourceExhausted` at once.
    """
    assert served.model is not None
    if served.encoder_requests > max_queue:
        raise ResourceExhausted(
            f"model {served.name!r}: {served.encoder_requests - 1} requests are already waiting (max_queue); retry later"
        )
    served.encoder_requests += 1
    try:
        results: list[T] = []
        for start, piece in pieces(texts, served.model.info.context_length):
            async with served.lock:
                worker = asyncio.ensure_future(asyncio.to_thread(work, piece, start))
                await _wait_for(worker)
                results.extend(worker.result())
        return results
    finally:
        served.encoder_requests -= 1


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
