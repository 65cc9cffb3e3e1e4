"""The application's ingress: every ``agentd.v1`` RPC, routed to the model deployments and the agent's.

Ray Serve's gRPC proxy calls the ingress method named like the RPC (one
application, so clients send no ``application`` metadata); the ingress picks
the model deployment from the request's ``model`` (the default of the right
kind when empty, as the daemon does) and calls it through its deployment
handle, so Ray routes between that model's replicas. Agent RPCs go to the
agent deployment (:mod:`agentd.rayserve.agent`).

Statuses are the local daemon's: a replica's :class:`ReplicaError` becomes its
code and message on the gRPC context. A replica that dies under a stream is
UNAVAILABLE ("retry"), and a Generate that dies before its first response is
retried once on another replica; Ray starts a replacement meanwhile.

What cannot work here, and says so: ``LoadModel`` / ``UnloadModel`` (the models
are deployments fixed by the application's config: redeploy to change them).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import grpc

from agentd.rayserve.replica import ReplicaError, as_replica_error
from agentd.rayserve.sessions import DIRECTORY_NAMESPACE
from agentd.v1 import agent_pb2, models_pb2
from agentd.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

#: How many times a Generate whose replica died before its first response is tried again.
RETRIES_BEFORE_FIRST_TOKEN = 1


def _died(exc: BaseException) -> bool:
    """Whether ``exc`` is a replica going away (killed, crashed, its node lost), not a request's error."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError

    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError, DeploymentUnavailableError))


def _fail(context: Any, exc: BaseException) -> ReplicaError:
    """Put ``exc``'s status on the proxy's context; the error to raise (or, for a unary RPC, swallow)."""
    if _died(exc):
        error = ReplicaError("UNAVAILABLE", f"the model replica serving this request went away ({type(exc).__name__}); retry")
    else:
        error = as_replica_error(exc.cause if hasattr(exc, "cause") and isinstance(exc.cause, ReplicaError) else exc)
    context.set_code(getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL))
    context.set_details(error.message)
    return error


