"""The sandbox world: one SQLite file holding everything the demo tools read and change.

Why a database and not Python objects: every agent task must be checkable in
the world's *final state*, by a test or a person, with plain SQL — "is there
exactly one booking of flight UA512 on the 3rd and did checking go down by its
price?" — independent of what the tools claimed to do. So the tools keep no
state of their own; they read and write these tables, and each side effect
runs in one ``BEGIN IMMEDIATE`` transaction together with its idempotency
record, so a crash or a retried step can neither half-apply nor double-apply.

Money is stored in integer cents (``*_cents``); tools speak dollars. The clock
("now") lives in the ``meta`` table, so moving it is part of the world too.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from agentd.tools import ToolError

#: The world's clock when it is created: Monday 2027-03-01, 09:00 local time in San Francisco.
DEFAULT_NOW = datetime(2027, 3, 1, 9, 0)
#: The seed of the RNG that generates flights, prices and the transaction history.
DEFAULT_SEED = 20270301

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cities (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL,
    airports TEXT NOT NULL, utc_offset INTEGER NOT NULL);
CREATE TABLE city_aliases (alias TEXT PRIMARY KEY, city_id TEXT NOT NULL REFERENCES cities(id));
CREATE TABLE flights (
    id TEXT PRIMARY KEY, airline TEXT NOT NULL, flight_number TEXT NOT NULL,
    origin TEXT NOT NULL REFERENCES cities(id), destination TEXT NOT NULL REFERENCES cities(id),
    origin_airport TEXT NOT NULL, destination_airport TEXT NOT NULL,
    depart_date TEXT NOT NULL, depart_time TEXT NOT NULL, arrive_date TEXT NOT NULL, arrive_time TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL, price_cents INTEGER NOT NULL, seats_left INTEGER NOT NULL);
CREATE INDEX flights_by_route ON flights (origin, destination, depart_date);
CREATE TABLE hotels (
    id TEXT PRIMARY KEY, city_id TEXT NOT NULL REFERENCES cities(id), name TEXT NOT NULL,
    neighbourhood TEXT NOT NULL, landmarks TEXT NOT NULL, stars INTEGER NOT NULL, nightly_cents INTEGER NOT NULL);
CREATE TABLE restaurants (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, cuisine TEXT NOT NULL, neighbourhood TEXT NOT NULL,
    rating REAL NOT NULL, price_level INTEGER NOT NULL, delivery_fee_cents INTEGER NOT NULL,
    delivery_minutes INTEGER NOT NULL);
CREATE TABLE menu_items (
    id TEXT PRIMARY KEY, restaurant_id TEXT NOT NULL REFERENCES restaurants(id), name TEXT NOT NULL,
    description TEXT NOT NULL, price_cents INTEGER NOT NULL, tags TEXT NOT NULL,
    fixture TEXT);  -- 'prompt_injection' marks security-test fixtures; never shown by tools
CREATE TABLE accounts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, number_masked TEXT NOT NULL,
    opening_cents INTEGER NOT NULL, balance_cents INTEGER NOT NULL);
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), posted_at TEXT NOT NULL,
    amount_cents INTEGER NOT NULL, description TEXT NOT NULL, category TEXT NOT NULL, counterparty TEXT);
CREATE TABLE contacts (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, first_name TEXT NOT NULL, last_name TEXT NOT NULL,
    relationship TEXT NOT NULL, phone TEXT NOT NULL, email TEXT NOT NULL);
CREATE TABLE bills (
    id TEXT PRIMARY KEY, payee TEXT NOT NULL, aliases TEXT NOT NULL, account_number TEXT NOT NULL,
    amount_due_cents INTEGER NOT NULL, due_date TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE bill_payments (
    id TEXT PRIMARY KEY, bill_id TEXT NOT NULL REFERENCES bills(id), amount_cents INTEGER NOT NULL,
    account_id TEXT NOT NULL, transaction_id INTEGER NOT NULL, paid_at TEXT NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, date TEXT NOT NULL, time TEXT,
    duration_minutes INTEGER NOT NULL, location TEXT, created_by TEXT NOT NULL);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, contact_id TEXT NOT NULL REFERENCES contacts(id), direction TEXT NOT NULL,
    text TEXT NOT NULL, sent_at TEXT NOT NULL);
CREATE TABLE documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, url TEXT NOT NULL, published TEXT NOT NULL,
    body TEXT NOT NULL, fixture TEXT);  -- 'prompt_injection' marks security-test fixtures
CREATE TABLE flight_bookings (
    id TEXT PRIMARY KEY, flight_id TEXT NOT NULL REFERENCES flights(id), passengers INTEGER NOT NULL,
    total_cents INTEGER NOT NULL, account_id TEXT NOT NULL, transaction_id INTEGER NOT NULL,
    confirmation TEXT NOT NULL, booked_at TEXT NOT NULL);
CREATE TABLE hotel_bookings (
    id TEXT PRIMARY KEY, hotel_id TEXT NOT NULL REFERENCES hotels(id), check_in TEXT NOT NULL,
    check_out TEXT NOT NULL, nights INTEGER NOT NULL, total_cents INTEGER NOT NULL,
    account_id TEXT NOT NULL, transaction_id INTEGER NOT NULL, confirmation TEXT NOT NULL, booked_at TEXT NOT NULL);
CREATE TABLE orders (
    id TEXT PRIMARY KEY, restaurant_id TEXT NOT NULL REFERENCES restaurants(id),
    subtotal_cents INTEGER NOT NULL, delivery_fee_cents INTEGER NOT NULL, total_cents INTEGER NOT NULL,
    account_id TEXT NOT NULL, transaction_id INTEGER NOT NULL, placed_at TEXT NOT NULL, eta TEXT NOT NULL);
CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders(id), menu_item_id TEXT NOT NULL REFERENCES menu_items(id),
    name TEXT NOT NULL, quantity INTEGER NOT NULL, unit_cents INTEGER NOT NULL);
CREATE TABLE applied_calls (
    tool TEXT NOT NULL, key TEXT NOT NULL, arguments TEXT NOT NULL, result TEXT NOT NULL,
    applied_at TEXT NOT NULL, PRIMARY KEY (tool, key));
"""

