"""Sessions: a conversation's model state kept between requests, saved to and restored from disk.

A request that names a ``session_id`` hands the session's state to the engine
together with the tokens it holds; when the request's prompt starts with those
tokens only the rest (the new turn) is prefilled. Otherwise the session starts
again from an empty state (outcome ``restarted``), which the response reports.
When the request ends, however it ends, the engine hands the final state back
(:class:`~agentd.engine.RetainedState`) and the session keeps it for the next
turn. This works alike for a transformer's KV cache, which grows with the
conversation, and an SSM or RWKV state, which does not: ``state_bytes`` makes
that difference visible.

Sessions expire after ``ttl`` seconds unused and are evicted least recently
used first when their states together exceed ``budget_bytes``. One request
at a time may use a session. ``save`` writes the backend's ``save_state``
bytes and the token history to ``<directory>/<session_id>.session``
atomically (temp file, fsync, rename); ``restore`` reads it back so the
conversation continues exactly as if it had never left memory.

The store is thread-safe: requests end on the engine's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import stat
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from agentd.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, is_storage_full
from agentd.staging import remove_stale, staging_name

if TYPE_CHECKING:
    from agentd.backend import Backend, State
    from agentd.engine import RetainedState

log = logging.getLogger(__name__)

#: Session ids double as file names: no separators, no leading dot.
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FILE_SUFFIX = ".session"
_MAGIC = b"AGSESS\x00\x01"
_HEADER_LENGTH = struct.Struct("<I")
_FORMAT = 1

Outcome = Literal["created", "continued", "restarted"]


@dataclass(frozen=True)
class SessionSettings:
    """Session limits (``agentd serve`` flags)."""

    #: Seconds a session may stay unused before it expires.
    ttl: float = 1800.0
    #: Bytes of state all in-memory sessions may hold together.
    budget_bytes: int = 512 * 2**20
    #: Where SaveSession writes; None means ``$AGENTD_HOME/sessions``.
    directory: Path | None = None

    def resolved_directory(self) -> Path:
        if self.directory is not None:
            return Path(self.directory)
        from agentd.config import agentd_home

        return agentd_home() / "sessions"


@dataclass(eq=False)
class Session:
    """One conversation's state on one model."""

    session_id: str
    model: str
    #: The backend state; None while a request owns it, or before the first one.
    state: "State | None" = None
    #: Exactly the token ids ``state`` holds, in order.
    tokens: tuple[int, ...] = ()
    #: The last sampled token, not yet in the state (the next turn feeds it, usually).
    pending: int | None = None
    state_bytes: int = 0
    #: A request (or a save) is using the session.
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class SessionPlan:
    """How a request uses its session: the state to start from and the prompt tokens it holds."""

    state: "State | None"
    cached_tokens: int
    outcome: Outcome


@dataclass(frozen=True)
class SavedSession:
    """What SaveSession wrote."""

    path: Path
    file_bytes: int
    tokens: int


