"""The Python SDK for the agentd daemon: :class:`Client` (blocking); :class:`agentd.aio_client.AsyncClient` (asyncio).

    from agentd.client import Client, Credentials, SamplingOptions

    with Client() as client:                       # $AGENTD_SOCKET or the default socket
        for chunk in client.generate("Once upon", sampling=SamplingOptions(max_tokens=20)):
            print(chunk.text, end="")
        vectors = client.embed(["hello", "world"])  # (2, dim) float32
        labelled = client.classify(["send Maria 45"])  # per-token labels (a token classifier)
        for token in labelled.results[0]:
            print(token.start, token.end, token.label, token.score)

    # A daemon on another machine: TLS (CA file) and a bearer token.
    remote = Client("agentd.lan:7070", credentials=Credentials(ca_file="ca.pem", token_file="token"))

    # A conversation kept in a session: each turn resends the whole history, but
    # the daemon prefills only what the session does not hold yet.
    history = [{"role": "user", "content": "Hi"}]
    stream = client.chat(history, session_id="chat-1")
    reply = stream.text()
    stream.session_outcome, stream.usage.cached_prompt_tokens   # "created", 0
    client.save_session("chat-1")                  # to the daemon's disk; restore_session reads it back

    client.load_model("smollm", "/srv/models/smollm2-135m", wait=True)

    # Grammar-constrained output: a JSON schema, a regex or a Lark grammar.
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    reply = client.chat(history, constraint=Constraint.json_schema(schema)).text()   # valid JSON

Every gRPC failure is raised as the matching :mod:`agentd.errors` class with
the daemon's one-line message, so callers (and the CLI) never see a raw
``grpc.RpcError``. The request builders and error mapping here are shared
with the asyncio client.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import grpc
import numpy as np

from agentd.config import default_socket_path, unix_target
from agentd.constraint import Constraint
from agentd.errors import (
    AgentdError,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from agentd.v1 import agent_pb2, agent_pb2_grpc, inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc

Kind = Literal["decoder", "encoder"]
KIND_VALUES: Mapping[Kind, int] = {"decoder": models_pb2.MODEL_KIND_DECODER, "encoder": models_pb2.MODEL_KIND_ENCODER}
#: Channel options: never route a loopback daemon through an HTTP proxy from the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
REQUEST_ID_METADATA = "x-request-id"
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling overrides for Generate; None leaves the model's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def apply(self, request: inference_pb2.GenerateRequest) -> None:
        """Set the given fields on ``request`` (unset ones stay unset on the wire)."""
        for name in ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed"):
            value = getattr(self, name)
            if value is not None:
                setattr(request, name, value)
        request.stop.extend(self.stop)


@dataclass(frozen=True)
class Credentials:
    """How to reach a daemon that is not on the local Unix socket.

    TLS is used when ``tls`` is set or any certificate file is given (no
    ``ca_file``: the system's trusted roots). ``cert_file`` + ``key_file`` are
    the client certificate for mutual TLS. The token (``token`` or read from
    ``token_file``) is sent as ``authorization: Bearer <token>`` on every call.
    """

    ca_file: str | PathLike[str] | None = None
    cert_file: str | PathLike[str] | None = None
    key_file: str | PathLike[str] | None = None
    token: str | None = None
    token_file: str | PathLike[str] | None = None
    tls: bool = False
    #: Expected name in the server certificate when it differs from the target's host.
    server_name: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for a plaintext channel."""
        if not self.uses_tls:
            return None
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidArgument("cert_file", "a client certificate needs both cert_file and key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=_read("ca_file", self.ca_file),
            private_key=_read("key_file", self.key_file),
            certificate_chain=_read("cert_file", self.cert_file),
        )

    def metadata(self) -> Metadata:
        """Per-call metadata: the bearer token, if any."""
        token = self.token
        if token is None and self.token_file is not None:
            token = (_read("token_file", self.token_file) or b"").decode("utf-8").strip()
        if token is None:
            return ()
        if not token:
            raise InvalidArgument("token_file", f"{self.token_file} is empty")
        return (("authorization", f"Bearer {token}"),)

    def channel_options(self) -> list[tuple[str, object]]:
        options: list[tuple[str, object]] = list(CHANNEL_OPTIONS)
        if self.server_name is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def open_channel(self, target: str, transport: Any = grpc) -> Any:
        """A channel to ``target`` with these credentials; ``transport`` is ``grpc`` or ``grpc.aio``."""
        channel_credentials = self.channel_credentials()
        if channel_credentials is None:
            return transport.insecure_channel(target, options=self.channel_options())
        return transport.secure_channel(target, channel_credentials, options=self.channel_options())


def _read(field: str, path: str | PathLike[str] | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidArgument(field, f"{path}: cannot read ({exc.strerror})") from None


def default_target(target: str | None) -> str:
    """``target``, or the default Unix socket's."""
    return target or unix_target(default_socket_path())


def session_outcome_name(chunk: inference_pb2.GenerateResponse) -> str | None:
    """``"created"``, ``"continued"``, ``"restarted"``, or None (no session, or not the last chunk)."""
    if chunk.session_outcome == inference_pb2.SESSION_OUTCOME_UNSPECIFIED:
        return None
    return inference_pb2.SessionOutcome.Name(chunk.session_outcome).removeprefix("SESSION_OUTCOME_").lower()


def finish_reason_name(chunk: inference_pb2.GenerateResponse) -> str | None:
    """``"stop"``, ``"length"``, ``"cancelled"``, or None for a chunk that is not the last."""
    if chunk.finish_reason == inference_pb2.FINISH_REASON_UNSPECIFIED:
        return None
    return inference_pb2.FinishReason.Name(chunk.finish_reason).removeprefix("FINISH_REASON_").lower()


def request_id_of(trailing: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The daemon's request id from a call's trailing metadata."""
    for key, value in trailing or ():
        if key == REQUEST_ID_METADATA:
            return value.decode() if isinstance(value, bytes) else value
    return None


# -- request builders, shared with the asyncio client --------------------------------------------
def apply_constraint(request: inference_pb2.GenerateRequest, constraint: Constraint | None) -> None:
    """Set the request's json_schema / regex / lark_grammar field from ``constraint``."""
    if constraint is None:
        return
    if not isinstance(constraint, Constraint):
        raise InvalidArgument("constraint", f"expected an agentd.constraint.Constraint, got {type(constraint).__name__}")
    constraint.validate()
    setattr(request, constraint.kind, constraint.text)


def prompt_request(
    prompt: str,
    model: str | None,
    sampling: SamplingOptions,
    session_id: str | None = None,
    constraint: Constraint | None = None,
) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(model=model or "", prompt=prompt, session_id=session_id or "")
    sampling.apply(request)
    apply_constraint(request, constraint)
    return request


def chat_request(
    messages: Sequence[Mapping[str, str]],
    model: str | None,
    sampling: SamplingOptions,
    session_id: str | None = None,
    constraint: Constraint | None = None,
) -> inference_pb2.GenerateRequest:
    turns = [inference_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    request = inference_pb2.GenerateRequest(
        model=model or "", messages=inference_pb2.ChatMessages(messages=turns), session_id=session_id or ""
    )
    sampling.apply(request)
    apply_constraint(request, constraint)
    return request


def ids_request(
    token_ids: Sequence[int],
    model: str | None,
    sampling: SamplingOptions,
    session_id: str | None = None,
    constraint: Constraint | None = None,
) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(
        model=model or "", prompt_token_ids=inference_pb2.TokenIds(ids=list(token_ids)), session_id=session_id or ""
    )
    sampling.apply(request)
    apply_constraint(request, constraint)
    return request


def load_model_request(
    name: str, path: str | PathLike[str], description: str | None, wait: bool, quant: str | None = None
) -> models_pb2.LoadModelRequest:
    request = models_pb2.LoadModelRequest(name=name, path=str(path), wait=wait)
    if description is not None:
        request.description = description
    if quant is not None:
        request.quant = quant
    return request


def embeddings(response: inference_pb2.EmbedResponse) -> np.ndarray:
    vectors = np.array([e.values for e in response.embeddings], dtype=np.float32)
    return vectors.reshape(len(response.embeddings), response.dim)  # (N, dim) even when N == 0


@dataclass(frozen=True)
class LabelledToken:
    """One token of a classified text (special tokens are left out)."""

    #: ``text[start:end]`` is the token (Python ``str`` indices, code points).
    start: int
    end: int
    #: The most likely label, its softmax probability and the logits over every label.
    label: str
    score: float
    logits: np.ndarray


@dataclass(frozen=True)
class Classification:
    """What Classify returned: the model's labels and, per text, its labelled tokens."""

    labels: tuple[str, ...]
    results: list[list[LabelledToken]]


def classification(response: inference_pb2.ClassifyResponse) -> Classification:
    labels = tuple(response.labels)
    results = [
        [
            LabelledToken(t.start, t.end, labels[t.label], t.score, np.array(t.logits, dtype=np.float32))
            for t in result.tokens
        ]
        for result in response.results
    ]
    return Classification(labels, results)


def pick_default(models: Sequence[models_pb2.ModelInfo], kind: Kind | None, target: str) -> str:
    """The daemon's default model of ``kind`` (the first served one when None).

    Requests that name no model go to the same one on the daemon's side; this
    is for showing which it is.
    """
    for info in models:
        if kind is None or (info.kind == KIND_VALUES[kind] and info.default):
            return info.name
    what = f"{kind} model" if kind else "model"
    raise NotFound(f"the daemon at {target} serves no {what}")


class GenerationStream:
    """Iterate for :class:`GenerateResponse` chunks; ``cancel()`` stops the daemon's generation.

    After the stream ends, ``finish_reason`` (``"stop"``, ``"length"``,
    ``"cancelled"``), ``usage`` (prompt, completion and ``cached_prompt_tokens``:
    prompt tokens whose state came from the session or the prefix cache),
    ``session_outcome`` (``"created"``, ``"continued"``, ``"restarted"``, or
    None without a session) and ``request_id`` (the daemon's id for the call,
    as in its log) are set.
    """

    def __init__(self, call: grpc.Call, target: str):
        self._call = call
        self._target = target
        self._cancelled = False
        self.finish_reason: str | None = None
        self.usage: inference_pb2.Usage | None = None
        self.session_outcome: str | None = None

    def __iter__(self) -> Iterator[inference_pb2.GenerateResponse]:
        try:
            for chunk in self._call:
                reason = finish_reason_name(chunk)
                if reason is not None:
                    self.finish_reason = reason
                    self.usage = chunk.usage
                    self.session_outcome = session_outcome_name(chunk)
                yield chunk
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                self.finish_reason = "cancelled"
                return
            raise error_from_rpc(exc, self._target) from None

    @property
    def request_id(self) -> str | None:
        """The daemon's request id (waits for the call to end)."""
        return request_id_of(self._call.trailing_metadata())

    def text(self) -> str:
        """Consume the stream and return the whole generated text."""
        return "".join(chunk.text for chunk in self)

    def cancel(self) -> None:
        """Cancel the call; the daemon stops generating at its next token."""
        self._cancelled = True
        self._call.cancel()


class Client:
    """A blocking connection to one daemon (Unix socket by default, or ``host:port``).

    :param target: ``unix:///path`` or ``host:port``; None dials the default socket.
    :param credentials: TLS and token for a TCP daemon (see :class:`Credentials`).
    :param timeout: deadline in seconds for unary calls (None: no deadline).
    """

    def __init__(self, target: str | None = None, *, credentials: Credentials = Credentials(), timeout: float | None = None):
        self.target = default_target(target)
        self.timeout = timeout
        self._metadata = credentials.metadata()
        self._channel = credentials.open_channel(self.target, grpc)
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._models = models_pb2_grpc.ModelsStub(self._channel)
        self._agent = agent_pb2_grpc.AgentStub(self._channel)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- agent -----------------------------------------------------------------
    def run_task(
        self, request: str = "", *, run_id: str | None = None, model: str | None = None, auto_approve: bool = False,
        user: str = "", no_plan_cache: bool = False,
    ) -> Iterator[agent_pb2.RunEvent]:
        """Start a run of ``request`` for ``user`` (or re-attach to ``run_id``) and iterate over its events."""
        message = agent_pb2.RunTaskRequest(
            request=request, run_id=run_id or "", auto_approve=auto_approve, user=user, no_plan_cache=no_plan_cache
        )
        if model is not None:
            message.model = model
        call = self._agent.RunTask(message, metadata=self._metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from None
        finally:
            call.cancel()  # a consumer that stops early stops watching (the run itself goes on)

    def approve(self, run_id: str, step: int, approved: bool = True) -> None:
        """Approve (or reject) a step that is waiting for approval."""
        self._unary(self._agent.Approve, agent_pb2.ApproveRequest(run_id=run_id, step=step, approved=approved))

    def cancel_run(self, run_id: str) -> bool:
        """Stop a run; False if it had already ended."""
        return self._unary(self._agent.CancelRun, agent_pb2.CancelRunRequest(run_id=run_id)).cancelled

    def list_runs(self) -> list[agent_pb2.RunInfo]:
        return list(self._unary(self._agent.ListRuns, agent_pb2.ListRunsRequest()).runs)

    def get_run(self, run_id: str) -> agent_pb2.RunInfo:
        return self._unary(self._agent.GetRun, agent_pb2.GetRunRequest(run_id=run_id))

    # -- agent memory ------------------------------------------------------------
    def list_memories(self, user: str = "", kind: str = "") -> list[agent_pb2.Memory]:
        """What the agent remembers about ``user`` ("": the default user), newest first; ``kind`` filters."""
        return list(self._unary(self._agent.ListMemories, agent_pb2.ListMemoriesRequest(user=user, kind=kind)).memories)

    def forget(self, user: str = "", *, id: str = "", kind: str = "", all: bool = False) -> int:
        """Delete one of ``user``'s memories, every one of a kind, or all; returns how many."""
        request = agent_pb2.ForgetRequest(user=user, id=id, kind=kind, all=all)
        return self._unary(self._agent.Forget, request).forgotten

    # -- models ----------------------------------------------------------------
    def list_models(self) -> list[models_pb2.ModelInfo]:
        """Every served model, in serving order."""
        response = self._unary(self._models.ListModels, models_pb2.ListModelsRequest())
        return list(response.models)

    def model_info(self, name: str) -> models_pb2.ModelInfo:
        """One served model; NotFound if the daemon does not serve ``name``."""
        return self._unary(self._models.GetModelInfo, models_pb2.GetModelInfoRequest(name=name))

    def default_model(self, kind: Kind | None = None) -> str:
        """The first served model of ``kind`` (any kind when None): the daemon's default."""
        return pick_default(self.list_models(), kind, self.target)

    def load_model(
        self,
        name: str,
        path: str | PathLike[str],
        *,
        description: str | None = None,
        wait: bool = False,
        quant: str | None = None,
    ) -> models_pb2.ModelInfo:
        """Serve the model at ``path`` (a directory or file) (on the daemon's machine) as ``name``.

        Returns at once with status LOADING unless ``wait``, then once it is
        READY or FAILED (``info.error`` says why). ``quant`` (``auto``, ``fp32``,
        ``int8``, ``int4``) is the encoding to compute with; None: the daemon's setting.
        """
        return self._unary(self._models.LoadModel, load_model_request(name, path, description, wait, quant))

    def unload_model(self, name: str) -> None:
        """Stop serving ``name`` and free its memory and sessions."""
        self._unary(self._models.UnloadModel, models_pb2.UnloadModelRequest(name=name))

    # -- inference ---------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        sampling: SamplingOptions = SamplingOptions(),
        session_id: str | None = None,
        constraint: Constraint | None = None,
    ) -> GenerationStream:
        """Stream a continuation of ``prompt``; ``session_id`` keeps the model state for the next call.

        ``constraint`` (:class:`~agentd.constraint.Constraint`: a JSON schema, regex or
        Lark grammar) makes the output conform to it; an invalid one raises
        InvalidArgument naming the field when the stream is read.
        """
        return self._stream(prompt_request(prompt, model or "", sampling, session_id, constraint))

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str | None = None,
        sampling: SamplingOptions = SamplingOptions(),
        session_id: str | None = None,
        constraint: Constraint | None = None,
    ) -> GenerationStream:
        """Stream the assistant's reply to ``messages`` (``{"role", "content"}`` dicts).

        With ``session_id`` send the whole conversation every turn: the daemon
        prefills only what its session does not hold yet.
        """
        return self._stream(chat_request(messages, model or "", sampling, session_id, constraint))

    def generate_ids(
        self,
        token_ids: Sequence[int],
        *,
        model: str | None = None,
        sampling: SamplingOptions = SamplingOptions(),
        session_id: str | None = None,
        constraint: Constraint | None = None,
    ) -> GenerationStream:
        """Stream a continuation of pre-tokenized ``token_ids``."""
        return self._stream(ids_request(token_ids, model or "", sampling, session_id, constraint))

    def embed(self, texts: Sequence[str], *, model: str | None = None) -> np.ndarray:
        """L2-normalised embeddings, float32 of shape ``(len(texts), dim)``."""
        request = inference_pb2.EmbedRequest(model=model or "", texts=list(texts))
        return embeddings(self._unary(self._inference.Embed, request))

    def classify(self, texts: Sequence[str], *, model: str | None = None) -> Classification:
        """Labels of every token of each text (a token classifier; None: the default one)."""
        request = inference_pb2.ClassifyRequest(model=model or "", texts=list(texts))
        return classification(self._unary(self._inference.Classify, request))

    def tokenize(
        self, text: str, *, model: str | None = None, add_special_tokens: bool = True
    ) -> inference_pb2.TokenizeResponse:
        """Token ids and their vocabulary strings."""
        request = inference_pb2.TokenizeRequest(
            model=model or "", text=text, add_special_tokens=add_special_tokens
        )
        return self._unary(self._inference.Tokenize, request)

    def detokenize(self, ids: Sequence[int], *, model: str | None = None, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``."""
        request = inference_pb2.DetokenizeRequest(
            model=model or "", ids=list(ids), skip_special_tokens=skip_special_tokens
        )
        return self._unary(self._inference.Detokenize, request).text

    # -- sessions --------------------------------------------------------------------
    def save_session(self, session_id: str) -> inference_pb2.SaveSessionResponse:
        """Write an idle session to the daemon's disk: the file's path, size and token count."""
        return self._unary(self._inference.SaveSession, inference_pb2.SaveSessionRequest(session_id=session_id))

    def restore_session(self, session_id: str) -> inference_pb2.SessionInfo:
        """Read a saved session back into the daemon's memory."""
        return self._unary(self._inference.RestoreSession, inference_pb2.RestoreSessionRequest(session_id=session_id))

    def list_sessions(self, model: str | None = None) -> list[inference_pb2.SessionInfo]:
        """Sessions held in memory (of ``model`` only, if given), least recently used first."""
        response = self._unary(self._inference.ListSessions, inference_pb2.ListSessionsRequest(model=model or ""))
        return list(response.sessions)

    def delete_session(self, session_id: str, *, delete_saved: bool = False) -> inference_pb2.DeleteSessionResponse:
        """Forget a session held in memory and, with ``delete_saved``, its saved file."""
        request = inference_pb2.DeleteSessionRequest(session_id=session_id, delete_saved=delete_saved)
        return self._unary(self._inference.DeleteSession, request)

    # -- health --------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN`` for ``service`` ("" is the daemon)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        response = self._unary(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # -- plumbing --------------------------------------------------------------------
    def _stream(self, request: inference_pb2.GenerateRequest) -> GenerationStream:
        return GenerationStream(self._inference.Generate(request, metadata=self._metadata), self.target)

    def _unary(self, method: grpc.UnaryUnaryMultiCallable, request: object):  # noqa: ANN202 - the stub's type
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from None


def _answered_by_agentd(exc: grpc.RpcError | grpc.aio.AioRpcError) -> bool:
    """Whether the status came from agentd (it tags every refusal with its request id), not the transport."""
    try:
        trailing = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a call that never reached a server has none
        return False
    return any(key == "x-request-id" for key, _ in trailing)


def error_from_rpc(exc: grpc.RpcError | grpc.aio.AioRpcError, target: str) -> AgentdError:
    """The agentd error for a failed call, carrying the daemon's one-line message."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or code.name  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered:
            return Unavailable(f"TLS handshake with agentd at {target} failed (check the CA, client certificate and host name): {details}")
        if _answered_by_agentd(exc):  # the daemon said so itself (a replica gone, a stopping daemon)
            return Unavailable(details)
        return Unavailable(f"cannot reach agentd at {target}: is `agentd serve` running?")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, sep, problem = details.partition(": ")
        return InvalidArgument(field, problem) if sep else InvalidArgument("request", details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code == grpc.StatusCode.OUT_OF_RANGE:
        return OutOfRange(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(details)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Cancelled(details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(f"agentd at {target} refused the call (UNAUTHENTICATED): {details}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"agentd at {target} refused the call (PERMISSION_DENIED): {details}")
    return AgentdError(f"daemon error ({code.name}): {details}")
