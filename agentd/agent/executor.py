"""Carry out a plan: parallel where the DAG allows, paused for approvals, journaled after every step.

:meth:`Executor.execute` is an async generator of :mod:`events <agentd.agent.events>`:
the client sees the plan, every step start and finish, every approval request,
and the end of the run.

* **Parallel steps.** Every step whose dependencies are done starts at once;
  tools run in worker threads (``asyncio.to_thread``), so independent searches overlap.
* **Approvals.** A step whose tool ``needs_approval`` does not start until the
  :class:`ApprovalGate` says so, and while one waits no other step starts: the
  run is paused, showing the exact resolved arguments. A rejection stops the run
  (the rejected step and its dependents are not run). Decisions are journaled,
  so a resumed run does not ask twice.
* **Tool output is data.** A result only ever flows into the argument a plan's
  reference names; nothing in a result can add, change or approve a step.
* **Budgets.** Steps per plan, seconds per tool call, seconds per run.
* **Durability.** The journal is written after every transition. After a
  restart :meth:`Executor.execute` with ``resume=True`` replays ``done`` steps
  from the journal and re-runs the others with the same ``run:step``
  idempotency key, so an idempotent tool applies its effect once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping

from agentd.agent.events import ApprovalNeeded, Event, PlanReady, RunFinished, StepFinished, StepStarted
from agentd.agent.journal import Journal
from agentd.agent.plan import Plan, Step
from agentd.errors import AgentdError, InvalidArgument
from agentd.tools import ToolContext, ToolSpec, validate_arguments

if TYPE_CHECKING:
    from agentd.agent.credentials import CredentialStore
    from agentd.agent.memory import UserMemory


@dataclass(frozen=True)
class Budgets:
    """Limits on one run."""

    max_steps: int = 16
    #: Seconds one tool call may take before its step fails.
    step_timeout: float = 30.0
    #: Seconds the whole run may take (approval waits included).
    wall_time: float = 600.0
    #: Tool calls running at once (0: as many as the plan allows).
    max_parallel: int = 0
    #: Times a run may be planned again after a tool fails (the failure is the planner's observation).
    max_replans: int = 1


class ApprovalGate:
    """Where approval decisions arrive: the RPC handler or terminal calls :meth:`decide`.

    The executor registers the step (:meth:`expect`) before it tells the client
    approval is needed, so a decision that comes back at once is not lost.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], asyncio.Future[bool]] = {}

    def expect(self, run_id: str, step: int) -> "asyncio.Future[bool]":
        """A future the decision will resolve; :meth:`decide` may be called from now on."""
        future = asyncio.get_running_loop().create_future()
        self._pending[(run_id, step)] = future
        future.add_done_callback(lambda _: self._pending.pop((run_id, step), None))
        return future

    def decide(self, run_id: str, step: int, approved: bool, *, record: Callable[[], None] | None = None) -> None:
        """Approve or reject a waiting step; INVALID_ARGUMENT if that step is not waiting.

        ``record`` makes the decision durable before it takes effect (the
        journal): if it raises (a full disk), the step keeps waiting and the
        caller gets the error, rather than a yes the journal never held.
        """
        future = self._pending.get((run_id, step))
        if future is None or future.done():
            raise InvalidArgument("step", f"step {step} of run {run_id!r} is not waiting for approval")
        if record is not None:
            record()
        future.set_result(approved)


class AutoApprove(ApprovalGate):
    """Approves everything (``agentd run --yes``, scripts); still journaled and audited as approved."""

    def expect(self, run_id: str, step: int) -> "asyncio.Future[bool]":
        future = asyncio.get_running_loop().create_future()
        future.set_result(True)
        return future


