"""Property-based fuzzing of the Agent service (issue 12): garbage in, no surprise out, nothing paid unasked.

A daemon hosts the Agent with the world of test_agent_service.py (the fake bank of
test_agent_executor.py, tools prefixed ``t_``) and a planner that plans *any* request, whatever
its text, as "find the contact it names, then pay them" — so every random request reaches a step
that needs approval. Every Agent RPC then gets hypothesis-generated raw bytes and random messages
(hinted with run ids that exist, so Approve and CancelRun reach live runs). The contracts:

* every answer is OK or a documented status with a reason, never UNKNOWN or INTERNAL;
* the bank pays a step only if its run was auto-approved or an Approve(run, step, approved) said yes;
* a random run id is NOT_FOUND to every RPC that takes one;
* health answers within its deadline throughout, and the daemon keeps serving afterwards.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentd.agent.planner as planner_registry
import agentd.tools as tool_registry
from agentd.agent.plan import Plan, Ref, Step
from agentd.agent.planner import PlannerSpec, PlanResult
from agentd.hookspecs import hookimpl
from agentd.plugin_manager import load_plugins
from agentd.server.served import ModelSource, ModelTable
from agentd.v1 import agent_pb2, agent_pb2_grpc
from tests._attack_fixtures import Answer, call, check_answer, health_watch, rpcs, wire
from tests._daemon_fixtures import InProcessDaemon, socket_dir, tiny_bert, tiny_llama
from tests.test_agent_executor import Ledger, make_tools

pytestmark = pytest.mark.slow

EXAMPLES = 40
RPCS = rpcs(agent_pb2)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


class AnyRequestPlanner:
    """Plans every request as: find the contact named by its text, then pay them 1 (needs approval)."""

    async def plan(self, context) -> PlanResult:
        plan = Plan((
            Step(1, "t_find_contact", {"name": context.request[:40]}),
            Step(2, "t_transfer_money", {"to": Ref(1, ("contacts", 0, "handle")), "amount": 1.0}),
        ))
        return PlanResult(plan, text="1. find_contact(...)\n2. transfer_money(...)\njoin()", completion_tokens=1)

    async def answer(self, context, plan, results) -> str:
        return "paid"


@dataclass
class World:
    daemon: InProcessDaemon
    channel: grpc.Channel
    stub: agent_pb2_grpc.AgentStub
    ledger: Ledger
    journal_path: Path
    #: Run ids worth fuzzing with: a finished run and one waiting for approval.
    run_ids: list[str]
    #: ``(run, step)`` pairs an Approve answered OK with ``approved=True``.
    approved: set[tuple[str, int]] = field(default_factory=set)

    def paid(self) -> set[tuple[str, int]]:
        """``(run, step)`` of every transfer the bank made (its idempotency key is ``run:step``)."""
        with sqlite3.connect(self.ledger.path) as db:
            keys = [row[0] for row in db.execute("SELECT key FROM transfers")]
        return {(key.rsplit(":", 1)[0], int(key.rsplit(":", 1)[1])) for key in keys}

    def assert_paid_only_with_approval(self) -> None:
        # The journal's file, not the daemon's Journal object: this also runs after the daemon stopped.
        with sqlite3.connect(self.journal_path) as db:
            auto = {row[0] for row in db.execute("SELECT run_id FROM runs WHERE auto_approve = 1")}
        for run_id, step in self.paid():
            assert run_id in auto or (run_id, step) in self.approved, (run_id, step)


def _event(response: bytes) -> str | None:
    return agent_pb2.RunEvent.FromString(response).WhichOneof("event")


def _start(stub: agent_pb2_grpc.AgentStub, request: str, *, auto_approve: bool = False) -> list[agent_pb2.RunEvent]:
    """RunTask's events up to its approval request (or its end)."""
    events = []
    stream = stub.RunTask(agent_pb2.RunTaskRequest(request=request, auto_approve=auto_approve), timeout=60)
    for event in stream:
        events.append(event)
        if event.WhichOneof("event") == "approval_needed":
            stream.cancel()
            break
    return events


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent-fuzz")
    ledger = Ledger(root / "ledger.sqlite")
    planner = AnyRequestPlanner()
    tools = [replace(spec, name="t_" + spec.name) for spec in make_tools(ledger).values()]
    plugin = SimpleNamespace(
        register_tools=hookimpl(lambda register: [register(spec) for spec in tools]),
        register_planners=hookimpl(lambda register: register(PlannerSpec("fuzz", make=lambda: planner))),
    )
    manager = load_plugins()
    manager.register(plugin, name="test-agent-fuzz")
    tool_registry.reset()
    planner_registry.reset()
    # bert: runs are embedded, so done runs become episodes and templates that later requests meet.
    table = ModelTable.load([ModelSource("llama", tiny_llama(root)), ModelSource("bert", tiny_bert(root))])
    try:
        with socket_dir() as directory, InProcessDaemon(table, directory / "a.sock", agent_home=root / "agent") as running:
            running.daemon.runs.planner_name = "fuzz"
            with grpc.insecure_channel(running.targets[0]) as channel:
                stub = agent_pb2_grpc.AgentStub(channel)
                done = _start(stub, "pay Maria", auto_approve=True)[0].run_id
                waiting = _start(stub, "pay Sam")[0].run_id
                fuzzed = World(running, channel, stub, ledger, root / "agent" / "journal.sqlite", [done, waiting])
                yield fuzzed
        # Once more when every run has stopped: a payment still on its way during a test is in now.
        fuzzed.assert_paid_only_with_approval()
    finally:
        manager.unregister(name="test-agent-fuzz")
        tool_registry.reset()
        planner_registry.reset()


