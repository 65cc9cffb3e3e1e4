"""What the agent remembers about each user: profile facts, past runs (episodes) and plan templates.

One SQLite file, ``$AGENTD_HOME/agent/memory.sqlite`` (WAL, like the journal), three tables:

* ``facts`` — ``(user, key) -> value``: ``home_city``, ``default_account``, ``diet``;
  the source run and when it last changed. Merged into the planner's facts.
* ``episodes`` — one row per finished run: the request, its embedding (float32
  BLOB), the plan, every executed step's tool and resolved arguments, the status.
  Searched by cosine similarity (:meth:`UserMemory.recall`).
* ``templates`` — plans that worked, kept to be refilled for a similar later
  request (:mod:`agentd.agent.templates`): the request, its embedding, the plan,
  where each literal argument came from in the request, how often it was reused.

Every row belongs to one user and every read filters by user: a
:class:`UserMemory` is the view of one user, the only one tools and planners
get. Forgetting deletes the rows (``secure_delete`` zeroes their bytes, and the
WAL is checkpointed and truncated, so the text is gone from the files) and
drops the user's cached vectors. Known credential secrets are replaced by
``[redacted]`` in anything written here (arguments never hold one by design:
tools get secrets by handle; this is the second line of defence).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from agentd.errors import InvalidArgument, NotFound

#: Memory kinds, as ``ListMemories``/``Forget`` name them.
KINDS = ("fact", "episode", "template")
#: Profile facts a user can state, and the values a closed one accepts (None: free text).
FACT_KEYS: dict[str, tuple[str, ...] | None] = {
    "home_city": None,
    "default_account": ("checking", "savings"),
    "diet": None,
}
DEFAULT_USER = "default"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
REDACTED = "[redacted]"
#: The longest fact value kept (a city, an account, a diet: a few words).
MAX_FACT_CHARS = 200

_TABLES = {"fact": "facts", "episode": "episodes", "template": "templates"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    run_id TEXT,
    updated REAL NOT NULL,
    UNIQUE (user, key)
);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    run_id TEXT NOT NULL,
    request TEXT NOT NULL,
    embedding BLOB NOT NULL,
    plan TEXT NOT NULL,
    calls TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_by_user ON episodes (user);
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    request TEXT NOT NULL,
    embedding BLOB NOT NULL,
    plan TEXT NOT NULL,
    sources TEXT NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    last_used REAL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_by_user ON templates (user);
"""


def user_name(value: str | None) -> str:
    """The user a request names ("" or None: ``default``); INVALID_ARGUMENT for a malformed name."""
    if not value:
        return DEFAULT_USER
    if not USER_NAME.fullmatch(value):
        raise InvalidArgument("user", f"must match {USER_NAME.pattern} (got {value!r})")
    return value


def check_fact(key: str, value: str) -> str:
    """The value to keep for fact ``key`` (stripped); INVALID_ARGUMENT for an unknown key or bad value."""
    if key not in FACT_KEYS:
        raise InvalidArgument("key", f"must be one of {', '.join(FACT_KEYS)} (got {key!r})")
    value = " ".join(str(value).split())
    if not value or len(value) > MAX_FACT_CHARS:
        raise InvalidArgument("value", f"must be 1 to {MAX_FACT_CHARS} characters")
    allowed = FACT_KEYS[key]
    if allowed is not None:
        value = value.lower()
        if value not in allowed:
            raise InvalidArgument("value", f"{key} must be one of {', '.join(allowed)} (got {value!r})")
    return value


@dataclass(frozen=True)
class Episode:
    """A finished run as memory holds it."""

    id: str
    run_id: str
    request: str
    #: The plan's JSON form.
    plan: dict[str, Any]
    #: Every executed step: ``{"step", "tool", "arguments"}`` with the arguments as resolved and sent.
    calls: list[dict[str, Any]]
    status: str
    created: float
    #: Cosine similarity to the query, when recalled.
    score: float = 0.0


@dataclass(frozen=True)
class Template:
    """A plan that worked, to refill for a similar request (see :mod:`agentd.agent.templates`)."""

    id: str
    request: str
    plan: dict[str, Any]
    #: ``[{"step", "argument", "start", "end", "kind"}]``: where literal arguments came from in ``request``.
    sources: list[dict[str, Any]]
    uses: int
    created: float
    #: Cosine similarity to the query, when searched.
    score: float = 0.0


@dataclass(frozen=True)
class MemoryItem:
    """One memory as ``ListMemories`` shows it."""

    id: str
    kind: str
    user: str
    #: ``home_city = Oakland`` for a fact; the request text for an episode or a template.
    summary: str
    created: float
    uses: int = 0


@dataclass
class _Vectors:
    """One user's embeddings of one table, normalised, with their row ids."""

    ids: list[str] = field(default_factory=list)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