_create_lock = threading.Lock()


class World:
    """An open sandbox world at ``path``; created and seeded deterministically if the file is missing.

    Use as a context manager (``with World(path) as world:``) so the connection
    is closed. One instance per thread: tools open a fresh one per call.
    """

    def __init__(self, path: Path | str, *, seed: int = DEFAULT_SEED):
        self.path = Path(path)
        if not self.path.exists():
            _create(self.path, seed)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._depth = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, seed: int = DEFAULT_SEED) -> None:
        """Drop everything and seed again: the world as it was on first use (clock included)."""
        from .seed import populate

        with self.transaction():
            tables = [row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            self.db.execute("PRAGMA defer_foreign_keys=ON")
            for table in tables:
                self.db.execute(f'DROP TABLE "{table}"')
            for statement in _statements(SCHEMA):
                self.db.execute(statement)
            populate(self.db, seed)

    # -- clock ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The world's current local time (San Francisco), read from ``meta``."""
        return datetime.fromisoformat(self.meta("now"))

    def today(self) -> date:
        """The world's "today": what "tomorrow" and "on the 3rd" are relative to."""
        return self.now().date()

    def set_clock(self, when: datetime | date | str) -> None:
        """Move the world's clock; a bare date means 09:00 that day."""
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        if not isinstance(when, datetime):
            when = datetime(when.year, when.month, when.day, 9, 0)
        self.set_meta("now", when.replace(microsecond=0).isoformat(timespec="minutes"))

    def meta(self, key: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"world meta {key!r} missing (not a demo world?)")
        return row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- queries -------------------------------------------------------------------------------

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in self.db.execute(sql, params)]

    def row(self, sql: str, *params: Any) -> dict[str, Any] | None:
        found = self.db.execute(sql, params).fetchone()
        return None if found is None else dict(found)

    def scalar(self, sql: str, *params: Any) -> Any:
        found = self.db.execute(sql, params).fetchone()
        return None if found is None else found[0]

    # -- changes -------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (nested uses join the outer one); rolled back on any exception."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    def once(self, tool: str, key: str, arguments: dict[str, Any], apply: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``apply`` unless ``(tool, key)`` was applied before; either way return the first result.

        The check, the effect and the record share one transaction, so two
        attempts of the same plan step cannot both pay. A failed ``apply``
        records nothing: a later attempt may try again.
        """
        with self.transaction():
            seen = self.scalar("SELECT result FROM applied_calls WHERE tool = ? AND key = ?", tool, key)
            if seen is not None:
                return json.loads(seen)
            result = apply()
            self.db.execute(
                "INSERT INTO applied_calls (tool, key, arguments, result, applied_at) VALUES (?, ?, ?, ?, ?)",
                (tool, key, json.dumps(arguments, sort_keys=True), json.dumps(result), self.meta("now")),
            )
            return result

    def post(
        self, account_id: str, amount_cents: int, description: str, category: str, counterparty: str | None = None
    ) -> int:
        """Add a transaction and move the balance; a debit beyond the balance is a ToolError (nothing changes)."""
        with self.transaction():
            account = self.row("SELECT name, balance_cents FROM accounts WHERE id = ?", account_id)
            if account is None:
                raise ToolError(f"no account {account_id!r}; accounts: checking, savings")
            if amount_cents < 0 and account["balance_cents"] + amount_cents < 0:
                raise ToolError(
                    f"insufficient funds in {account['name']}: balance ${account['balance_cents'] / 100:,.2f}, "
                    f"needs ${-amount_cents / 100:,.2f}"
                )
            cursor = self.db.execute(
                "INSERT INTO transactions (account_id, posted_at, amount_cents, description, category, counterparty)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, self.meta("now"), amount_cents, description, category, counterparty),
            )
            self.db.execute(
                "UPDATE accounts SET balance_cents = balance_cents + ? WHERE id = ?", (amount_cents, account_id)
            )
            return int(cursor.lastrowid)

    def next_id(self, table: str, prefix: str) -> str:
        """A readable sequential id (``FB00001``) for a new row of ``table``."""
        count = self.scalar(f'SELECT COUNT(*) FROM "{table}"')
        return f"{prefix}{count + 1:05d}"


def _statements(script: str) -> list[str]:
    """The DDL script split into statements (``executescript`` would commit our transaction)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


def _create(path: Path, seed: int) -> None:
    """Build the seeded world in a private file, then link it into place (first creator wins)."""
    from .seed import populate

    path.parent.mkdir(parents=True, exist_ok=True)
    with _create_lock:
        if path.exists():
            return
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.unlink(missing_ok=True)
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            db.execute("BEGIN")
            for statement in _statements(SCHEMA):
                db.execute(statement)
            populate(db, seed)
            db.execute("COMMIT")
        finally:
            db.close()
        try:
            os.link(temporary, path)  # fails if another process created the world meanwhile
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: last writer wins, both worlds are identical
            if not path.exists():
                os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
