"""``agentd.v1.Agent`` through a real in-process daemon and the Python client.

A test plugin registers a fake planner (a fixed plan: find Maria, then pay her)
and the fake bank of test_agent_executor.py; the checks read the bank's own
ledger and the journal, as well as the events.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

import agentd.agent.planner as planner_registry
import agentd.tools as tool_registry
from agentd.agent.plan import Plan, Ref, Step
from agentd.agent.planner import PlannerSpec, PlanResult
from agentd.client import Client
from agentd.errors import InvalidArgument, NotFound
from agentd.hookspecs import hookimpl
from agentd.plugin_manager import load_plugins
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import agent_pb2, agent_pb2_grpc
from tests._daemon_fixtures import InProcessDaemon, socket_dir, tiny_llama
from tests.test_agent_executor import Ledger, make_tools


class FakePlanner:
    """Plans every request as: find the contact named in it, then send them the amount in it."""

    def __init__(self) -> None:
        self.contexts: list[Any] = []

    async def plan(self, context) -> PlanResult:
        self.contexts.append(context)
        words = context.request.split()
        if context.observation and "insufficient funds" in context.observation:
            words[2] = "50"  # a replan: ask for what the bank can do
        plan = Plan((
            Step(1, "t_find_contact", {"name": words[1]}),
            Step(2, "t_transfer_money", {"to": Ref(1, ("contacts", 0, "handle")), "amount": float(words[2])}),
        ))
        return PlanResult(plan, text="1. find_contact(...)\n2. transfer_money(...)\njoin()", completion_tokens=12)

    async def answer(self, context, plan, results) -> str:
        return f"Sent. ({len(results)} steps)"


@pytest.fixture
def agent(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    planner = FakePlanner()
    # Prefixed names: the built-in tool packs stay registered next to these.
    tools = [replace(spec, name="t_" + spec.name) for spec in make_tools(ledger).values()]
    plugin = SimpleNamespace(
        register_tools=hookimpl(lambda register: [register(spec) for spec in tools]),
        register_planners=hookimpl(lambda register: register(PlannerSpec("fake", make=lambda: planner))),
        planner_facts=hookimpl(lambda data_dir: {"test_fact": "from the test plugin"}),
    )
    manager = load_plugins()
    manager.register(plugin, name="test-agent")
    tool_registry.reset()
    planner_registry.reset()
    table = ModelTable.load([ModelSource("llama", tiny_llama(tmp_path))])
    with socket_dir() as directory:
        running = InProcessDaemon(table, directory / "a.sock", agent_home=tmp_path / "agent")
        running.__enter__()
        running.stopped = False
        try:
            running.daemon.runs.planner_name = "fake"
            with Client(running.targets[0], timeout=60) as client:
                yield SimpleNamespace(client=client, ledger=ledger, planner=planner, daemon=running, home=tmp_path / "agent",
                                      directory=directory, table=table)
        finally:
            if not running.stopped:
                running.__exit__(None, None, None)
            manager.unregister(name="test-agent")
            tool_registry.reset()
            planner_registry.reset()


def kinds(events) -> list[str]:
    return [event.WhichOneof("event") for event in events]


def test_a_run_streams_plan_steps_approval_and_answer(agent) -> None:
    events = []
    for event in agent.client.run_task("pay Maria 45"):
        events.append(event)
        if event.WhichOneof("event") == "approval_needed":
            assert agent.ledger.rows() == []  # paused: nothing paid yet
            assert '"to": "maria@bank"' in event.approval_needed.arguments_json
            agent.client.approve(event.run_id, event.approval_needed.step, True)
    assert kinds(events) == ["plan", "step_started", "step_finished", "approval_needed", "step_started", "step_finished", "run_finished"]
    assert events[0].plan.completion_tokens == 12
    assert events[-1].run_finished.status == "done" and events[-1].run_finished.answer == "Sent. (2 steps)"
    assert agent.ledger.rows() == [("maria@bank", 45.0)]
    assert agent.planner.contexts[-1].facts["test_fact"] == "from the test plugin"

    run_id = events[0].run_id
    info = agent.client.get_run(run_id)
    assert (info.status, info.answer) == ("done", "Sent. (2 steps)")
    assert [(s.tool, s.status, s.approval) for s in info.steps] == [("t_find_contact", "done", ""), ("t_transfer_money", "done", "approved")]
    assert run_id in [run.run_id for run in agent.client.list_runs()]


def test_auto_approve_and_re_attaching_to_a_finished_run(agent) -> None:
    events = list(agent.client.run_task("pay Sam 10", auto_approve=True))  # nobody calls Approve
    assert events[-1].run_finished.status == "done"
    assert "approval_needed" in kinds(events)  # still shown: the user sees what was approved for them
    assert agent.client.get_run(events[0].run_id).steps[1].approval == "approved"
    again = list(agent.client.run_task(run_id=events[0].run_id))
    assert kinds(again) == kinds(events)  # the whole story, again
    assert agent.ledger.rows() == [("sam@bank", 10.0)]


def test_rejection_and_cancellation_pay_nothing(agent) -> None:
    events = []
    for event in agent.client.run_task("pay Maria 45"):
        events.append(event)
        if event.WhichOneof("event") == "approval_needed":
            agent.client.approve(event.run_id, event.approval_needed.step, False)
    assert events[-1].run_finished.status == "cancelled"

    stream = agent.client.run_task("pay Linda 20")
    first = next(stream)
    for event in stream:
        if event.WhichOneof("event") == "approval_needed":
            assert agent.client.cancel_run(first.run_id) is True
        last = event
    assert last.run_finished.status == "cancelled" and agent.client.get_run(first.run_id).status == "cancelled"
    assert agent.ledger.rows() == []
    assert agent.client.cancel_run(first.run_id) is False


def test_errors_have_their_status_codes(agent) -> None:
    with pytest.raises(NotFound):
        agent.client.get_run("nope")
    with pytest.raises(InvalidArgument, match="request"):
        list(agent.client.run_task("   "))
    events = list(agent.client.run_task("pay Maria 5", auto_approve=True))
    with pytest.raises(InvalidArgument, match="not waiting for approval"):
        agent.client.approve(events[0].run_id, 2, True)
    with grpc.insecure_channel(agent.client.target) as channel:  # the raw status code, no client mapping
        with pytest.raises(grpc.RpcError) as caught:
            agent_pb2_grpc.AgentStub(channel).GetRun(agent_pb2.GetRunRequest(run_id="nope"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_run_waiting_for_approval_survives_a_daemon_restart(agent) -> None:
    """Stop the daemon while a run waits for approval; a new daemon on the same journal resumes it:
    the lookup replays from the journal, the approval is asked again, the payment happens once."""
    stream = agent.client.run_task("pay Pat 30")
    run_id = None
    for event in stream:
        run_id = event.run_id
        if event.WhichOneof("event") == "approval_needed":
            break
    stream.close()
    agent.daemon.__exit__(None, None, None)  # a clean stop: the run stays unfinished in its journal
    agent.daemon.stopped = True
    assert agent.ledger.rows() == []

    restarted = InProcessDaemon(agent.table, agent.directory / "b.sock", agent_home=agent.home)
    with restarted:
        restarted.daemon.runs.planner_name = "fake"
        with Client(restarted.targets[0], timeout=60) as client:
            events = []
            for event in client.run_task(run_id=run_id):
                events.append(event)
                if event.WhichOneof("event") == "approval_needed":
                    client.approve(run_id, event.approval_needed.step, True)
            replayed = [e.step_finished for e in events if e.WhichOneof("event") == "step_finished" and e.step_finished.replayed]
            assert [(s.step, s.tool) for s in replayed] == [(1, "t_find_contact")]
            assert events[-1].run_finished.status == "done"
    assert agent.ledger.rows() == [("pat@bank", 30.0)]


def test_a_failed_tool_is_replanned_with_the_failure_as_observation(agent) -> None:
    """'pay Maria 500' fails (insufficient funds in the fake bank); the planner is asked again with what
    happened, its new plan is numbered after the first one's steps, and it succeeds."""
    events = list(agent.client.run_task("pay Maria 500", auto_approve=True))
    plans = [e.plan for e in events if e.WhichOneof("event") == "plan"]
    assert len(plans) == 2
    import json as _json

    assert [s["id"] for s in _json.loads(plans[1].plan_json)["steps"]] == [3, 4]
    observation = agent.planner.contexts[-1].observation
    assert "insufficient funds" in observation and "step 1: t_find_contact" in observation
    assert events[-1].run_finished.status == "done"
    assert agent.ledger.rows() == [("maria@bank", 50.0)]
    info = agent.client.get_run(events[0].run_id)
    assert [(s.step, s.status) for s in info.steps] == [(1, "done"), (2, "failed"), (3, "done"), (4, "done")]
