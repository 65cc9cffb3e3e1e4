"""One replica of one served model: agentd's own engine inside a Ray Serve deployment.

Each model is its own deployment (``model-<name>``) with as many replicas as
configured; a replica loads the model into a one-model :class:`ModelTable`
(so the engine batches its requests continuously, as in ``agentd serve``) and
answers through the daemon's own :class:`InferenceServicer`, so validation,
limits and messages are the daemon's. The :class:`Ingress` calls replicas
through deployment handles and Ray routes between them.

Errors cross the Ray boundary as :class:`ReplicaError` (a status name and the
message), which pickles whatever the original exception was; the ingress turns
it back into the same gRPC status the local daemon gives.

Sessions: before a request that names a session the replica brings its copy
up to date from the :class:`~agentd.rayserve.sessions.SessionDirectory`, and
after it publishes the new state there, so the next turn may land on any
replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator

from agentd.errors import AgentdError
from agentd.rayserve.sessions import DIRECTORY_NAMESPACE
from agentd.v1 import inference_pb2 as pb
from agentd.v1 import models_pb2

log = logging.getLogger(__name__)

#: Seconds a replica waits for the engine to hand a finished request's session state back.
SESSION_HANDBACK_TIMEOUT = 30.0


class ReplicaError(Exception):
    """A request's failure as it crosses from a replica to the ingress: ``(code name, message)``."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return self.message


def as_replica_error(exc: BaseException) -> ReplicaError:
    """The status the local daemon's interceptor gives ``exc`` (its ``status_for``); INTERNAL for a bug."""
    from agentd.server.interceptor import status_for

    if isinstance(exc, ReplicaError):
        return exc
    code, message = status_for(exc)
    if code.name == "INTERNAL" and not isinstance(exc, AgentdError):
        log.exception("replica request failed with an unexpected error", exc_info=exc)
        message = f"internal error in a model replica ({type(exc).__name__}); details are in its log"
    return ReplicaError(code.name, message)


class NoDeadlineContext:
    """What the daemon's servicers ask of a gRPC context: only the time left (the proxy's timeout applies)."""

    def time_remaining(self) -> float | None:
        return None