class MemoryStore:
    """The memory file; safe to share between the threads of one process.

    :param secrets: returns the secrets to scrub from whatever is written (the credential store's).
    """

    def __init__(self, path: str | Path, *, secrets: Callable[[], Iterable[str]] = lambda: ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Deleted rows' bytes are overwritten, so a forgotten request is not left in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._secrets = secrets
        #: ``(table, user) -> vectors``, built on first search, dropped when that user's rows change.
        self._index: dict[tuple[str, str], _Vectors] = {}

    def close(self) -> None:
        self._db.close()

    def for_user(self, user: str) -> "UserMemory":
        """The view of one user's memory (what tools and planners get)."""
        return UserMemory(self, user_name(user))

    # -- facts -------------------------------------------------------------------------
    def facts(self, user: str) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM facts WHERE user = ? ORDER BY key", (user,)).fetchall())

    def set_fact(self, user: str, key: str, value: str, run_id: str | None = None) -> str:
        """Keep (or replace) ``key`` for ``user``; returns the fact's memory id."""
        value = self._redact(check_fact(key, value))
        with self._lock:
            self._db.execute(
                "INSERT INTO facts (id, user, key, value, run_id, updated) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user, key) DO UPDATE SET value = excluded.value, run_id = excluded.run_id,"
                " updated = excluded.updated",
                (_new_id("fact"), user, key, value, run_id, time.time()),
            )
            return self._db.execute("SELECT id FROM facts WHERE user = ? AND key = ?", (user, key)).fetchone()[0]

    # -- episodes ----------------------------------------------------------------------
    def add_episode(
        self, user: str, run_id: str, request: str, embedding: np.ndarray, plan: dict[str, Any],
        calls: list[dict[str, Any]], status: str,
    ) -> str:
        episode_id = _new_id("episode")
        with self._lock:
            self._db.execute(
                "INSERT INTO episodes (id, user, run_id, request, embedding, plan, calls, status, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    episode_id, user, run_id, self._redact(request), _blob(embedding),
                    json.dumps(self._redact(plan)), json.dumps(self._redact(calls)), status, time.time(),
                ),
            )
            self._index.pop(("episodes", user), None)
        return episode_id

    def recall(self, user: str, query: np.ndarray, k: int = 5, tool: str | None = None) -> list[Episode]:
        """``user``'s ``k`` episodes most like ``query`` (cosine), best first; only those calling ``tool`` if given."""
        with self._lock:
            scored = self._search("episodes", user, query)
            episodes = []
            for episode_id, score in scored:
                row = self._db.execute(
                    "SELECT id, run_id, request, plan, calls, status, created FROM episodes WHERE id = ? AND user = ?",
                    (episode_id, user),
                ).fetchone()
                calls = json.loads(row[4])
                if tool is not None and not any(call.get("tool") == tool for call in calls):
                    continue
                episodes.append(Episode(row[0], row[1], row[2], json.loads(row[3]), calls, row[5], row[6], score))
                if len(episodes) == k:
                    break
        return episodes

    # -- templates ---------------------------------------------------------------------
    def add_template(
        self, user: str, request: str, embedding: np.ndarray, plan: dict[str, Any], sources: list[dict[str, Any]]
    ) -> str | None:
        """Keep a template; one per request text and user (a later success replaces the plan).

        None (nothing kept) when the request or plan holds a known secret: that is no plan to reuse.
        """
        if self._redact([request, plan]) != [request, plan]:
            return None
        with self._lock:
            row = self._db.execute("SELECT id FROM templates WHERE user = ? AND request = ?", (user, request)).fetchone()
            template_id = row[0] if row else _new_id("template")
            self._db.execute(
                "INSERT INTO templates (id, user, request, embedding, plan, sources, uses, created)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?)"
                " ON CONFLICT (id) DO UPDATE SET embedding = excluded.embedding, plan = excluded.plan,"
                " sources = excluded.sources",
                (template_id, user, request, _blob(embedding), json.dumps(plan), json.dumps(sources), time.time()),
            )
            self._index.pop(("templates", user), None)
        return template_id

    def similar_templates(self, user: str, query: np.ndarray, threshold: float, limit: int = 20) -> list[Template]:
        """Up to ``limit`` of ``user``'s templates whose request embedding has cosine >= ``threshold``
        to ``query``, best first."""
        with self._lock:
            templates = []
            for template_id, score in self._search("templates", user, query)[:limit]:
                if score < threshold:
                    break
                row = self._db.execute(
                    "SELECT id, request, plan, sources, uses, created FROM templates WHERE id = ? AND user = ?",
                    (template_id, user),
                ).fetchone()
                templates.append(Template(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4], row[5], score))
        return templates

    def used_template(self, user: str, template_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE templates SET uses = uses + 1, last_used = ? WHERE id = ? AND user = ?", (time.time(), template_id, user)
            )

    # -- listing and forgetting --------------------------------------------------------
    def list(self, user: str, kind: str | None = None) -> list[MemoryItem]:
        """``user``'s memories (of ``kind``, or all), newest first."""
        kinds = _kinds(kind)
        items: list[MemoryItem] = []
        with self._lock:
            if "fact" in kinds:
                for row in self._db.execute("SELECT id, key, value, updated FROM facts WHERE user = ?", (user,)):
                    items.append(MemoryItem(row[0], "fact", user, f"{row[1]} = {row[2]}", row[3]))
            if "episode" in kinds:
                for row in self._db.execute("SELECT id, request, created FROM episodes WHERE user = ?", (user,)):
                    items.append(MemoryItem(row[0], "episode", user, row[1], row[2]))
            if "template" in kinds:
                for row in self._db.execute("SELECT id, request, created, uses FROM templates WHERE user = ?", (user,)):
                    items.append(MemoryItem(row[0], "template", user, row[1], row[2], row[3]))
        return sorted(items, key=lambda item: item.created, reverse=True)

    def forget(self, user: str, *, id: str | None = None, kind: str | None = None, all: bool = False) -> int:
        """Delete one memory (``id``), every memory of ``kind``, or ``all`` of ``user``'s; returns how many.

        Exactly one of the three; NOT_FOUND for an id that is not one of ``user``'s memories.
        """
        if sum((bool(id), bool(kind), bool(all))) != 1:
            raise InvalidArgument("forget", "give exactly one of id, kind or all")
        if id:
            prefix = id.split("-", 1)[0]
            if prefix not in _TABLES:
                raise NotFound(f"no memory {id!r}")
            tables = [_TABLES[prefix]]
        else:
            tables = [_TABLES[name] for name in _kinds(kind)]
        count = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table in tables:
                    where, parameters = ("user = ? AND id = ?", (user, id)) if id else ("user = ?", (user,))
                    count += self._db.execute(f"DELETE FROM {table} WHERE {where}", parameters).rowcount
                    self._index.pop((table, user), None)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # Out of the WAL too: the deleted rows' old page images live there until a checkpoint.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if id and not count:
            raise NotFound(f"no memory {id!r}")
        return count

    # -- plumbing ----------------------------------------------------------------------
    def _search(self, table: str, user: str, query: np.ndarray) -> list[tuple[str, float]]:
        """``(id, cosine)`` of every row of ``user`` in ``table``, best first (caller holds the lock)."""
        vectors = self._index.get((table, user))
        if vectors is None:
            rows = self._db.execute(f"SELECT id, embedding FROM {table} WHERE user = ? ORDER BY created", (user,)).fetchall()
            vectors = _Vectors([row[0] for row in rows], _normalised([np.frombuffer(row[1], np.float32) for row in rows]))
            self._index[(table, user)] = vectors
        query = np.asarray(query, np.float32).reshape(-1)
        if not vectors.ids or vectors.matrix.shape[1] != query.shape[0]:
            return []  # none yet, or embedded by another encoder
        scores = vectors.matrix @ (query / max(float(np.linalg.norm(query)), 1e-12))
        order = np.argsort(-scores, kind="stable")
        return [(vectors.ids[i], float(scores[i])) for i in order]

    def _redact(self, value: Any) -> Any:
        secrets = [secret for secret in self._secrets() if secret]
        return _scrub(value, secrets) if secrets else value