def _hints(world: World) -> dict[str, list]:
    return {
        "run_id": world.run_ids, "step": [1, 2], "user": ["default", "alice"], "model": ["llama"],
        "kind": ["fact", "episode", "template"], "request": ["pay Maria", "pay Sam 5"],
    }


def _record_approval(world: World, payload: bytes, answer: Answer) -> None:
    if answer.code == grpc.StatusCode.OK:  # it parsed on the daemon, so it parses here
        request = agent_pb2.ApproveRequest.FromString(payload)
        if request.approved:
            world.approved.add((request.run_id, request.step))


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.method for rpc in RPCS])
def test_every_agent_rpc_answers_garbage_with_a_documented_status(world, rpc) -> None:
    codes: Counter[str] = Counter()
    # A run waiting for approval streams no more until someone decides: its approval request is the end.
    until = (lambda response: _event(response) == "approval_needed") if rpc.method.endswith("/RunTask") else None

    @FUZZ
    @given(payload=wire(rpc.request, _hints(world)))
    def probe(payload: bytes) -> None:
        answer = call(world.channel, rpc, payload, until=until)
        codes[answer.code.name] += 1
        if rpc.method.endswith("/Approve"):
            _record_approval(world, payload, answer)
        check_answer(answer, payload)

    with health_watch(world.daemon.targets[0]) as health:
        probe()
    print(rpc.method, dict(codes))
    assert health.checks >= 1 and health.failures == [], health
    assert sum(codes.values()) >= EXAMPLES // 2
    world.assert_paid_only_with_approval()
    assert world.stub.ListRuns(agent_pb2.ListRunsRequest(), timeout=10).runs  # still serving


def test_random_requests_wait_for_approval_and_pay_nothing_unasked(world) -> None:
    """Whatever the text, the run stops at the payment for approval; a yes for another step or
    another run changes nothing; CancelRun ends it with nothing paid."""
    stub = world.stub

    @FUZZ
    @given(text=st.text(min_size=1, max_size=60).filter(str.strip), step=st.integers(-(2**31), 2**31 - 1))
    def probe(text: str, step: int) -> None:
        paid = world.paid()
        events = _start(stub, text)
        run_id = events[0].run_id
        assert events[-1].WhichOneof("event") == "approval_needed", events
        waiting = events[-1].approval_needed
        assert (waiting.step, waiting.tool) == (2, "t_transfer_money")
        assert world.paid() == paid
        if step != waiting.step:
            with pytest.raises(grpc.RpcError) as caught:
                stub.Approve(agent_pb2.ApproveRequest(run_id=run_id, step=step, approved=True), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Approve(agent_pb2.ApproveRequest(run_id=run_id + "x", step=waiting.step, approved=True), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
        assert stub.CancelRun(agent_pb2.CancelRunRequest(run_id=run_id), timeout=10).cancelled
        for event in stub.RunTask(agent_pb2.RunTaskRequest(run_id=run_id), timeout=30):  # to its end
            last = event
        assert last.run_finished.status == "cancelled", last
        assert world.paid() == paid

    with health_watch(world.daemon.targets[0]) as health:
        probe()
    assert health.checks >= 1 and health.failures == [], health


def test_a_random_run_id_is_not_found(world) -> None:
    stub = world.stub
    calls = {
        "Approve": lambda run_id: stub.Approve(agent_pb2.ApproveRequest(run_id=run_id, step=2, approved=True), timeout=10),
        "CancelRun": lambda run_id: stub.CancelRun(agent_pb2.CancelRunRequest(run_id=run_id), timeout=10),
        "GetRun": lambda run_id: stub.GetRun(agent_pb2.GetRunRequest(run_id=run_id), timeout=10),
        "RunTask": lambda run_id: list(stub.RunTask(agent_pb2.RunTaskRequest(run_id=run_id), timeout=10)),
    }

    @FUZZ
    @given(run_id=st.text(min_size=1, max_size=40).filter(lambda value: value not in world.run_ids))
    def probe(run_id: str) -> None:
        for name, rpc in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                rpc(run_id)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, (name, run_id, caught.value.details())
            assert caught.value.details(), (name, run_id)

    probe()