class SessionStore:
    """In-memory sessions by id, with TTL expiry, an LRU byte budget and disk save/restore."""

    def __init__(self, settings: SessionSettings | None = None):
        self.settings = settings or SessionSettings()
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        #: Sessions dropped by TTL / by the budget, since start (for metrics and tests).
        self.expired = 0
        self.evicted = 0
        # A daemon killed mid-save left its temp file: remove it (never a running daemon's).
        remove_stale(self.settings.resolved_directory())

    # -- a request's use -----------------------------------------------------------------
    def begin(self, session_id: str, model: str, prompt: Sequence[int]) -> tuple[Session, SessionPlan]:
        """Claim ``session_id`` for a request of ``model`` with ``prompt``; create it if new.

        The returned plan's state now belongs to the request (the engine).
        Always pair with :meth:`finish` (or :meth:`abort` if nothing was submitted).
        """
        check_session_id(session_id)
        with self._lock:
            self._expire_locked(time.monotonic())
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(session_id, model)
            if session.busy:
                raise ResourceExhausted(f"session {session_id!r} is in use by another request; retry when it ends")
            if session.model != model:
                raise InvalidArgument("session_id", f"session {session_id!r} belongs to model {session.model!r}")
            held = len(session.tokens)
            if session.state is not None and len(prompt) > held and tuple(prompt[:held]) == session.tokens:
                plan = SessionPlan(session.state, held, "continued")
            elif session.state is None and not session.tokens:
                plan = SessionPlan(None, 0, "created")
            else:
                plan = SessionPlan(None, 0, "restarted")
            session.state = None
            if plan.outcome != "continued":
                session.tokens, session.pending, session.state_bytes = (), None, 0
            session.busy = True
        if plan.outcome == "restarted":
            log.info("session %s: the prompt does not extend its %d tokens; prefilling it afresh", session_id, held)
        return session, plan

    def abort(self, session: Session, plan: SessionPlan) -> None:
        """Give the state back after a request that was never submitted."""
        with self._lock:
            if plan.outcome == "continued":
                session.state = plan.state
            session.busy = False
            session.last_used = time.monotonic()

    def finish(self, session: Session, retained: "RetainedState | None", backend: "Backend") -> None:
        """Keep the state a request ended in (None: it failed, so the session starts over)."""
        state_bytes = 0
        if retained is not None:
            try:
                state_bytes = int(backend.state_bytes(retained.state))
            except Exception:  # a size is for budgets; never lose the conversation over it
                log.warning("session %s: state_bytes failed", session.session_id, exc_info=True)
        with self._lock:
            session.busy = False
            session.last_used = time.monotonic()
            if self._sessions.get(session.session_id) is not session:
                return  # deleted (or its model unloaded) while the request ran
            if retained is None:
                session.state, session.tokens, session.pending, session.state_bytes = None, (), None, 0
            else:
                session.state, session.tokens, session.pending = retained.state, retained.tokens, retained.pending
                session.state_bytes = state_bytes
            self._enforce_budget_locked()

    # -- management ----------------------------------------------------------------------
    def list(self, model: str | None = None) -> list[Session]:
        """Live sessions (expired ones are dropped first), least recently used first."""
        with self._lock:
            self._expire_locked(time.monotonic())
            sessions = [s for s in self._sessions.values() if model is None or s.model == model]
        return sorted(sessions, key=lambda s: s.last_used)

    def get(self, session_id: str) -> Session:
        check_session_id(session_id)
        with self._lock:
            self._expire_locked(time.monotonic())
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"session {session_id!r} does not exist (or expired)")
        return session

    def delete(self, session_id: str) -> bool:
        """Forget an in-memory session; False if there was none."""
        check_session_id(session_id)
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def drop_model(self, model: str) -> int:
        """Forget every session of ``model`` (unloaded or evicted); returns how many."""
        with self._lock:
            doomed = [key for key, s in self._sessions.items() if s.model == model]
            for key in doomed:
                del self._sessions[key]
        if doomed:
            log.info("dropped %d sessions of %s", len(doomed), model)
        return len(doomed)

    def total_bytes(self, model: str | None = None) -> int:
        with self._lock:
            return sum(s.state_bytes for s in self._sessions.values() if model is None or s.model == model)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def file_path(self, session_id: str) -> Path:
        check_session_id(session_id)
        return self.settings.resolved_directory() / f"{session_id}{FILE_SUFFIX}"

    # -- disk ------------------------------------------------------------------------------
    async def save(self, session_id: str, backend: "Backend") -> SavedSession:
        """Write the session to disk (its state bytes and token history), atomically."""
        session = self._claim_idle(session_id)
        try:
            path = self.file_path(session_id)
            try:
                return await asyncio.to_thread(_write_session, path, session, backend)
            except OSError as exc:  # full disk, a directory in the way, no permission: say which
                raise _disk_error(path, exc) from None
        finally:
            self._release(session)

    def _claim_idle(self, session_id: str) -> Session:
        """The session, marked busy so no request touches its state while it is serialised."""
        session = self.get(session_id)
        with self._lock:
            if session.busy:
                raise ResourceExhausted(f"session {session_id!r} is in use by a request; save it when that ends")
            if session.state is None:
                raise InvalidArgument("session_id", f"session {session_id!r} holds no state yet (generate first)")
            session.busy = True
        return session

    def _release(self, session: Session) -> None:
        with self._lock:
            session.busy = False
            session.last_used = time.monotonic()

    async def export(self, session_id: str, backend: "Backend") -> tuple[bytes, int]:
        """The session as ``.session`` bytes and the tokens it holds, without touching the disk
        (a session moving to another replica, :mod:`agentd.rayserve.sessions`)."""
        session = self._claim_idle(session_id)
        try:
            return await asyncio.to_thread(encode_session, session, backend), len(session.tokens)
        finally:
            self._release(session)

    def read_header(self, session_id: str) -> tuple[dict, bytes]:
        """The saved session's header and state bytes (blocking: call from a thread)."""
        return _read_session(self.file_path(session_id))

    async def restore(self, session_id: str, model: str, backend: "Backend", state_data: bytes, header: dict) -> Session:
        """Rebuild the saved session in memory (replacing an idle one of the same id)."""
        state = await asyncio.to_thread(backend.load_state, state_data)
        state_bytes = int(backend.state_bytes(state))
        session = Session(
            session_id,
            model,
            state=state,
            tokens=tuple(int(t) for t in header["tokens"]),
            pending=header.get("pending"),
            state_bytes=state_bytes,
        )
        with self._lock:
            current = self._sessions.get(session_id)
            if current is not None and current.busy:
                raise ResourceExhausted(f"session {session_id!r} is in use by a request; restore it when that ends")
            self._sessions[session_id] = session
            self._enforce_budget_locked()
        return session

    # -- limits ----------------------------------------------------------------------------
    def _expire_locked(self, now: float) -> None:
        ttl = self.settings.ttl
        doomed = [key for key, s in self._sessions.items() if not s.busy and now - s.last_used > ttl]
        for key in doomed:
            del self._sessions[key]
        self.expired += len(doomed)

    def _enforce_budget_locked(self) -> None:
        total = sum(s.state_bytes for s in self._sessions.values())
        for session in sorted(self._sessions.values(), key=lambda s: s.last_used):
            if total <= self.settings.budget_bytes:
                break
            if session.busy:
                continue
            del self._sessions[session.session_id]
            total -= session.state_bytes
            self.evicted += 1
            log.info("session %s evicted (session memory budget %d bytes)", session.session_id, self.settings.budget_bytes)


