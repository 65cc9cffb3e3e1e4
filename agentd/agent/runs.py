"""The daemon's runs: planned, executed, watched by any number of clients, resumed after a restart.

A :class:`RunManager` owns the journal, the approval gate and one asyncio task
per live run. Each run's events are kept (so a client that re-attaches, or
attaches late, sees the whole story) and fanned out to every watcher. When the
daemon starts, :meth:`RunManager.resume_unfinished` picks up every run the
journal says was not finished: done steps are replayed from the journal, the
rest run again with their ``run:step`` idempotency keys.

Every run is some user's (``RunTaskRequest.user``). The manager keeps their
memory (:mod:`.memory`): their profile facts go into the planner's facts, a
``done`` run becomes an episode, and a plan the planner wrote becomes a template
(:mod:`.templates`) that plans a similar later request of theirs without the planner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator

import numpy as np

from agentd.agent.events import Event, PlanReady, RunFinished
from agentd.agent.executor import ApprovalGate, AutoApprove, Budgets, Executor
from agentd.agent.journal import Journal
from agentd.agent.memory import MemoryStore, user_name
from agentd.agent.plan import Plan
from agentd.agent.planner import PlanningContext, PlanResult, planner_facts, planner_spec, today_of
from agentd.agent.summary import summarise
from agentd.agent.templates import TemplateCache
from agentd.errors import AgentdError, InvalidArgument, storage_full
from agentd.tools import tool_specs

if TYPE_CHECKING:
    from agentd.agent.credentials import CredentialStore
    from agentd.aio_client import AsyncClient

log = logging.getLogger(__name__)


@dataclass(eq=False)
class LiveRun:
    """A run this daemon is carrying out now (or has finished since it started)."""

    run_id: str
    events: list[Event] = field(default_factory=list)
    watchers: list[asyncio.Queue[Event | None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    finished: bool = False

    def publish(self, event: Event) -> None:
        self.events.append(event)
        for queue in self.watchers:
            queue.put_nowait(event)

    def close(self) -> None:
        self.finished = True
        for queue in self.watchers:
            queue.put_nowait(None)


class RunManager:
    """Runs requests through the planner and the executor; the Agent servicer's engine room."""

    def __init__(
        self,
        journal_path: Path,
        data_dir: Path,
        target: str,
        *,
        planner: str | None = None,
        budgets: Budgets = Budgets(),
        credentials: "CredentialStore | None" = None,
        memory_path: Path | None = None,
        plan_cache: bool = True,
        embed_model: str | None = None,
    ):
        self.journal = Journal(journal_path)
        self.credentials = credentials
        #: Users' facts, episodes and templates (next to the journal unless told otherwise).
        self.memory = MemoryStore(memory_path or Path(journal_path).with_name("memory.sqlite"), secrets=self._secrets)
        self.templates = TemplateCache(self.memory)
        #: False: every request is planned by the planner (``--no-plan-cache``).
        self.plan_cache = plan_cache
        #: Encoder for episodes and templates (None: the daemon's default).
        self.embed_model = embed_model
        self.data_dir = data_dir
        #: The daemon's own address: the planner reaches models through it, like any client.
        self.target = target
        self._client: "AsyncClient | None" = None
        self.planner_name = planner
        self.budgets = budgets
        self.gate = ApprovalGate()
        self._runs: dict[str, LiveRun] = {}
        self._planner = None
        #: Set while the daemon stops: runs interrupted then stay unfinished in the journal and resume.
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(
        self, request: str, *, model: str | None = None, auto_approve: bool = False, user: str = "default",
        plan_cache: bool = True,
    ) -> str:
        """Journal a new run of ``user`` and start planning it; returns its id.

        ``plan_cache=False`` plans this request with the planner even if a template fits (benchmarks).
        """
        if not request.strip():
            raise InvalidArgument("request", "is empty")
        user = user_name(user)
        run_id = uuid.uuid4().hex[:12]
        self.journal.create_run(run_id, request, auto_approve=auto_approve, user=user)
        self._launch(run_id, request, None, model=model, auto_approve=auto_approve, user=user, plan_cache=plan_cache)
        return run_id

    def resume_unfinished(self) -> list[str]:
        """Carry on every run the journal holds unfinished (after a restart); returns their ids."""
        resumed = []
        for run_id in self.journal.runs(unfinished=True):
            record = self.journal.run(run_id)
            plan = Plan.from_json(record.plan) if record.plan else None
            log.info("resuming run %s (%s)", run_id, record.status)
            self._launch(run_id, record.request, plan, model=None, auto_approve=record.auto_approve, user=record.user)
            resumed.append(run_id)
        return resumed

    async def close(self) -> None:
        self._closing = True
        for run in self._runs.values():
            if run.task is not None and not run.task.done():
                run.task.cancel()
        await asyncio.gather(*(run.task for run in self._runs.values() if run.task), return_exceptions=True)
        if self._client is not None:
            await self._client.close()
        self.journal.close()
        self.memory.close()

    def client(self) -> "AsyncClient":
        """The client the planner uses, opened on first use (inside the daemon's event loop)."""
        if self._client is None:
            from agentd.aio_client import AsyncClient

            self._client = AsyncClient(self.target, timeout=300)
        return self._client

    # -- clients -----------------------------------------------------------------------
    async def watch(self, run_id: str) -> AsyncIterator[Event]:
        """Every event of ``run_id``: those so far, then the live ones until it ends."""
        run = self._runs.get(run_id)
        if run is None:
            self.journal.run(run_id)  # NOT_FOUND for an unknown id
            raise InvalidArgument("run_id", f"run {run_id!r} is not live in this daemon; GetRun has its record")
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        backlog = list(run.events)
        if not run.finished:
            run.watchers.append(queue)
        try:
            for event in backlog:
                yield event
            while not run.finished or not queue.empty():
                event = await queue.get()
                if event is None:
                    break
                yield event
        finally:
            if queue in run.watchers:
                run.watchers.remove(queue)

    def approve(self, run_id: str, step: int, approved: bool) -> None:
        if run_id not in self._runs:
            self.journal.run(run_id)  # NOT_FOUND for an unknown id
        verdict = "approved" if approved else "rejected"
        self.gate.decide(run_id, step, approved, record=lambda: self.journal.set_approval(run_id, step, verdict))

    def cancel(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        if run is None:
            self.journal.run(run_id)
            return False
        if run.task is None or run.task.done():
            return False
        run.task.cancel()
        return True

    # -- the run itself ------------------------------------------------------------------
    def _launch(
        self, run_id: str, request: str, plan: Plan | None, *, model: str | None, auto_approve: bool, user: str,
        plan_cache: bool = True,
    ) -> None:
        run = LiveRun(run_id)
        self._runs[run_id] = run
        run.task = asyncio.ensure_future(self._carry_out(run, request, plan, model, auto_approve, user, plan_cache))

    async def _carry_out(
        self, run: LiveRun, request: str, plan: Plan | None, model: str | None, auto_approve: bool, user: str,
        plan_cache: bool,
    ) -> None:
        tools = {spec.name: spec for spec in tool_specs()}
        memory = self.memory.for_user(user)
        # The user's own facts override what tool packs say (their home city over the demo's).
        facts = {**planner_facts(self.data_dir), **memory.facts()}
        context = PlanningContext(
            request, list(tools.values()), facts, self.client(), model=model, embed_model=self.embed_model, memory=memory
        )
        gate = AutoApprove() if auto_approve else self.gate
        executor = Executor(
            self.journal, tools, self.data_dir, budgets=self.budgets, credentials=self.credentials, user=user, memory=memory
        )
        embedding: np.ndarray | None = None
        planned: PlanResult | None = None  # the planner's first plan, kept as a template if it works
        templated = False  # the plan came from a template: the planner is not asked at all, not even to answer
        try:
            resume = plan is not None
            if plan is None:
                embedding = await self._embed(run.run_id, request)
                hit = None
                if self.plan_cache and plan_cache and embedding is not None:
                    hit = self.templates.find(user, request, embedding, tools, today_of(facts))
                if hit is not None:
                    plan, templated = hit.plan, True
                    run.publish(PlanReady(run.run_id, plan.to_json(), text=f"template {hit.template_id}"))
                else:
                    plan, planned = await self._plan(run, context)
            replans = 0
            while True:
                finished: RunFinished | None = None
                async for event in executor.execute(run.run_id, plan, gate, resume=resume):
                    if isinstance(event, PlanReady) and not resume:
                        continue  # already published, with the planner's text
                    if isinstance(event, RunFinished):
                        finished = event  # the last event: published below, once replanning is decided
                        continue
                    run.publish(event)
                assert finished is not None
                if finished.status == "failed" and replans < self.budgets.max_replans:
                    # A tool failed: plan again with what happened as the observation. A rejection
                    # (status "cancelled") is the user's no and is not replanned.
                    replans += 1
                    observation = self._observation(run.run_id, tools)
                    plan, _ = await self._plan(run, dataclasses.replace(context, observation=observation), first=plan.first + len(plan.steps))
                    planned, templated = None, False  # what ran is not the plan the planner first wrote
                    resume = False
                    continue
                if finished.status == "done":
                    if templated:
                        answer = summarise(plan, finished.results, tools)
                    else:
                        answer = await self._planner_instance().answer(context, plan, finished.results)
                    self.journal.set_run_status(run.run_id, "done", answer=answer)
                    finished = RunFinished(run.run_id, "done", finished.results, answer=answer)
                    await self._remember(run.run_id, user, request, embedding, planned)
                run.publish(finished)
                break
        except asyncio.CancelledError:
            if not self._closing:  # CancelRun; a stopping daemon leaves the run to be resumed
                self._end(run, "cancelled", "cancelled")
        except AgentdError as exc:
            self._end(run, "failed", str(exc))
        except Exception as exc:  # a full disk, a planner or tool bug: the run fails, the daemon keeps serving
            full = storage_full(exc)
            if full is not None:
                log.warning("run %s failed: %s", run.run_id, full)
                self._end(run, "failed", str(full))
            else:
                log.exception("run %s failed", run.run_id)
                self._end(run, "failed", f"internal error: {type(exc).__name__}")
        finally:
            run.close()

    async def _plan(self, run: LiveRun, context: PlanningContext, first: int = 1) -> tuple[Plan, PlanResult]:
        """Ask the planner, announce the plan, and number it after the run's earlier steps."""
        planned = await self._planner_instance().plan(context)
        plan = planned.plan.renumbered(first)
        run.publish(PlanReady(run.run_id, plan.to_json(), text=planned.text, completion_tokens=planned.completion_tokens))
        return plan, planned

    # -- memory ------------------------------------------------------------------------
    async def _embed(self, run_id: str, request: str) -> np.ndarray | None:
        """The request's embedding, or None if the daemon cannot embed (memory is then skipped, not the run)."""
        try:
            vectors = await self.client().embed([request], model=self.embed_model)
            return np.asarray(vectors, np.float32)[0]
        except Exception as exc:  # no encoder served, a busy daemon: the run goes on without memory
            # The error's type only: a message might quote the request, which logs never hold.
            log.warning("run %s: no embedding, so nothing is remembered of it (%s)", run_id, type(exc).__name__)
            return None

    async def _remember(self, run_id: str, user: str, request: str, embedding: np.ndarray | None, planned: PlanResult | None) -> None:
        """A done run becomes an episode; the planner's plan for it, a template. Failures are logged, not raised."""
        if embedding is None:
            embedding = await self._embed(run_id, request)
            if embedding is None:
                return
        try:
            record = self.journal.run(run_id)
            calls = [{"step": s.step, "tool": s.tool, "arguments": s.arguments} for s in record.steps if s.status == "done"]
            self.memory.add_episode(user, run_id, request, embedding, record.plan or {}, calls, record.status)
            if planned is not None and self.plan_cache:
                self.templates.keep(user, request, embedding, planned.plan, planned.sources)
        except Exception as exc:  # memory is a convenience: the run is done either way
            log.warning("run %s: not remembered (%s)", run_id, type(exc).__name__)

    def _secrets(self) -> list[str]:
        """The stored credentials' secrets, scrubbed from whatever memory writes."""
        if self.credentials is None:
            return []
        secrets = []
        for provider in self.credentials.providers():
            try:
                secrets.append(self.credentials.get(provider))
            except AgentdError:
                pass
        return secrets

    def _observation(self, run_id: str, tools: dict) -> str:
        """What the steps so far did, for a replan. Untrusted tool output is left out, not paraphrased."""
        lines = []
        for step in self.journal.run(run_id).steps:
            call = f"step {step.step}: {step.tool}({json.dumps(step.arguments or {}, sort_keys=True)})"
            spec = tools.get(step.tool)
            if step.status == "done":
                if spec is not None and spec.untrusted_output:
                    lines.append(f"{call} -> done (third-party text, not shown)")
                else:
                    lines.append(f"{call} -> done: {json.dumps(step.result, sort_keys=True)[:400]}")
            else:
                lines.append(f"{call} -> {step.status}: {step.error or ''}")
        return "\n".join(lines)

    def _end(self, run: LiveRun, status: str, error: str) -> None:
        """Journal and announce the end of a run the executor did not finish itself."""
        try:
            self.journal.set_run_status(run.run_id, status, error=error)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the client still hears how the run ended
            # The journal keeps the run's last recorded state, so the next daemon resumes it.
            log.warning("run %s: its end (%s) is not journaled (%s)", run.run_id, status, type(exc).__name__)
        if not any(isinstance(event, RunFinished) for event in run.events):
            run.publish(RunFinished(run.run_id, status, {}, error=error))

    def _planner_instance(self):
        if self._planner is None:
            self._planner = planner_spec(self.planner_name).make()
        return self._planner