class ModelReplica:
    """The deployment class; ``serve.deployment`` wraps it in :mod:`agentd.rayserve.app`."""

    def __init__(self, name: str, path: str, settings: dict[str, Any], directory: str | None):
        from agentd.server.catalog import ModelsServicer
        from agentd.server.inference import InferenceServicer
        from agentd.server.served import ModelSource, ModelTable
        from agentd.server.sessions import SessionSettings
        from agentd.rayserve.app import serving_settings

        self.name = name
        sessions = SessionSettings(**settings.pop("sessions", {}))
        self.table = ModelTable.load([ModelSource(name, Path(path))], serving_settings(settings, sessions))
        self.inference = InferenceServicer(self.table)
        self.catalog = ModelsServicer(self.table)
        self._directory_name = directory
        self._directory: Any = None
        #: Session id -> the directory version this replica's copy is (absent: none, or stale).
        self._versions: dict[str, int] = {}

    # -- Inference -----------------------------------------------------------------------
    async def Generate(self, request: pb.GenerateRequest) -> AsyncIterator[pb.GenerateResponse]:
        try:
            if request.session_id:
                await self._check_in_session(request.session_id)
            try:
                async for response in self.inference.Generate(request, NoDeadlineContext()):
                    yield response
            finally:
                if request.session_id:
                    await self._publish_session(request.session_id)
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                raise
            raise as_replica_error(exc) from None

    async def Embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
        return await self._unary(self.inference.Embed, request)

    async def Classify(self, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        return await self._unary(self.inference.Classify, request)

    async def Tokenize(self, request: pb.TokenizeRequest) -> pb.TokenizeResponse:
        return await self._unary(self.inference.Tokenize, request)

    async def Detokenize(self, request: pb.DetokenizeRequest) -> pb.DetokenizeResponse:
        return await self._unary(self.inference.Detokenize, request)

    async def SaveSession(self, request: pb.SaveSessionRequest) -> pb.SaveSessionResponse:
        async def save(request: pb.SaveSessionRequest, context: Any) -> pb.SaveSessionResponse:
            await self._check_in_session(request.session_id, require=True)
            try:
                return await self.inference.SaveSession(request, context)
            finally:
                await self._release_session(request.session_id)

        return await self._unary(save, request)

    async def RestoreSession(self, request: pb.RestoreSessionRequest) -> pb.SessionInfo:
        async def restore(request: pb.RestoreSessionRequest, context: Any) -> pb.SessionInfo:
            await self._claim(request.session_id)
            try:
                info = await self.inference.RestoreSession(request, context)
            except BaseException:
                await self._release_session(request.session_id)
                raise
            await self._publish_session(request.session_id)
            return info

        return await self._unary(restore, request)

    # -- Models ----------------------------------------------------------------------------
    async def info(self) -> models_pb2.ModelInfo:
        """This replica's view of its model (``default`` is the ingress's to decide)."""
        return await self._unary(self.catalog.GetModelInfo, models_pb2.GetModelInfoRequest(name=self.name))

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, NoDeadlineContext())
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise as_replica_error(exc) from None

    # -- sessions across replicas ------------------------------------------------------------
    def _sessions_directory(self) -> Any:
        if self._directory is None and self._directory_name is not None:
            import ray

            self._directory = ray.get_actor(self._directory_name, namespace=DIRECTORY_NAMESPACE)
        return self._directory

    async def _claim(self, session_id: str) -> Any:
        """Claim the session cluster-wide (one request at a time, as on one daemon); its record or None."""
        from agentd.server.sessions import check_session_id

        check_session_id(session_id)
        directory = self._sessions_directory()
        if directory is None:
            return None
        record = await directory.claim.remote(session_id, self.name)
        if record.get("busy"):
            raise ReplicaError("RESOURCE_EXHAUSTED", f"session {session_id!r} is in use by another request; retry when it ends")
        if record.get("model") not in (None, self.name):
            await directory.release.remote(session_id)
            raise ReplicaError("INVALID_ARGUMENT", f"session_id: session {session_id!r} belongs to model {record['model']!r}")
        return record

    async def _check_in_session(self, session_id: str, *, require: bool = False) -> None:
        """Claim the session and make this replica's copy the directory's latest."""
        record = await self._claim(session_id)
        if record is None:
            return
        try:
            version = record.get("version")
            store = self.table.sessions
            if version is None:  # new, or deleted elsewhere: a local copy is stale
                if self._versions.pop(session_id, None) is not None:
                    store.delete(session_id)
                if require:
                    raise ReplicaError("NOT_FOUND", f"session {session_id!r} does not exist (or expired)")
                return
            local = next((s for s in store.list() if s.session_id == session_id), None)
            if self._versions.get(session_id) == version and local is not None and local.state is not None:
                return  # this replica served the last turn: its copy is the latest
            from agentd.server.sessions import decode_session

            data = await record["state"]  # from the object store, wherever it was put
            header, state = decode_session(data, f"session {session_id!r}")
            served = self.table.get(self.name)
            await store.restore(session_id, self.name, served.model.backend, state, header)
            self._versions[session_id] = version
        except BaseException:
            await self._release_session(session_id)
            raise

    async def _publish_session(self, session_id: str) -> None:
        """Hand the session's new state to the directory (through the object store) and release it."""
        directory = self._sessions_directory()
        if directory is None:
            return
        store = self.table.sessions
        published = False
        try:
            deadline = time.monotonic() + SESSION_HANDBACK_TIMEOUT
            while True:  # the engine gives the state back when the request ends, on its own thread
                session = next((s for s in store.list() if s.session_id == session_id), None)
                if session is None or not session.busy or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.005)
            if session is not None and session.state is not None and not session.busy:
                data, tokens = await store.export(session_id, self.table.get(self.name).model.backend)
                # The directory puts the bytes in the object store itself, so it owns them and
                # they outlive this replica (it may be killed next).
                version = await directory.publish.remote(session_id, self.name, data, tokens)
                self._versions[session_id] = version
                published = True
        finally:
            if not published:
                await directory.release.remote(session_id)

    async def _release_session(self, session_id: str) -> None:
        directory = self._sessions_directory()
        if directory is not None:
            await directory.release.remote(session_id)

    async def check_health(self) -> None:
        """Ray Serve's health probe: a replica whose model failed to load is unhealthy."""
        served = self.table.get(self.name)
        if served.status == "failed":
            raise RuntimeError(f"model {self.name} failed: {served.error}")
