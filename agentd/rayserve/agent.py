"""The Agent service as its own Ray Serve deployment, calling the models through the same routing.

One replica (``agent``): its journal, memories and credentials are SQLite and
files under ``home`` on that replica's node, and a run is one asyncio task in
it, so runs stay durable and resumable as on the daemon (a replica that
restarts resumes the unfinished runs its journal holds). Its planner reaches
the models through Ray Serve's gRPC proxy on its own node, like any client,
so each step's generation is routed to a model replica by Ray.

The RPCs are the daemon's own :class:`~agentd.server.agent.AgentServicer`;
errors cross to the ingress as :class:`~agentd.rayserve.replica.ReplicaError`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, AsyncIterator

from agentd.rayserve.replica import NoDeadlineContext, as_replica_error
from agentd.v1 import agent_pb2 as pb

log = logging.getLogger(__name__)


class AgentReplica:
    """The deployment class (one replica); built in :mod:`agentd.rayserve.app`."""

    async def __init__(self, home: str, models_target: str, planner: str | None, plan_cache: bool):
        from agentd.agent.credentials import CredentialStore
        from agentd.agent.runs import RunManager
        from agentd.server.agent import AgentServicer

        root = Path(home)
        self.runs = RunManager(
            root / "journal.sqlite", root / "tools", models_target, credentials=CredentialStore(root / "credentials"),
            planner=planner, plan_cache=plan_cache,
        )
        self.servicer = AgentServicer(self.runs)
        for run_id in self.runs.resume_unfinished():  # a restarted replica carries on where runs stopped
            log.info("resumed run %s", run_id)

    async def RunTask(self, request: pb.RunTaskRequest) -> AsyncIterator[pb.RunEvent]:
        try:
            async for event in self.servicer.RunTask(request, NoDeadlineContext()):
                yield event
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                raise
            raise as_replica_error(exc) from None

    async def call(self, method: str, request: Any) -> Any:
        """A unary Agent RPC by name (Approve, CancelRun, ListRuns, GetRun, ListMemories, Forget)."""
        try:
            return await getattr(self.servicer, method)(request, NoDeadlineContext())
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise as_replica_error(exc) from None