class Executor:
    """Runs plans against the registered tools, recording everything in ``journal``."""

    def __init__(
        self,
        journal: Journal,
        tools: Mapping[str, ToolSpec],
        data_dir: Path,
        *,
        budgets: Budgets = Budgets(),
        credentials: "CredentialStore | None" = None,
        user: str = "default",
        memory: "UserMemory | None" = None,
    ):
        self.journal = journal
        self.tools = tools
        self.data_dir = Path(data_dir)
        self.budgets = budgets
        #: Where tools get their providers' secrets, by handle, at call time.
        self.credentials = credentials
        #: Whose run this executor carries out, and that user's memory: tools see only theirs.
        self.user = user
        self.memory = memory

    async def execute(
        self, run_id: str, plan: Plan, gate: ApprovalGate, *, resume: bool = False
    ) -> AsyncIterator[Event]:
        """Run ``plan`` as ``run_id`` (journaled before the first step), yielding events.

        A replan's plan is numbered after the steps the run already took
        (:meth:`Plan.renumbered`); their results stay available to it.
        """
        if plan.first - 1 + len(plan.steps) > self.budgets.max_steps:
            raise InvalidArgument(
                "plan", f"would take the run to {plan.first - 1 + len(plan.steps)} steps; the budget is {self.budgets.max_steps}"
            )
        plan.check(self.tools)
        results: dict[int, Any] = {}
        approvals: dict[int, str] = {}
        if not resume:
            self.journal.set_plan(run_id, plan.to_json(), [(step.id, step.tool) for step in plan.steps])
        for record in self.journal.run(run_id).steps:
            if record.status == "done":
                results[record.step] = record.result
            if record.approval:
                approvals[record.step] = record.approval
        yield PlanReady(run_id, plan.to_json())
        for step_id in sorted(s for s in results if s >= plan.first):  # replayed, not re-run
            step = plan.step(step_id)
            yield StepFinished(run_id, step.id, step.tool, "done", result=results[step_id], replayed=True)

        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        runner = asyncio.ensure_future(self._drive(run_id, plan, gate, results, approvals, queue))
        try:
            while (event := await queue.get()) is not None:
                yield event
            await runner  # re-raises what stopped the run, if anything
        finally:
            if not runner.done():  # the consumer went away (cancelled run): stop the steps too
                runner.cancel()
                try:
                    await runner
                except (asyncio.CancelledError, Exception):
                    pass

    async def _drive(
        self,
        run_id: str,
        plan: Plan,
        gate: ApprovalGate,
        results: dict[int, Any],
        approvals: dict[int, str],
        queue: asyncio.Queue[Event | None],
    ) -> None:
        deadline = time.monotonic() + self.budgets.wall_time
        # A step of an earlier plan that did not succeed blocks whatever here refers to it.
        failed: dict[int, str] = {
            dep: "an earlier plan's step that did not succeed"
            for step in plan.steps for dep in step.dependencies if dep < plan.first and dep not in results
        }
        running: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                blocked = {s.id for s in plan.steps if s.dependencies & failed.keys()}
                for step_id in sorted(blocked - failed.keys()):
                    failed[step_id] = "skipped"
                    self.journal.set_step(run_id, step_id, "skipped", error="an earlier step it needs did not succeed")
                    await queue.put(StepFinished(run_id, step_id, plan.step(step_id).tool, "skipped"))
                ready = [
                    s for s in plan.steps
                    if s.id not in results and s.id not in failed and s.id not in running and s.dependencies <= results.keys()
                ]
                for step in ready:
                    if self.budgets.max_parallel and len(running) >= self.budgets.max_parallel:
                        break
                    spec = self.tools[step.tool]
                    if spec.needs_approval and approvals.get(step.id) != "approved":
                        if running:  # pause the run: let what runs finish, start nothing else
                            break
                        decision = await self._ask(run_id, step, results, gate, queue, deadline)
                        approvals[step.id] = decision
                        if decision == "rejected":
                            failed[step.id] = "rejected"
                            break
                    running[step.id] = asyncio.ensure_future(self._run_step(run_id, step, results, approvals, failed, queue))
                if not running:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AgentdError(f"run {run_id} exceeded its {self.budgets.wall_time:g} s budget")
                done, _ = await asyncio.wait(running.values(), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                for step_id in [sid for sid, task in running.items() if task in done]:
                    running.pop(step_id).result()
            failed = {step: why for step, why in failed.items() if step >= plan.first}
            status = "done" if not failed else ("cancelled" if "rejected" in failed.values() else "failed")
            error = None if status == "done" else _failure_summary(plan, failed)
            self.journal.set_run_status(run_id, status, error=error)
            await queue.put(RunFinished(run_id, status, results=dict(results), error=error))
        except asyncio.CancelledError:
            # Not journaled here: the caller knows whether the user ended the run (cancelled)
            # or the daemon is stopping (the run stays unfinished, to be resumed).
            raise
        except Exception as exc:
            self.journal.set_run_status(run_id, "failed", error=str(exc))
            await queue.put(RunFinished(run_id, "failed", results=dict(results), error=str(exc)))
            raise
        finally:
            for task in running.values():
                task.cancel()
            await queue.put(None)

    async def _ask(
        self, run_id: str, step: Step, results: dict[int, Any], gate: ApprovalGate, queue: asyncio.Queue[Event | None],
        deadline: float,
    ) -> str:
        arguments = step.resolve(results)
        self.journal.set_step(run_id, step.id, "waiting_approval", arguments=arguments)
        self.journal.set_run_status(run_id, "waiting_approval")
        decision = gate.expect(run_id, step.id)
        await queue.put(ApprovalNeeded(run_id, step.id, step.tool, arguments, self.tools[step.tool].description))
        try:
            approved = await asyncio.wait_for(decision, timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise AgentdError(f"run {run_id}: step {step.id} waited for approval past the run's budget") from None
        verdict = "approved" if approved else "rejected"
        self.journal.set_approval(run_id, step.id, verdict)
        self.journal.set_run_status(run_id, "running")
        if not approved:
            self.journal.set_step(run_id, step.id, "rejected", error="rejected by the user")
            self.journal.audit(run_id, step.id, step.tool, arguments, "rejected", "not run")
            await queue.put(StepFinished(run_id, step.id, step.tool, "rejected", error="rejected by the user"))
        return verdict

    async def _run_step(
        self, run_id: str, step: Step, results: dict[int, Any], approvals: dict[int, str], failed: dict[int, str],
        queue: asyncio.Queue[Event | None],
    ) -> None:
        spec = self.tools[step.tool]
        approval = approvals.get(step.id, "not_required")
        try:
            arguments = validate_arguments(spec, step.resolve(results))
        except InvalidArgument as exc:
            failed[step.id] = str(exc)
            self.journal.set_step(run_id, step.id, "failed", error=str(exc))
            await queue.put(StepFinished(run_id, step.id, step.tool, "failed", error=str(exc)))
            return
        self.journal.set_step(run_id, step.id, "running", arguments=arguments, attempt=True)
        await queue.put(StepStarted(run_id, step.id, step.tool, arguments))
        credential = self.credentials.for_tool(spec.name, spec.credential_scopes) if self.credentials is not None else None
        context = ToolContext(run_id, step.id, self.data_dir, credential, user=self.user, memory=self.memory)
        try:
            result = await asyncio.wait_for(asyncio.to_thread(spec.call, arguments, context), self.budgets.step_timeout)
            _check_result(spec, result)
        except asyncio.TimeoutError:
            error = f"{step.tool} took longer than {self.budgets.step_timeout:g} s"
        except AgentdError as exc:
            error = str(exc)
        except Exception as exc:  # a tool's own bug: the step fails, the daemon does not
            error = f"{step.tool} failed: {type(exc).__name__}: {exc}"
        else:
            results[step.id] = result
            self.journal.set_step(run_id, step.id, "done", result=result)
            self.journal.audit(run_id, step.id, step.tool, arguments, approval, "done")
            await queue.put(StepFinished(run_id, step.id, step.tool, "done", result=result))
            return
        failed[step.id] = error
        self.journal.set_step(run_id, step.id, "failed", error=error)
        self.journal.audit(run_id, step.id, step.tool, arguments, approval, "failed")
        await queue.put(StepFinished(run_id, step.id, step.tool, "failed", error=error))


def _check_result(spec: ToolSpec, result: Any) -> None:
    """A result that breaks the tool's own schema is the tool's failure, not data to pass on."""
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(spec.result).iter_errors(result))
    if errors:
        raise AgentdError(f"{spec.name} returned a result that does not match its schema: {errors[0].message}")


def _failure_summary(plan: Plan, failed: dict[int, str]) -> str:
    return "; ".join(f"step {step} ({plan.step(step).tool}): {why}" for step, why in sorted(failed.items()))
