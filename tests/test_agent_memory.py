"""The memory store: per-user facts, episodes and templates in SQLite; recall by cosine; forgetting.

Checks read the SQLite file with the ``sqlite3`` module (and its raw bytes), not
only what the store says about itself.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agentd.agent.journal import Journal
from agentd.agent.memory import MemoryStore, user_name
from agentd.errors import InvalidArgument, NotFound

PLAN = {"steps": [{"id": 1, "tool": "transfer_money", "arguments": {"to": "Maria", "amount": 45}}]}


def vector(*values: float) -> np.ndarray:
    return np.asarray(values, np.float32)


def rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def store(tmp_path: Path):
    memory = MemoryStore(tmp_path / "memory.sqlite")
    yield memory
    memory.close()


def test_facts_are_per_user_and_validated(store: MemoryStore) -> None:
    alice, bob = store.for_user("alice"), store.for_user("bob")
    alice.set_fact("home_city", "  Oakland ", run_id="r1")
    alice.set_fact("default_account", "Savings")
    bob.set_fact("home_city", "Boston")
    assert alice.facts() == {"default_account": "savings", "home_city": "Oakland"}
    assert bob.facts() == {"home_city": "Boston"}
    first_id = next(item.id for item in alice.list("fact") if item.summary.startswith("home_city"))
    alice.set_fact("home_city", "Berkeley")  # replaces, keeping the memory's id
    assert [(i.id, i.summary) for i in alice.list("fact") if i.summary.startswith("home_city")] == [(first_id, "home_city = Berkeley")]
    assert rows(store.path, "SELECT user, key, value FROM facts ORDER BY user, key") == [
        ("alice", "default_account", "savings"), ("alice", "home_city", "Berkeley"), ("bob", "home_city", "Boston"),
    ]
    with pytest.raises(InvalidArgument, match="key"):
        alice.set_fact("shoe_size", "42")
    with pytest.raises(InvalidArgument, match="checking, savings"):
        alice.set_fact("default_account", "crypto")
    with pytest.raises(InvalidArgument, match="user"):
        user_name("not a name!")
    assert user_name("") == "default"


def test_recall_ranks_by_cosine_within_one_user(store: MemoryStore) -> None:
    store.add_episode("alice", "r1", "order my usual from the Thai place", vector(1, 0, 0), PLAN,
                      [{"step": 1, "tool": "order_food", "arguments": {"items": [{"name": "pad thai", "quantity": 1}]}}], "done")
    store.add_episode("alice", "r2", "what's my balance", vector(0, 1, 0), PLAN,
                      [{"step": 1, "tool": "get_balance", "arguments": {}}], "done")
    store.add_episode("bob", "r3", "bob's Thai order", vector(1, 0, 0), PLAN, [{"step": 1, "tool": "order_food", "arguments": {}}], "done")
    alice = store.for_user("alice")
    recalled = alice.recall(vector(0.9, 0.1, 0), k=5)
    assert [e.run_id for e in recalled] == ["r1", "r2"]  # bob's identical vector is not alice's
    assert recalled[0].score == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    assert recalled[0].calls[0]["arguments"]["items"][0]["name"] == "pad thai"
    assert [e.run_id for e in alice.recall(vector(0.9, 0.1, 0), k=1)] == ["r1"]
    assert [e.run_id for e in alice.recall(vector(1, 0, 0), k=5, tool="get_balance")] == ["r2"]
    assert store.for_user("carol").recall(vector(1, 0, 0)) == []
    assert alice.recall(vector(1, 0)) == []  # another encoder's width: nothing comparable


def test_forget_removes_rows_from_the_file_and_from_recall(store: MemoryStore, tmp_path: Path) -> None:
    alice = store.for_user("alice")
    store.add_episode("alice", "r1", "order my usual from the Zanzibar Grill", vector(1, 0), PLAN, [], "done")
    store.add_episode("alice", "r2", "what's my balance", vector(0, 1), PLAN, [], "done")
    store.add_episode("bob", "r3", "bob at the Zanzibar Grill", vector(1, 0), PLAN, [], "done")
    alice.set_fact("diet", "vegetarian")
    assert [e.run_id for e in alice.recall(vector(1, 0))] == ["r1", "r2"]  # the index is built now
    target = next(item.id for item in alice.list("episode") if "Zanzibar" in item.summary)

    with pytest.raises(NotFound):
        store.for_user("bob").forget(target)  # not bob's to forget
    assert alice.forget(target) == 1
    assert [e.run_id for e in alice.recall(vector(1, 0))] == ["r2"]  # gone from the cached index too
    assert rows(store.path, "SELECT user, run_id FROM episodes ORDER BY run_id") == [("alice", "r2"), ("bob", "r3")]
    # secure_delete + a truncated WAL: alice's forgotten text is in no byte of the files; bob's still is.
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("memory.sqlite*"))
    assert b"order my usual from the Zanzibar" not in raw
    assert b"bob at the Zanzibar Grill" in raw

    with pytest.raises(NotFound):
        alice.forget(target)
    assert alice.forget(kind="fact") == 1 and alice.facts() == {}
    assert alice.forget(all=True) == 1
    assert alice.list() == [] and alice.recall(vector(0, 1)) == []
    assert rows(store.path, "SELECT user FROM episodes") == [("bob",)]
    for bad in ({}, {"kind": "fact", "all": True}):
        with pytest.raises(InvalidArgument, match="exactly one"):
            alice.forget(**bad)
    with pytest.raises(InvalidArgument, match="kind"):
        alice.forget(kind="dreams")


def test_templates_are_per_user_and_counted(store: MemoryStore) -> None:
    sources = [{"step": 1, "argument": "to", "start": 5, "end": 10, "kind": "text"}]
    first = store.add_template("alice", "send Maria 45 dollars", vector(1, 0), PLAN, sources)
    again = store.add_template("alice", "send Maria 45 dollars", vector(1, 0), PLAN, sources)
    assert first == again  # one template per request text
    store.add_template("bob", "send Maria 45 dollars", vector(1, 0), PLAN, sources)
    found = store.similar_templates("alice", vector(1, 0.1), threshold=0.9)
    assert [t.id for t in found] == [first] and found[0].sources == sources
    assert store.similar_templates("alice", vector(0, 1), threshold=0.9) == []
    store.used_template("alice", first)
    store.used_template("bob", first)  # not bob's: no effect
    assert [(i.kind, i.uses) for i in store.for_user("alice").list()] == [("template", 1)]


def test_known_secrets_are_scrubbed_before_they_are_written(tmp_path: Path) -> None:
    secret = "hunter2-bank-token"
    store = MemoryStore(tmp_path / "memory.sqlite", secrets=lambda: [secret])
    store.add_episode("alice", "r1", f"log in with {secret}", vector(1, 0), PLAN,
                      [{"step": 1, "tool": "x", "arguments": {"password": secret}}], "done")
    store.for_user("alice").set_fact("diet", f"vegan {secret}")
    assert store.add_template("alice", f"use {secret}", vector(1, 0), PLAN, []) is None  # not a plan to reuse
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("memory.sqlite*"))
    assert secret.encode() not in raw
    assert rows(tmp_path / "memory.sqlite", "SELECT request FROM episodes") == [("log in with [redacted]",)]


def test_old_journal_gains_the_user_column(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:  # the runs table as agentd wrote it before users
        db.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, request TEXT NOT NULL, plan TEXT, status TEXT NOT NULL,"
            " answer TEXT, error TEXT, auto_approve INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL)"
        )
        db.execute("INSERT INTO runs VALUES ('old', 'hi', NULL, 'done', 'hello', NULL, 0, 1.0, 1.0)")
    journal = Journal(path)
    journal.create_run("new", "send Maria 45", user="alice")
    assert journal.run("old").user == "default"
    assert journal.run("new").user == "alice"
    journal.close()


def test_remember_fact_writes_only_the_runs_users_memory(store: MemoryStore, tmp_path: Path) -> None:
    from agentd.tools import ToolContext, ToolError, tool, validate_arguments

    spec = tool("remember_fact")  # registered by the memory tool pack's entry point
    assert (spec.read_only, spec.needs_approval, spec.idempotent) == (False, False, True)
    context = ToolContext("r1", 1, tmp_path, user="alice", memory=store.for_user("alice"))
    result = spec.call(validate_arguments(spec, {"key": "home_city", "value": "Oakland"}), context)
    assert result["value"] == "Oakland" and result["id"].startswith("fact-")
    assert store.facts("alice") == {"home_city": "Oakland"} and store.facts("bob") == {}
    assert rows(store.path, "SELECT run_id FROM facts") == [("r1",)]
    with pytest.raises(InvalidArgument):
        validate_arguments(spec, {"key": "password", "value": "x"})
    with pytest.raises(ToolError, match="no memory"):
        spec.call({"key": "diet", "value": "vegan"}, ToolContext("r2", 1, tmp_path))