def check_session_id(session_id: str) -> None:
    if not SESSION_ID.fullmatch(session_id or ""):
        raise InvalidArgument("session_id", "must be 1-128 characters of A-Z a-z 0-9 . _ - not starting with . _ -")


def encode_session(session: Session, backend: "Backend") -> bytes:
    """A session as the bytes of a ``.session`` file: magic, header length, JSON header, state."""
    state = backend.save_state(session.state)
    header = {
        "format": _FORMAT,
        "session_id": session.session_id,
        "model": session.model,
        "architecture": backend.info.architecture,
        "tokens": list(session.tokens),
        "pending": session.pending,
        "state_sha256": hashlib.sha256(state).hexdigest(),
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return _MAGIC + _HEADER_LENGTH.pack(len(encoded)) + encoded + state


def decode_session(data: bytes, where: object) -> tuple[dict, bytes]:
    """The header and state bytes of :func:`encode_session`'s bytes; INVALID_ARGUMENT naming ``where``."""
    prefix = len(_MAGIC) + _HEADER_LENGTH.size
    if len(data) < prefix or not data.startswith(_MAGIC):
        raise InvalidArgument("session_id", f"{where} is not a saved agentd session")
    (length,) = _HEADER_LENGTH.unpack_from(data, len(_MAGIC))
    try:
        header = json.loads(data[prefix : prefix + length])
        state = data[prefix + length :]
        valid = header.get("format") == _FORMAT and hashlib.sha256(state).hexdigest() == header["state_sha256"]
    except (ValueError, KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise InvalidArgument("session_id", f"{where} is corrupt (header or state checksum)")
    if not _header_fields_valid(header):  # a checksum over the state says nothing of the header
        raise InvalidArgument("session_id", f"{where} has a malformed header (model, architecture, tokens or pending)")
    return header, state


def _write_session(path: Path, session: Session, backend: "Backend") -> SavedSession:
    from agentd.config import make_private_dirs

    data = encode_session(session, backend)
    make_private_dirs(path.parent)
    # Temp file in the same directory + rename: a reader never sees half a session. Its name
    # carries this process's id, so a daemon killed mid-save has its leftover removed at the next start.
    staging = staging_name(path, "session")
    try:
        with open(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, path)
    except BaseException:  # a full disk, a directory where the file goes: leave no temp file behind
        staging.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return SavedSession(path, path.stat().st_size, len(session.tokens))


def _read_session(path: Path) -> tuple[dict, bytes]:
    return decode_session(_read_regular_file(path), path)


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file. Opened non-blocking, so a named pipe put
    in its place cannot hang the reader (nor the daemon's shutdown), and checked before reading."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"no saved session at {path}") from None
    except OSError as exc:
        raise _disk_error(path, exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FailedPrecondition(f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    except OSError as exc:
        raise _disk_error(path, exc) from None
    finally:
        os.close(fd)


def _header_fields_valid(header: dict) -> bool:
    tokens, pending = header.get("tokens"), header.get("pending")
    return (
        isinstance(header.get("model"), str)
        and isinstance(header.get("architecture"), str)
        and isinstance(tokens, list)
        and all(type(t) is int and 0 <= t < 2**31 for t in tokens)
        and (pending is None or type(pending) is int and 0 <= pending < 2**31)
    )


def _disk_error(path: Path, exc: OSError) -> Exception:
    """The client-facing error of a failed session file operation (never INTERNAL)."""
    reason = exc.strerror or type(exc).__name__
    if is_storage_full(exc):
        return ResourceExhausted(f"cannot write {path}: {reason}")
    return FailedPrecondition(f"{path}: {reason}")
