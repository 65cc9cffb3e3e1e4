"""Where a session's latest state lives when the model has several replicas: a named Ray actor.

A session here is what a replica's :class:`~agentd.server.sessions.SessionStore`
holds, as the bytes of a ``.session`` file in Ray's object store, plus a
version. A replica claims a session before a request (one request at a time
per session across the whole cluster, as on one daemon), brings its own copy up
to date if the version moved, and after the request hands the new bytes to the
object store through this actor (which ``ray.put``s them, so it owns them and
the state outlives the replica that computed it).

Every architecture moves the same way: an SSM's or RWKV's state is a fixed few
kilobytes a turn; a transformer's KV cache grows with the conversation, so each
turn moves more (``docs/ray.md`` has the measured cost). A replica that served
the last turn keeps its copy and moves nothing.

Sessions unused for ``ttl`` seconds are forgotten, as on one daemon.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

#: The actor's name, and its Ray namespace (replicas run in Serve's own and look it up here).
DIRECTORY_NAME = "agentd-sessions"
DIRECTORY_NAMESPACE = "agentd"


@dataclass
class _Entry:
    model: str | None = None
    version: int | None = None
    state: Any = None  # ObjectRef of the .session bytes
    tokens: int = 0
    size: int = 0
    busy: bool = False
    claimed_at: float = 0.0
    last_used: float = field(default_factory=time.monotonic)


class SessionDirectory:
    """The Ray actor class (``ray.remote`` is applied in :mod:`agentd.rayserve.app`)."""

    #: A claim older than this is a replica that died mid-request: the session is free again.
    CLAIM_TIMEOUT = 600.0

    def __init__(self, ttl: float = 1800.0):
        self.ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._next_version = 1

    def claim(self, session_id: str, model: str) -> dict[str, Any]:
        """Mark the session in use; its record (``busy`` if another request has it)."""
        self._expire()
        entry = self._entries.setdefault(session_id, _Entry())
        now = time.monotonic()
        if entry.busy and now - entry.claimed_at < self.CLAIM_TIMEOUT:
            return {"busy": True}
        entry.busy, entry.claimed_at, entry.last_used = True, now, now
        return {"model": entry.model, "version": entry.version, "state": entry.state}

    def publish(self, session_id: str, model: str, data: bytes, tokens: int) -> int:
        """The new state of a claimed session (``.session`` bytes); releases it, returns the new version.

        The bytes go into the object store from here, so this actor owns them: they
        outlive the replica that computed them.
        """
        import ray

        entry = self._entries.setdefault(session_id, _Entry())
        entry.model, entry.state, entry.tokens, entry.size = model, ray.put(data), tokens, len(data)
        entry.version, self._next_version = self._next_version, self._next_version + 1
        entry.busy, entry.last_used = False, time.monotonic()
        return entry.version

    def release(self, session_id: str) -> None:
        """End a claim without a new state (the request failed before the engine, or was refused)."""
        entry = self._entries.get(session_id)
        if entry is None:
            return
        entry.busy, entry.last_used = False, time.monotonic()
        if entry.version is None:
            del self._entries[session_id]  # never held a state: nothing to keep

    def delete(self, session_id: str) -> bool:
        """Forget a session (DeleteSession); replicas drop their copies at its next use."""
        entry = self._entries.pop(session_id, None)
        return entry is not None and entry.version is not None

    def sessions(self) -> list[dict[str, Any]]:
        """Every live session: id, model, tokens, state bytes, seconds since last use."""
        self._expire()
        now = time.monotonic()
        return [
            {"session_id": key, "model": e.model, "tokens": e.tokens, "size": e.size, "idle": now - e.last_used}
            for key, e in self._entries.items() if e.version is not None
        ]

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if not e.busy and now - e.last_used > self.ttl]:
            del self._entries[key]