class UserMemory:
    """One user's memory: the only view tools (``ToolContext.memory``) and planners get."""

    __slots__ = ("_store", "_user")

    def __init__(self, store: MemoryStore, user: str):
        self._store = store
        self._user = user

    @property
    def user(self) -> str:
        return self._user

    def facts(self) -> dict[str, str]:
        """The user's profile facts, ``key -> value``."""
        return self._store.facts(self._user)

    def set_fact(self, key: str, value: str, run_id: str | None = None) -> str:
        """Keep (or replace) a profile fact (``home_city``, ``default_account``, ``diet``); returns its id."""
        return self._store.set_fact(self._user, key, value, run_id)

    def recall(self, query_vector: np.ndarray, k: int = 5, tool: str | None = None) -> list[Episode]:
        """The user's past runs most like ``query_vector`` (an Embed of a request), best first."""
        return self._store.recall(self._user, query_vector, k, tool)

    def list(self, kind: str | None = None) -> list[MemoryItem]:
        return self._store.list(self._user, kind)

    def forget(self, id: str | None = None, *, kind: str | None = None, all: bool = False) -> int:
        """Delete one memory, a kind of memories, or all of them; returns how many were deleted."""
        return self._store.forget(self._user, id=id, kind=kind, all=all)


def _kinds(kind: str | None) -> Sequence[str]:
    if not kind:
        return KINDS
    if kind not in KINDS:
        raise InvalidArgument("kind", f"must be one of {', '.join(KINDS)} (got {kind!r})")
    return (kind,)


def _new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, np.float32).reshape(-1).tobytes()


def _normalised(vectors: list[np.ndarray]) -> np.ndarray:
    """Rows scaled to unit length (one matrix; rows of another width than the newest are zeroed out)."""
    if not vectors:
        return np.zeros((0, 0), np.float32)
    width = vectors[-1].shape[0]
    matrix = np.stack([v if v.shape[0] == width else np.zeros(width, np.float32) for v in vectors])
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item, secrets) for item in value]
    return value
