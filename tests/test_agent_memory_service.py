"""Memory through a real in-process daemon: users, facts, episodes, templates, ListMemories, Forget, the CLI.

The daemon serves the real all-MiniLM-L6-v2 (episodes and templates are found
by its embeddings) and the real demo and memory tool packs on the sandbox
world; a stub planner (a test plugin) writes plans by pattern, reports where
its arguments came from, and counts its calls, so a template hit shows as a
plan the planner never wrote. Checks read the world and the memory file with
``sqlite3`` as well as what the RPCs say.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

import agentd.agent.planner as planner_registry
import agentd.tools as tool_registry
from agentd.agent.credentials import CredentialStore
from agentd.agent.plan import Plan, Step
from agentd.agent.planner import ArgumentSource, PlannerSpec, PlanResult
from agentd.client import Client
from agentd.errors import InvalidArgument, NotFound
from agentd.hookspecs import hookimpl
from agentd.plugin_manager import load_plugins
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import agent_pb2, agent_pb2_grpc
from tests._daemon_fixtures import AGENTD, MINILM_DIR, InProcessDaemon, socket_dir

BANK_SECRET = "bank-token-5f1e9a"
TRANSFER = re.compile(r"send (\w+) (\d+ dollars) for (.+)")
MESSAGE = re.compile(r"send (\w+) a message saying (.+)")
MOVED = re.compile(r"I live in (\w+) now")


class StubPlanner:
    """Plans three kinds of request by pattern; remembers every context it was given."""

    def __init__(self) -> None:
        self.contexts: list = []

    async def plan(self, context) -> PlanResult:
        self.contexts.append(context)
        if match := TRANSFER.fullmatch(context.request):
            step = Step(1, "transfer_money", {"to": match[1], "amount": float(match[2].split()[0]), "memo": match[3]})
            sources = {(1, "to"): ArgumentSource(*match.span(1)), (1, "amount"): ArgumentSource(*match.span(2), "amount"),
                       (1, "memo"): ArgumentSource(*match.span(3))}
            return PlanResult(Plan((step,)), text="stub transfer", sources=sources)
        if match := MESSAGE.fullmatch(context.request):
            return PlanResult(Plan((Step(1, "send_message", {"to": match[1], "text": match[2]}),)), text="stub message")
        if match := MOVED.fullmatch(context.request):  # no sources: the cache finds "Oakland" itself
            return PlanResult(Plan((Step(1, "remember_fact", {"key": "home_city", "value": match[1]}),)), text="stub fact")
        return PlanResult(Plan((Step(1, "list_events", {}),)), text="stub calendar")

    async def answer(self, context, plan, results) -> str:
        return "ok"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    home = tmp_path_factory.mktemp("agent")
    CredentialStore(home / "credentials").add("bank", BANK_SECRET)
    planner = StubPlanner()
    plugin = SimpleNamespace(register_planners=hookimpl(lambda register: register(PlannerSpec("stub", make=lambda: planner))))
    manager = load_plugins()
    manager.register(plugin, name="test-memory")
    tool_registry.reset()
    planner_registry.reset()
    table = ModelTable.load([ModelSource("minilm", MINILM_DIR)])
    try:
        with socket_dir() as directory, InProcessDaemon(table, directory / "a.sock", agent_home=home) as running:
            running.daemon.runs.planner_name = "stub"
            with Client(running.targets[0], timeout=120) as client:
                yield SimpleNamespace(client=client, planner=planner, home=home, runs=running.daemon.runs,
                                      socket=directory / "a.sock")
    finally:
        manager.unregister(name="test-memory")
        tool_registry.reset()
        planner_registry.reset()


def run(agent, request: str, user: str, **options) -> list:
    events = list(agent.client.run_task(request, user=user, auto_approve=True, **options))
    assert events[-1].run_finished.status == "done", events[-1]
    return events


def plan_text(events) -> str:
    return next(e.plan.text for e in events if e.WhichOneof("event") == "plan")


def memories(agent, user: str, kind: str = "") -> list[tuple[str, str]]:
    return [(m.kind, m.summary) for m in agent.client.list_memories(user, kind)]


def memory_rows(agent, sql: str) -> list[tuple]:
    with sqlite3.connect(agent.home / "memory.sqlite") as db:
        return db.execute(sql).fetchall()


def transfers(agent) -> list[tuple]:
    with sqlite3.connect(agent.home / "tools" / "demo_world" / "world.sqlite") as db:
        return db.execute("SELECT amount_cents, description FROM transactions WHERE category = 'transfers' ORDER BY id").fetchall()


def test_a_template_plans_a_similar_request_without_the_planner(agent) -> None:
    first = run(agent, "send Maria 45 dollars for lunch", "tpl")
    assert plan_text(first) == "stub transfer"
    calls = len(agent.planner.contexts)

    again = run(agent, "send Sam 20 dollars for coffee", "tpl")
    assert len(agent.planner.contexts) == calls  # the planner was not asked
    # Not even for the answer: the shared template join (agentd.agent.summary) wrote it.
    assert "transfer money" in again[-1].run_finished.answer and "amount 20.0" in again[-1].run_finished.answer
    [template] = agent.client.list_memories("tpl", "template")
    assert plan_text(again) == f"template {template.id}" and template.uses == 1
    plan = json.loads(next(e.plan.plan_json for e in again if e.WhichOneof("event") == "plan"))
    assert plan["steps"] == [{"id": 1, "tool": "transfer_money", "arguments": {"to": "Sam", "amount": 20.0, "memo": "coffee"}}]
    # It ran against the sandbox world: Sam got $20 for coffee, after Maria's $45.
    assert transfers(agent)[-2:] == [(-4500, "Transfer to Maria Lopez: lunch"), (-2000, "Transfer to Sam Chen: coffee")]

    # A near miss (a message, not money) is planned by the planner.
    near = run(agent, "send Maria a message saying hi", "tpl")
    assert plan_text(near) == "stub message" and len(agent.planner.contexts) == calls + 1
    # So is a request that asks not to use the cache.
    fresh = run(agent, "send Sam 25 dollars for coffee", "tpl", no_plan_cache=True)
    assert plan_text(fresh) == "stub transfer" and len(agent.planner.contexts) == calls + 2


def test_users_never_see_each_others_memories(agent) -> None:
    run(agent, "I live in Oakland now", "alice")
    run(agent, "send Maria 45 dollars for lunch", "bob")
    assert sorted(memories(agent, "alice")) == [
        ("episode", "I live in Oakland now"), ("fact", "home_city = Oakland"), ("template", "I live in Oakland now")]
    assert sorted(memories(agent, "bob")) == [("episode", "send Maria 45 dollars for lunch"), ("template", "send Maria 45 dollars for lunch")]
    assert memories(agent, "carol") == []

    # A later run sees its own user's facts (over the demo pack's home city), never another's.
    run(agent, "what is on my calendar", "alice")
    assert agent.planner.contexts[-1].facts["home_city"] == "Oakland"
    assert agent.planner.contexts[-1].memory.user == "alice"
    run(agent, "what is on my calendar", "bob")
    assert agent.planner.contexts[-1].facts["home_city"] == "San Francisco"

    # bob's template is no template of alice's: her similar request goes to the planner.
    calls = len(agent.planner.contexts)
    assert plan_text(run(agent, "send Sam 20 dollars for coffee", "alice")) == "stub transfer"
    assert len(agent.planner.contexts) == calls + 1
    # ... while alice's own "I live in" template refills her move without the planner.
    moved = run(agent, "I live in Berkeley now", "alice")
    assert plan_text(moved).startswith("template ") and len(agent.planner.contexts) == calls + 1
    assert ("fact", "home_city = Berkeley") in memories(agent, "alice")

    # Recall through the daemon's memory: only that user's episodes, whatever the query.
    vector = agent.client.embed(["send Maria 45 dollars for lunch"])[0]
    assert {e.request for e in agent.runs.memory.for_user("alice").recall(vector, 10)} == {
        "I live in Oakland now", "what is on my calendar", "send Sam 20 dollars for coffee", "I live in Berkeley now"}
    assert agent.client.get_run(moved[0].run_id).user == "alice"
    assert memory_rows(agent, "SELECT DISTINCT user FROM episodes WHERE request = 'I live in Berkeley now'") == [("alice",)]
    # The bank secret (a stored credential) is in no memory row.
    assert BANK_SECRET.encode() not in b"".join(p.read_bytes() for p in agent.home.glob("memory.sqlite*"))


def test_forget_removes_memories_from_the_file_and_from_recall(agent) -> None:
    run(agent, "send Maria 45 dollars for the Zanzibar tickets", "dana")
    run(agent, "what is on my calendar", "dana")
    episode = next(m for m in agent.client.list_memories("dana", "episode") if "Zanzibar" in m.summary)
    vector = agent.client.embed(["Zanzibar tickets"])[0]
    assert agent.runs.memory.for_user("dana").recall(vector, 1)[0].request.endswith("Zanzibar tickets")

    with pytest.raises(NotFound):
        agent.client.forget("bob", id=episode.id)  # not bob's
    assert agent.client.forget("dana", id=episode.id) == 1
    assert memory_rows(agent, f"SELECT count(*) FROM episodes WHERE id = '{episode.id}'") == [(0,)]
    assert [e.request for e in agent.runs.memory.for_user("dana").recall(vector, 5)] == ["what is on my calendar"]
    with pytest.raises(NotFound):
        agent.client.forget("dana", id=episode.id)

    # Forgetting the templates (the transfer's and the calendar's) sends the next similar request
    # back to the planner.
    assert agent.client.forget("dana", kind="template") == 2
    calls = len(agent.planner.contexts)
    assert plan_text(run(agent, "send Sam 20 dollars for the Zanzibar tickets", "dana")) == "stub transfer"
    assert len(agent.planner.contexts) == calls + 1
    assert agent.client.forget("dana", all=True) == 3  # the calendar's and the new transfer's episodes, its template
    assert memories(agent, "dana") == []
    assert memory_rows(agent, "SELECT count(*) FROM episodes WHERE user = 'dana'") == [(0,)]
    raw = b"".join(p.read_bytes() for p in agent.home.glob("memory.sqlite*"))
    assert b"Zanzibar" not in raw  # not in free pages or the WAL either


def test_bad_requests_have_their_status_codes(agent) -> None:
    for arguments in ({}, {"id": "fact-1", "all": True}, {"kind": "fact", "id": "fact-1"}):
        with pytest.raises(InvalidArgument, match="exactly one"):
            agent.client.forget("alice", **arguments)
    with pytest.raises(InvalidArgument, match="kind"):
        agent.client.list_memories("alice", "dreams")
    with pytest.raises(InvalidArgument, match="user"):
        agent.client.list_memories("no such user!")
    with pytest.raises(NotFound):
        agent.client.forget("alice", id="episode-000000000000")
    with grpc.insecure_channel(agent.client.target) as channel:  # the raw status codes
        stub = agent_pb2_grpc.AgentStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Forget(agent_pb2.ForgetRequest(user="alice"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            stub.Forget(agent_pb2.ForgetRequest(user="alice", id="fact-nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_memory_cli(agent) -> None:
    env = {**os.environ, "AGENTD_SOCKET": str(agent.socket), "AGENTD_USER": "erin"}

    def cli(*args: str, command: str = "memory") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*AGENTD, command, *args], capture_output=True, text=True, env=env, timeout=120)

    assert cli("I live in Denver now", "--yes", command="run").returncode == 0  # as $AGENTD_USER
    moved = cli("I live in Reno now", "--yes", "--user", "gina", command="run")
    assert moved.returncode == 0 and moved.stdout.startswith("plan:")
    assert memories(agent, "gina", "fact") == [("fact", "home_city = Reno")]
    again = cli("I live in Tahoe now", "--yes", "--user", "gina", command="run")
    assert again.stdout.startswith("plan (from template-")

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted((r["kind"], r["summary"], r["user"]) for r in rows) == [
        ("episode", "I live in Denver now", "erin"), ("fact", "home_city = Denver", "erin"), ("template", "I live in Denver now", "erin")]
    fact = next(r for r in rows if r["kind"] == "fact")
    assert fact["id"] in cli("list", "--kind", "fact").stdout
    assert cli("list", "--user", "someone-else").stdout == ""

    forgot = cli("forget", fact["id"])
    assert (forgot.returncode, forgot.stdout.strip()) == (0, "forgot 1 memory")
    missing = cli("forget", fact["id"])
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "no memory" in missing.stderr
    both = cli("forget", fact["id"], "--all")
    assert both.returncode != 0 and "exactly one" in both.stderr and "Traceback" not in both.stderr
    assert cli("forget", "--all").stdout.strip() == "forgot 2 memories"
    assert agent.client.list_memories("erin") == []


def test_a_failed_embedding_skips_memory_not_the_run(agent, caplog) -> None:
    from agentd.errors import Unavailable

    client = agent.runs.client()

    async def no_encoder(texts, *, model=None):
        raise Unavailable(f"encoder gone while embedding {texts[0]!r}")

    client.embed = no_encoder  # an instance attribute: only this test's runs see it
    try:
        with caplog.at_level("WARNING", logger="agentd.agent.runs"):
            events = run(agent, "send Maria 45 dollars for the secret party", "frank")
    finally:
        del client.embed
    assert plan_text(events) == "stub transfer"  # planned by the planner: no embedding, no template search
    assert memories(agent, "frank") == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "agentd.agent.runs"]
    assert warnings and all("no embedding" in w and "Unavailable" in w for w in warnings)
    assert not any("secret party" in w for w in warnings)
