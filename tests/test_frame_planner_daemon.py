"""The shipped trained planner, served by a real daemon: requests become the right effects in the sandbox world.

The daemon serves all-MiniLM-L6-v2 and the ``agentd-planner`` adapter (the
default classifier); the agent plans with ``frames`` (the default planner once
the adapter ships) and carries the plan out with every approval given. What
counts is what happened: the world's tables after the run, read with sqlite3.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _daemon_fixtures import MINILM_DIR, InProcessDaemon, socket_dir  # noqa: E402

from agentd.agent import planner as planner_registry  # noqa: E402
from agentd.agent.credentials import CredentialStore  # noqa: E402
from agentd.client import Client  # noqa: E402
from agentd.server.served import ModelSource, ModelTable  # noqa: E402

pytestmark = pytest.mark.slow

SHIPPED = Path(__file__).resolve().parents[1] / "plugins" / "frame_planner" / "model"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    assert (SHIPPED / "adapter_config.json").is_file(), "the trained planner is not in the tree"
    home = tmp_path_factory.mktemp("agent")
    store = CredentialStore(home / "credentials")
    for provider in ("bank", "airline", "hotel", "restaurant"):
        store.add(provider, f"sandbox-{provider}-token")
    planner_registry.reset()
    table = ModelTable.load([ModelSource("minilm", MINILM_DIR), ModelSource("agentd-planner", SHIPPED)])
    with socket_dir() as directory, InProcessDaemon(table, directory / "a.sock", agent_home=home) as running:
        with Client(running.targets[0], timeout=120) as client:
            yield SimpleNamespace(client=client, home=home)


def run(agent, request: str, user: str = "") -> dict:
    events = list(agent.client.run_task(request, user=user, auto_approve=True, no_plan_cache=True))
    finished = events[-1].run_finished
    plan = next((e.plan for e in events if e.WhichOneof("event") == "plan"), None)
    started = [e.step_started for e in events if e.WhichOneof("event") == "step_started"]
    return {"status": finished.status, "tools": [s.tool for s in started], "plan": plan.text if plan else None,
            "error": finished.error,
            "arguments": [s.arguments_json for s in started]}


def world(agent, sql: str) -> list[tuple]:
    with sqlite3.connect(agent.home / "tools" / "demo_world" / "world.sqlite") as db:
        return db.execute(sql).fetchall()


def test_frames_is_the_default_planner_once_its_model_ships() -> None:
    assert planner_registry.planner_spec().name == "frames"


def test_a_transfer_with_the_amount_in_words(agent) -> None:
    result = run(agent, "send Maria forty-five bucks for the concert tickets")
    assert result["status"] == "done", result
    assert result["tools"] == ["transfer_money"], result
    rows = world(agent, "SELECT amount_cents, description FROM transactions WHERE category = 'transfers' ORDER BY id")
    assert rows and rows[-1][0] == -4500 and "Maria" in rows[-1][1], rows


def test_a_booking_and_a_message_with_its_confirmation(agent) -> None:
    result = run(agent, "book a flight to Austin on March 8 and text Sam the confirmation")
    assert result["status"] == "done", result
    assert result["tools"] == ["search_flights", "book_flight", "send_message"], result
    (booking,) = world(agent, "SELECT confirmation FROM flight_bookings")
    (message,) = world(agent, "SELECT text FROM messages ORDER BY id DESC LIMIT 1")
    assert booking[0] in message[0]


def test_a_learned_fact_fills_a_later_request(agent) -> None:
    assert run(agent, "I live in Los Angeles now", user="lee")["tools"] == ["remember_fact"]
    assert ("fact", "home_city = Los Angeles") in [(m.kind, m.summary) for m in agent.client.list_memories("lee")]
    result = run(agent, "find flights to Denver tomorrow", user="lee")
    assert result["tools"] == ["search_flights"] and '"origin": "Los Angeles"' in result["arguments"][0], result
    # Another user's facts are not lee's.
    other = run(agent, "find flights to Denver tomorrow", user="kim")
    assert "Los Angeles" not in other["arguments"][0], other


def test_my_usual_order_comes_from_the_users_past_orders(agent) -> None:
    first = run(agent, "order 2 Pad Thai from a Thai place", user="ola")
    assert first["status"] == "done" and first["tools"] == ["search_restaurants", "order_food"], first
    usual = run(agent, "order my usual from the Thai place", user="ola")
    assert usual["status"] == "done" and usual["tools"] == ["search_restaurants", "order_food"], usual
    assert '"name": "Pad Thai"' in usual["arguments"][1] and '"quantity": 2' in usual["arguments"][1], usual
    # Someone with no past orders has no usual: a clear refusal, not a guess.
    unknown = run(agent, "order my usual from the Thai place", user="new")
    assert unknown["status"] == "failed" and "usual order" in unknown["error"], unknown
