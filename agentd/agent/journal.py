"""The run journal: SQLite, written after every step, read back to resume a run.

Tables (one file, WAL, ``synchronous=FULL`` so a committed step survives a
``kill -9`` or a power cut):

* ``runs`` — one row per run: the request, its user, its plan, status, answer.
* ``steps`` — per step: status (``pending``, ``waiting_approval``, ``running``,
  ``done``, ``failed``, ``rejected``, ``skipped``), the arguments as resolved and
  sent, the result or error. A ``done`` step is never run again: a resumed run
  replays its recorded result (as Temporal replays completed activities).
* ``audit`` — append-only (triggers refuse UPDATE and DELETE): run, step, tool,
  sha256 of the canonical arguments, the approval decision, the outcome. It
  holds no argument values, so nothing sensitive lands in it.

Credentials never reach this file: tools get them by handle at call time, and
arguments are what the plan says, which never holds a secret.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentd.errors import NotFound

RUN_STATUSES = ("planning", "running", "waiting_approval", "done", "failed", "cancelled")
STEP_STATUSES = ("pending", "waiting_approval", "running", "done", "failed", "rejected", "skipped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    plan TEXT,
    status TEXT NOT NULL,
    answer TEXT,
    error TEXT,
    auto_approve INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    user TEXT NOT NULL DEFAULT 'default'
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step INTEGER NOT NULL,
    tool TEXT NOT NULL,
    status TEXT NOT NULL,
    arguments TEXT,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    approval TEXT,
    started REAL,
    finished REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    tool TEXT NOT NULL,
    arguments_sha256 TEXT NOT NULL,
    approval TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


@dataclass(frozen=True)
class StepRecord:
    """A step as the journal holds it."""

    step: int
    tool: str
    status: str
    arguments: dict[str, Any] | None
    result: Any
    error: str | None
    attempts: int
    #: ``approved`` / ``rejected`` once the user decided (kept across a restart), else None.
    approval: str | None


@dataclass(frozen=True)
class RunRecord:
    """A run as the journal holds it."""

    run_id: str
    request: str
    plan: dict[str, Any] | None
    status: str
    answer: str | None
    error: str | None
    #: The run was started with every approval given in advance (kept for a resumed run).
    auto_approve: bool
    created: float
    updated: float
    steps: tuple[StepRecord, ...]
    #: Who the run is for (``default`` for runs journaled before there were users).
    user: str = "default"


def arguments_digest(arguments: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``arguments`` (what the audit log keeps instead of values)."""
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Journal:
    """One SQLite journal file; safe to share between the threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        """Bring a journal written by an older agentd up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "user" not in columns:  # runs had no user before memory: they were the default user's
            self._db.execute("ALTER TABLE runs ADD COLUMN user TEXT NOT NULL DEFAULT 'default'")

    def close(self) -> None:
        self._db.close()

    # -- writes (each one its own committed transaction) -------------------------
    def create_run(self, run_id: str, request: str, *, auto_approve: bool = False, user: str = "default") -> None:
        now = time.time()
        self._write(
            "INSERT INTO runs (run_id, request, status, auto_approve, created, updated, user) VALUES (?, ?, 'planning', ?, ?, ?, ?)",
            (run_id, request, int(auto_approve), now, now, user),
        )

    def set_plan(self, run_id: str, plan: dict[str, Any], steps: list[tuple[int, str]]) -> None:
        """Record the plan and a pending row per step (replacing the steps of an earlier plan that never ran)."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET plan = ?, status = 'running', updated = ? WHERE run_id = ?", (json.dumps(plan), time.time(), run_id))
            db.execute("DELETE FROM steps WHERE run_id = ? AND status IN ('pending', 'waiting_approval')", (run_id,))
            db.executemany(
                "INSERT OR IGNORE INTO steps (run_id, step, tool, status) VALUES (?, ?, ?, 'pending')",
                [(run_id, step, tool) for step, tool in steps],
            )

    def set_run_status(self, run_id: str, status: str, *, answer: str | None = None, error: str | None = None) -> None:
        assert status in RUN_STATUSES, status
        self._write(
            "UPDATE runs SET status = ?, answer = COALESCE(?, answer), error = COALESCE(?, error), updated = ? WHERE run_id = ?",
            (status, answer, error, time.time(), run_id),
        )

    def set_step(
        self,
        run_id: str,
        step: int,
        status: str,
        *,
        arguments: dict[str, Any] | None = None,
        result: Any = None,
        error: str | None = None,
        attempt: bool = False,
    ) -> None:
        """Move a step to ``status``; ``arguments``/``result``/``error`` are kept once set."""
        assert status in STEP_STATUSES, status
        now = time.time()
        self._write(
            "UPDATE steps SET status = ?, arguments = COALESCE(?, arguments), result = COALESCE(?, result),"
            " error = ?, attempts = attempts + ?, started = CASE WHEN ? THEN ? ELSE started END,"
            " finished = CASE WHEN ? IN ('done', 'failed', 'rejected', 'skipped') THEN ? ELSE finished END"
            " WHERE run_id = ? AND step = ?",
            (
                status,
                None if arguments is None else json.dumps(arguments),
                None if result is None else json.dumps(result),
                error,
                1 if attempt else 0,
                attempt,
                now,
                status,
                now,
                run_id,
                step,
            ),
        )

    def set_approval(self, run_id: str, step: int, decision: str) -> None:
        """Record the user's decision (``approved`` / ``rejected``) so a resumed run does not ask again."""
        self._write("UPDATE steps SET approval = ? WHERE run_id = ? AND step = ?", (decision, run_id, step))

    def audit(self, run_id: str, step: int, tool: str, arguments: dict[str, Any], approval: str, outcome: str) -> None:
        """Append one tool call to the audit log (``approval``: not_required, approved, rejected)."""
        self._write(
            "INSERT INTO audit (at, run_id, step, tool, arguments_sha256, approval, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), run_id, step, tool, arguments_digest(arguments), approval, outcome),
        )

    # -- reads -----------------------------------------------------------------------
    def run(self, run_id: str) -> RunRecord:
        with self._lock:
            row = self._db.execute(
                "SELECT run_id, request, plan, status, answer, error, auto_approve, created, updated, user FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            steps = self._db.execute(
                "SELECT step, tool, status, arguments, result, error, attempts, approval FROM steps WHERE run_id = ? ORDER BY step",
                (run_id,),
            ).fetchall()
        return RunRecord(
            run_id=row[0], request=row[1], plan=json.loads(row[2]) if row[2] else None, status=row[3], answer=row[4],
            error=row[5], auto_approve=bool(row[6]), created=row[7], updated=row[8], user=row[9],
            steps=tuple(
                StepRecord(s[0], s[1], s[2], json.loads(s[3]) if s[3] else None, json.loads(s[4]) if s[4] else None, s[5], s[6], s[7])
                for s in steps
            ),
        )

    def runs(self, *, unfinished: bool = False) -> list[str]:
        """Run ids, newest first (``unfinished``: only those a restart should resume)."""
        where = "WHERE status IN ('planning', 'running', 'waiting_approval')" if unfinished else ""
        with self._lock:
            return [row[0] for row in self._db.execute(f"SELECT run_id FROM runs {where} ORDER BY created DESC")]

    def audit_rows(self, run_id: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(
                "SELECT step, tool, arguments_sha256, approval, outcome FROM audit WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()

    # -- plumbing ----------------------------------------------------------------------
    def _write(self, sql: str, parameters: tuple[Any, ...]) -> None:
        with self._transaction() as db:
            db.execute(sql, parameters)

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db, self._lock)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the journal's lock; rolls back on error."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
        self._db, self._lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is not None:
                self._db.execute("ROLLBACK")
                return
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                # A COMMIT that fails (SQLITE_FULL: a full disk) leaves the transaction open, and
                # every later BEGIN would fail with it: undo this one, so the next write can succeed.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        finally:
            self._lock.release()
