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
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator, Union

from agentd.backend import State

if TYPE_CHECKING:
    from agentd.generation import GenerationEvent

log = logging.getLogger(__name__)

#: What the engine publishes: an event, or the exception that failed the request.
_Item = Union["GenerationEvent", BaseException]


@dataclass(frozen=True)
class RetainedState:
    """A finished request's backend state, kept for the next turn of a session.

    ``state`` holds exactly ``tokens`` (the prompt, then every generated token
    but the newest: a sampled token is only fed back by the next decode).
    ``pending`` is that newest token, or None if nothing was generated.
    """

    state: State
    tokens: tuple[int, ...]
    pending: int | None


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
        self._done_callbacks: list[Callable[["RequestHandle"], None]] = []
        #: What the engine really did, even after the reader left: tokens generated
        #: so far, and the final finish_reason (None while running or if it failed).
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        #: Prompt tokens whose state came ready-made (a session or the prefix cache)
        #: instead of being prefilled; set when the request is admitted.
        self.cached_tokens = 0
        #: Submitted with ``keep_state``: the state it ended in, set before the final
        #: event (None if the request failed, or was not asked to keep it).
        self.retained: RetainedState | None = None

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

    def on_done(self, callback: Callable[["RequestHandle"], None]) -> None:
        """Call ``callback(handle)`` once the request has ended, before its final item
        reaches the reader (at once if it already has). Runs on the engine thread,
        so it must be quick and thread-safe; whatever it raises is logged."""
        with self._cond:
            if not self._done:
                self._done_callbacks.append(callback)
                return
        _call(callback, self)

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
        if _is_last(item):
            with self._cond:
                self._done = True
                callbacks, self._done_callbacks = self._done_callbacks, []
            if not isinstance(item, BaseException):
                self.completion_tokens, self.finish_reason = item.completion_tokens, item.finish_reason
            for callback in callbacks:  # before the reader can see the end (and e.g. reuse a session)
                _call(callback, self)
        with self._cond:
            if not isinstance(item, BaseException):
                self.completion_tokens = item.completion_tokens
                self.finish_reason = item.finish_reason
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


def _call(callback: Callable[["RequestHandle"], None], handle: "RequestHandle") -> None:
    try:
        callback(handle)
    except Exception:  # a caller's bookkeeping must not kill the engine thread
        log.exception("request %d: on_done callback failed", handle.request_id)


def _is_last(item: _Item) -> bool:
    return isinstance(item, BaseException) or item.finish_reason is not None