class Ingress:
    """The deployment class; built in :mod:`agentd.rayserve.app` with a handle per model."""

    def __init__(self, models: dict[str, Any], order: list[str], directory: str | None, sessions_dir: str, agent: Any = None):
        self._handles = models  # name -> DeploymentHandle of model-<name>
        self._agent = agent  # DeploymentHandle of the agent deployment, or None
        self._order = order  # the configured order: the first of a kind is its default
        self._directory_name = directory
        self._sessions_dir = Path(sessions_dir)
        self._infos: dict[str, models_pb2.ModelInfo] = {}

    # -- Models -----------------------------------------------------------------------------
    async def ListModels(self, request: models_pb2.ListModelsRequest, grpc_context: Any) -> models_pb2.ListModelsResponse:
        try:
            return models_pb2.ListModelsResponse(models=[await self._info(name) for name in self._order])
        except BaseException as exc:
            _fail(grpc_context, exc)
            return models_pb2.ListModelsResponse()

    async def GetModelInfo(self, request: models_pb2.GetModelInfoRequest, grpc_context: Any) -> models_pb2.ModelInfo:
        try:
            return await self._info(self._known(request.name))
        except BaseException as exc:
            _fail(grpc_context, exc)
            return models_pb2.ModelInfo()

    async def LoadModel(self, request: models_pb2.LoadModelRequest, grpc_context: Any) -> models_pb2.ModelInfo:
        _fail(grpc_context, ReplicaError("FAILED_PRECONDITION", _FIXED_MODELS))
        return models_pb2.ModelInfo()

    async def UnloadModel(self, request: models_pb2.UnloadModelRequest, grpc_context: Any) -> models_pb2.UnloadModelResponse:
        _fail(grpc_context, ReplicaError("FAILED_PRECONDITION", _FIXED_MODELS))
        return models_pb2.UnloadModelResponse()

    # -- Inference: routed to a model ---------------------------------------------------------
    async def Generate(self, request: pb.GenerateRequest, grpc_context: Any) -> AsyncIterator[pb.GenerateResponse]:
        try:
            name = await self._route(request.model, "decoder")
        except BaseException as exc:
            raise _fail(grpc_context, exc) from None
        for attempt in range(RETRIES_BEFORE_FIRST_TOKEN + 1):
            sent = 0
            try:
                async for response in self._handles[name].Generate.options(stream=True).remote(request):
                    sent += 1
                    yield response
                return
            except BaseException as exc:
                if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                    raise
                if _died(exc) and sent == 0 and attempt < RETRIES_BEFORE_FIRST_TOKEN:
                    log.warning("a replica of %s went away before the first token; retrying on another", name)
                    continue
                raise _fail(grpc_context, exc) from None

    async def Embed(self, request: pb.EmbedRequest, grpc_context: Any) -> pb.EmbedResponse:
        return await self._unary("Embed", request, request.model, "encoder", grpc_context, pb.EmbedResponse)

    async def Classify(self, request: pb.ClassifyRequest, grpc_context: Any) -> pb.ClassifyResponse:
        return await self._unary("Classify", request, request.model, "classifier", grpc_context, pb.ClassifyResponse)

    async def Tokenize(self, request: pb.TokenizeRequest, grpc_context: Any) -> pb.TokenizeResponse:
        return await self._unary("Tokenize", request, request.model, None, grpc_context, pb.TokenizeResponse)

    async def Detokenize(self, request: pb.DetokenizeRequest, grpc_context: Any) -> pb.DetokenizeResponse:
        return await self._unary("Detokenize", request, request.model, None, grpc_context, pb.DetokenizeResponse)

    # -- sessions: the directory knows which model holds one ------------------------------------
    async def SaveSession(self, request: pb.SaveSessionRequest, grpc_context: Any) -> pb.SaveSessionResponse:
        try:
            model = await self._session_model(request.session_id)
        except BaseException as exc:
            _fail(grpc_context, exc)
            return pb.SaveSessionResponse()
        return await self._unary("SaveSession", request, model, "decoder", grpc_context, pb.SaveSessionResponse)

    async def RestoreSession(self, request: pb.RestoreSessionRequest, grpc_context: Any) -> pb.SessionInfo:
        try:
            header, _ = await asyncio.to_thread(self._saved_sessions().read_header, request.session_id)
            model = str(header.get("model", ""))
        except BaseException as exc:
            _fail(grpc_context, exc)
            return pb.SessionInfo()
        return await self._unary("RestoreSession", request, model, "decoder", grpc_context, pb.SessionInfo)

    async def ListSessions(self, request: pb.ListSessionsRequest, grpc_context: Any) -> pb.ListSessionsResponse:
        try:
            listed = await self._directory().sessions.remote()
        except BaseException as exc:
            _fail(grpc_context, exc)
            return pb.ListSessionsResponse()
        listed = [s for s in listed if not request.model or s["model"] == request.model]
        return pb.ListSessionsResponse(sessions=[
            pb.SessionInfo(session_id=s["session_id"], model=s["model"], tokens=s["tokens"], state_bytes=s["size"], idle_seconds=s["idle"])
            for s in sorted(listed, key=lambda s: -s["idle"])
        ])

    async def DeleteSession(self, request: pb.DeleteSessionRequest, grpc_context: Any) -> pb.DeleteSessionResponse:
        try:
            path = self._saved_sessions().file_path(request.session_id)  # checks the id
            deleted = await self._directory().delete.remote(request.session_id)
            deleted_saved = False
            if request.delete_saved:
                deleted_saved = path.is_file()
                path.unlink(missing_ok=True)
            return pb.DeleteSessionResponse(deleted=deleted, deleted_saved=deleted_saved)
        except BaseException as exc:
            _fail(grpc_context, exc)
            return pb.DeleteSessionResponse()

    # -- Agent: one deployment, its own journal -----------------------------------------------------
    async def RunTask(self, request: agent_pb2.RunTaskRequest, grpc_context: Any) -> AsyncIterator[agent_pb2.RunEvent]:
        try:
            async for event in self._agent_handle().RunTask.options(stream=True).remote(request):
                yield event
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
                raise
            raise _fail(grpc_context, exc) from None

    async def Approve(self, request: agent_pb2.ApproveRequest, grpc_context: Any) -> agent_pb2.ApproveResponse:
        return await self._agent_call("Approve", request, grpc_context, agent_pb2.ApproveResponse)

    async def CancelRun(self, request: agent_pb2.CancelRunRequest, grpc_context: Any) -> agent_pb2.CancelRunResponse:
        return await self._agent_call("CancelRun", request, grpc_context, agent_pb2.CancelRunResponse)

    async def ListRuns(self, request: agent_pb2.ListRunsRequest, grpc_context: Any) -> agent_pb2.ListRunsResponse:
        return await self._agent_call("ListRuns", request, grpc_context, agent_pb2.ListRunsResponse)

    async def GetRun(self, request: agent_pb2.GetRunRequest, grpc_context: Any) -> agent_pb2.RunInfo:
        return await self._agent_call("GetRun", request, grpc_context, agent_pb2.RunInfo)

    async def ListMemories(self, request: agent_pb2.ListMemoriesRequest, grpc_context: Any) -> agent_pb2.ListMemoriesResponse:
        return await self._agent_call("ListMemories", request, grpc_context, agent_pb2.ListMemoriesResponse)

    async def Forget(self, request: agent_pb2.ForgetRequest, grpc_context: Any) -> agent_pb2.ForgetResponse:
        return await self._agent_call("Forget", request, grpc_context, agent_pb2.ForgetResponse)

    def _agent_handle(self) -> Any:
        if self._agent is None:
            raise ReplicaError("FAILED_PRECONDITION", "this application serves no Agent (deployed without one)")
        return self._agent

    async def _agent_call(self, method: str, request: Any, context: Any, empty: type) -> Any:
        try:
            return await self._agent_handle().call.remote(method, request)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            _fail(context, exc)
            return empty()

    # -- plumbing --------------------------------------------------------------------------------
    async def _unary(self, method: str, request: Any, model: str, kind: str | None, context: Any, empty: type) -> Any:
        try:
            name = await self._route(model, kind)
            return await getattr(self._handles[name], method).remote(request)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            _fail(context, exc)
            return empty()

    async def _info(self, name: str) -> models_pb2.ModelInfo:
        """A replica's current view of its model (state bytes and status change), defaults decided here."""
        info = await self._handles[name].info.remote()
        self._infos[name] = info  # what a model is does not change: kinds for routing come from here
        info.default = name == await self._default(self._kind(info))
        return info

    @staticmethod
    def _kind(info: models_pb2.ModelInfo) -> str:
        if info.labels:
            return "classifier"
        return "decoder" if info.kind == models_pb2.MODEL_KIND_DECODER else "encoder"

    async def _default(self, kind: str) -> str | None:
        for name in self._order:
            if name not in self._infos:
                self._infos[name] = await self._handles[name].info.remote()
            if self._kind(self._infos[name]) == kind or (kind == "encoder" and self._kind(self._infos[name]) == "classifier"):
                return name
        return None

    def _known(self, name: str) -> str:
        if name not in self._handles:
            served = ", ".join(self._order) or "none"
            raise ReplicaError("NOT_FOUND", f"no model named {name!r} is served (served: {served})")
        return name

    async def _route(self, model: str, kind: str | None) -> str:
        """The deployment a request goes to: its ``model``, else the default of ``kind``."""
        if model:
            return self._known(model)
        name = await self._default(kind or "decoder")
        if name is None:
            raise ReplicaError("NOT_FOUND", f"model: no {kind or 'decoder'} model is served, so none is the default; name one")
        return name

    async def _session_model(self, session_id: str) -> str:
        from agentd.server.sessions import check_session_id

        check_session_id(session_id)
        for entry in await self._directory().sessions.remote():
            if entry["session_id"] == session_id:
                return entry["model"]
        raise ReplicaError("NOT_FOUND", f"session {session_id!r} does not exist (or expired)")

    def _saved_sessions(self) -> Any:
        """The store of saved ``.session`` files (only its file operations are used here)."""
        from agentd.server.sessions import SessionSettings, SessionStore

        return SessionStore(SessionSettings(directory=self._sessions_dir))

    def _directory(self) -> Any:
        import ray

        return ray.get_actor(self._directory_name, namespace=DIRECTORY_NAMESPACE)


_FIXED_MODELS = (
    "behind Ray Serve the models are deployments fixed by the application: "
    "change `agentd serve --ray`'s --model list (or the RayService config) and redeploy"
)
