"""The caller's side of one engine request: its events, its cancellation, its deadline.

The engine thread publishes events into the handle; the caller reads them
either synchronously (``for event in handle``) or from asyncio
(``async for event in handle.aiter()``). Events published before the caller
starts reading are buffered, so no event is lost to a race with the engine.
Leaving either iteration early (``break``, an exception, a cancelled task)
cancels the request, so an abandoned stream never holds a slot; close an
abandoned ``aiter()`` explicitly (``contextlib.aclosing``) so that happens at
once rather than when the generator is garbage-collected.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator, Union

if TYPE_CHECKING:
    from agentd.generation import GenerationEvent

#: What the engine publishes: an event, or the exception that failed the request.
_Item = Union["GenerationEvent", BaseException]


class RequestHandle:
    """One submitted generation. Iterate it once (sync or async); ``cancel()`` any time."""

    def __init__(self, request_id: int, prompt_tokens: int, deadline: float | None):
        #: Engine-unique id, for logs.
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        #: ``time.monotonic()`` after which the request is cancelled; None for never.
        self.deadline = deadline
        self._cancel_requested = False
        self._cond = threading.Condition()
        self._items: collections.deque[_Item] = collections.deque()
        # Set when an asyncio reader attaches: forwards items onto its loop.
        self._forward: Callable[[_Item], None] | None = None
        self._claimed = False
        self._done = False
        #: What the engine really did, even after the reader left: tokens generated
        #: so far, and the final finish_reason (None while running or if it failed).
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    # -- caller side -------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to stop this request; it ends with finish_reason "cancelled"
        (unless it finished first) and its slot and state are freed by the next step."""
        self._cancel_requested = True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def done(self) -> bool:
        """True once the final event (or the error) has been published."""
        return self._done

    def expired(self, now: float | None = None) -> bool:
        """True when the deadline has passed."""
        return self.deadline is not None and (time.monotonic() if now is None else now) >= self.deadline

    def __iter__(self) -> Iterator["GenerationEvent"]:
        """Block for each event in turn; raises the error if the request failed."""
        self._claim()
        return self._events()

    async def aiter(self) -> AsyncIterator["GenerationEvent"]:
        """The events on the running asyncio loop; waiting never blocks the loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()

        def forward(item: _Item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        with self._cond:
            self._claim()
            while self._items:
                queue.put_nowait(self._items.popleft())
            self._forward = forward
        finished = False
        try:
            while not finished:
                item = await queue.get()
                finished = _is_last(item)
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not finished:
                self.cancel()

    # -- engine side ---------------------------------------------------------------
    def publish(self, event: "GenerationEvent") -> None:
        """Deliver one event (called by the engine thread)."""
        self._put(event)

    def fail(self, error: BaseException) -> None:
        """End the request with ``error``, raised to the reader (called by the engine thread)."""
        self._put(error)

    def _put(self, item: _Item) -> None:
        with self._cond:
            if not isinstance(item, BaseException):
                self.completion_tokens = item.completion_tokens
                self.finish_reason = item.finish_reason
            if _is_last(item):
                self._done = True
            if self._forward is None:
                self._items.append(item)
                self._cond.notify_all()
                return
            forward = self._forward
        try:
            forward(item)
        except RuntimeError:  # the reader's loop is closed: nobody is listening any more
            self._cancel_requested = True

    # -- helpers -------------------------------------------------------------------
    def _claim(self) -> None:
        with self._cond:
            if self._claimed:
                raise RuntimeError(f"request {self.request_id} is already being read")
            self._claimed = True

    def _events(self) -> Iterator["GenerationEvent"]:
        finished = False
        try:
            while not finished:
                with self._cond:
                    while not self._items:
                        self._cond.wait()
                    item = self._items.popleft()
                finished = _is_last(item)
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not finished:
                self.cancel()


def _is_last(item: _Item) -> bool:
    return isinstance(item, BaseException) or item.finish_reason is not None
