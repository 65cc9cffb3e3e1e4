"""``agentd.v1.Agent``: requests carried out as plans of tool calls, over a :class:`RunManager`."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from grpc import aio

from agentd.agent.events import ApprovalNeeded, Event, PlanReady, RunFinished, StepFinished, StepStarted
from agentd.agent.journal import RunRecord
from agentd.agent.memory import MemoryItem, user_name
from agentd.agent.runs import RunManager
from agentd.errors import InvalidArgument
from agentd.v1 import agent_pb2 as pb
from agentd.v1 import agent_pb2_grpc


class AgentServicer(agent_pb2_grpc.AgentServicer):
    """Thin: validation and protobuf mapping; the work is the RunManager's."""

    def __init__(self, runs: RunManager):
        self._runs = runs

    async def RunTask(self, request: pb.RunTaskRequest, context: aio.ServicerContext) -> AsyncIterator[pb.RunEvent]:
        if request.run_id:
            run_id = request.run_id
        else:
            if not request.request.strip():
                raise InvalidArgument("request", "is required (or run_id to re-attach to a run)")
            run_id = self._runs.start(
                request.request, model=request.model if request.HasField("model") else None, auto_approve=request.auto_approve,
                user=user_name(request.user), plan_cache=not request.no_plan_cache,
            )
        async for event in self._runs.watch(run_id):
            yield event_message(event)

    async def Approve(self, request: pb.ApproveRequest, context: aio.ServicerContext) -> pb.ApproveResponse:
        self._runs.approve(_run_id(request.run_id), request.step, request.approved)
        return pb.ApproveResponse()

    async def CancelRun(self, request: pb.CancelRunRequest, context: aio.ServicerContext) -> pb.CancelRunResponse:
        return pb.CancelRunResponse(cancelled=self._runs.cancel(_run_id(request.run_id)))

    async def ListRuns(self, request: pb.ListRunsRequest, context: aio.ServicerContext) -> pb.ListRunsResponse:
        journal = self._runs.journal
        return pb.ListRunsResponse(runs=[run_info(journal.run(run_id), steps=False) for run_id in journal.runs()])

    async def GetRun(self, request: pb.GetRunRequest, context: aio.ServicerContext) -> pb.RunInfo:
        return run_info(self._runs.journal.run(_run_id(request.run_id)))

    async def ListMemories(self, request: pb.ListMemoriesRequest, context: aio.ServicerContext) -> pb.ListMemoriesResponse:
        memory = self._runs.memory.for_user(user_name(request.user))
        return pb.ListMemoriesResponse(memories=[memory_message(item) for item in memory.list(request.kind or None)])

    async def Forget(self, request: pb.ForgetRequest, context: aio.ServicerContext) -> pb.ForgetResponse:
        memory = self._runs.memory.for_user(user_name(request.user))
        return pb.ForgetResponse(forgotten=memory.forget(request.id or None, kind=request.kind or None, all=request.all))


def _run_id(value: str) -> str:
    if not value:
        raise InvalidArgument("run_id", "is required")
    return value


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def event_message(event: Event) -> pb.RunEvent:
    """The wire form of one run event."""
    message = pb.RunEvent(run_id=event.run_id)
    if isinstance(event, PlanReady):
        message.plan.CopyFrom(pb.PlanReady(plan_json=_json(event.plan), text=event.text, completion_tokens=event.completion_tokens))
    elif isinstance(event, StepStarted):
        message.step_started.CopyFrom(pb.StepStarted(step=event.step, tool=event.tool, arguments_json=_json(event.arguments)))
    elif isinstance(event, StepFinished):
        message.step_finished.CopyFrom(
            pb.StepFinished(
                step=event.step, tool=event.tool, status=event.status, result_json=_json(event.result),
                error=event.error or "", replayed=event.replayed,
            )
        )
    elif isinstance(event, ApprovalNeeded):
        message.approval_needed.CopyFrom(
            pb.ApprovalNeeded(step=event.step, tool=event.tool, arguments_json=_json(event.arguments), description=event.description)
        )
    elif isinstance(event, RunFinished):
        message.run_finished.CopyFrom(pb.RunFinished(status=event.status, answer=event.answer or "", error=event.error or ""))
    return message


def run_info(record: RunRecord, *, steps: bool = True) -> pb.RunInfo:
    """The wire form of a journaled run."""
    info = pb.RunInfo(
        run_id=record.run_id, request=record.request, status=record.status, plan_json=_json(record.plan),
        answer=record.answer or "", error=record.error or "", created=record.created, updated=record.updated,
        user=record.user,
    )
    if steps:
        info.steps.extend(
            pb.StepInfo(
                step=s.step, tool=s.tool, status=s.status, arguments_json=_json(s.arguments), result_json=_json(s.result),
                error=s.error or "", attempts=s.attempts, approval=s.approval or "",
            )
            for s in record.steps
        )
    return info


def memory_message(item: MemoryItem) -> pb.Memory:
    """The wire form of one memory."""
    return pb.Memory(id=item.id, kind=item.kind, user=item.user, summary=item.summary, created=item.created, uses=item.uses)
