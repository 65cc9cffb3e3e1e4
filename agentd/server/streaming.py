"""Runs a blocking generation in a worker thread and streams its events to the event loop.

The generation loop (agentd.generation) is synchronous and CPU-bound; the
gRPC server is asyncio. A worker thread iterates ``Model.stream`` and hands
each event to the loop through an ``asyncio.Queue`` (``call_soon_threadsafe``).
When the consumer goes away (client cancelled, deadline, server stopping) the
``cancelled`` flag is set and the loop stops at its next token; the model lock
is released only once the worker has really finished, so the next request
never overlaps it. ``run_exclusive`` does the same for one-shot work (Embed).

This is the one seam the batching engine (agentd.engine) replaces: the
servicer only needs an async iterator of GenerationEvents.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, AsyncIterator, Callable, Sequence, TypeVar

from agentd.server.served import ServedModel

if TYPE_CHECKING:
    from agentd.generation import GenerationEvent, SamplingParams

T = TypeVar("T")


class _Done:
    """End-of-stream marker; carries the worker's exception, if any."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class GenerationRun:
    """One generation request; iterate ``events()`` once.

    ``completion_tokens`` and ``finish_reason`` are what the worker really did,
    which after a cancellation can be more than the client received.
    """

    def __init__(self, served: ServedModel, prompt_ids: Sequence[int], params: "SamplingParams"):
        self.served = served
        self.prompt_ids = prompt_ids
        self.params = params
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    async def events(self) -> AsyncIterator["GenerationEvent"]:
        """Yield the events; holds the model's lock while the worker runs."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue["GenerationEvent | _Done"] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: "GenerationEvent | _Done") -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        def work() -> None:
            try:
                for event in self.served.model.stream(self.prompt_ids, self.params, cancelled=stop.is_set):
                    self.completion_tokens = event.completion_tokens
                    self.finish_reason = event.finish_reason
                    deliver(event)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the loop side
                deliver(_Done(exc))
            else:
                deliver(_Done())

        async with self.served.lock:
            worker = asyncio.ensure_future(asyncio.to_thread(work))
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, _Done):
                        if item.error is not None:
                            raise item.error
                        return
                    yield item
            finally:
                stop.set()
                await _wait_for(worker)


async def run_exclusive(served: ServedModel, work: Callable[[], T]) -> T:
    """Run ``work`` in a thread while holding the model's lock, which outlives a cancellation."""
    async with served.lock:
        worker = asyncio.ensure_future(asyncio.to_thread(work))
        await _wait_for(worker)
        return worker.result()


async def _wait_for(worker: "asyncio.Future[object]") -> None:
    """Wait until ``worker`` ends even if cancelled meanwhile, then re-raise the cancellation.

    Releasing the model lock under a still-running worker would let two
    generations touch one model at once; the worker stops within one token.
    """
    interrupted = False
    while not worker.done():
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
