"""A small synchronous Python client for the agentd daemon.

    from agentd.client import Client, SamplingOptions

    with Client() as client:                       # $AGENTD_SOCKET or the default socket
        for chunk in client.generate("Once upon", sampling=SamplingOptions(max_tokens=20)):
            print(chunk.text, end="")
        vectors = client.embed(["hello", "world"])  # (2, dim) float32

Every gRPC failure is raised as the matching :mod:`agentd.errors` class with
the daemon's one-line message, so callers (and the CLI) never see a raw
``grpc.RpcError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Mapping, Sequence

import grpc
import numpy as np

from agentd.config import default_socket_path, unix_target
from agentd.errors import (
    AgentdError,
    Cancelled,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from agentd.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc

Kind = Literal["decoder", "encoder"]
KIND_VALUES: Mapping[Kind, int] = {"decoder": models_pb2.MODEL_KIND_DECODER, "encoder": models_pb2.MODEL_KIND_ENCODER}
#: Channel options: never route a loopback daemon through an HTTP proxy from the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


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


class GenerationStream:
    """Iterate for :class:`GenerateResponse` chunks; ``cancel()`` stops the daemon's generation.

    After the stream ends, ``finish_reason`` (``"stop"``, ``"length"``,
    ``"cancelled"``) and ``usage`` are set from the last message.
    """

    def __init__(self, call: grpc.Call, target: str):
        self._call = call
        self._target = target
        self._cancelled = False
        self.finish_reason: str | None = None
        self.usage: inference_pb2.Usage | None = None

    def __iter__(self) -> Iterator[inference_pb2.GenerateResponse]:
        try:
            for chunk in self._call:
                if chunk.finish_reason != inference_pb2.FINISH_REASON_UNSPECIFIED:
                    name = inference_pb2.FinishReason.Name(chunk.finish_reason)
                    self.finish_reason = name.removeprefix("FINISH_REASON_").lower()
                    self.usage = chunk.usage
                yield chunk
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                self.finish_reason = "cancelled"
                return
            raise error_from_rpc(exc, self._target) from None

    def text(self) -> str:
        """Consume the stream and return the whole generated text."""
        return "".join(chunk.text for chunk in self)

    def cancel(self) -> None:
        """Cancel the call; the daemon stops generating at its next token."""
        self._cancelled = True
        self._call.cancel()


class Client:
    """A connection to one daemon (Unix socket by default, or ``host:port``)."""

    def __init__(self, target: str | None = None, *, timeout: float | None = None):
        self.target = target or unix_target(default_socket_path())
        #: Deadline in seconds for unary calls (None: no deadline).
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._models = models_pb2_grpc.ModelsStub(self._channel)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

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
        for info in self.list_models():
            if kind is None or info.kind == KIND_VALUES[kind]:
                return info.name
        what = f"{kind} model" if kind else "model"
        raise NotFound(f"the daemon at {self.target} serves no {what}")

    # -- inference ---------------------------------------------------------------
    def generate(
        self, prompt: str, *, model: str | None = None, sampling: SamplingOptions = SamplingOptions()
    ) -> GenerationStream:
        """Stream a continuation of ``prompt``."""
        request = inference_pb2.GenerateRequest(model=model or self.default_model("decoder"), prompt=prompt)
        return self._generate(request, sampling)

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str | None = None,
        sampling: SamplingOptions = SamplingOptions(),
    ) -> GenerationStream:
        """Stream the assistant's reply to ``messages`` (``{"role", "content"}`` dicts)."""
        turns = [inference_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages]
        request = inference_pb2.GenerateRequest(
            model=model or self.default_model("decoder"), messages=inference_pb2.ChatMessages(messages=turns)
        )
        return self._generate(request, sampling)

    def generate_ids(
        self, token_ids: Sequence[int], *, model: str | None = None, sampling: SamplingOptions = SamplingOptions()
    ) -> GenerationStream:
        """Stream a continuation of pre-tokenized ``token_ids``."""
        request = inference_pb2.GenerateRequest(
            model=model or self.default_model("decoder"),
            prompt_token_ids=inference_pb2.TokenIds(ids=list(token_ids)),
        )
        return self._generate(request, sampling)

    def embed(self, texts: Sequence[str], *, model: str | None = None) -> np.ndarray:
        """L2-normalised embeddings, float32 of shape ``(len(texts), dim)``."""
        request = inference_pb2.EmbedRequest(model=model or self.default_model("encoder"), texts=list(texts))
        response = self._unary(self._inference.Embed, request)
        vectors = np.array([e.values for e in response.embeddings], dtype=np.float32)
        return vectors.reshape(len(response.embeddings), response.dim)  # (N, dim) even when N == 0

    def tokenize(
        self, text: str, *, model: str | None = None, add_special_tokens: bool = True
    ) -> inference_pb2.TokenizeResponse:
        """Token ids and their vocabulary strings."""
        request = inference_pb2.TokenizeRequest(
            model=model or self.default_model(), text=text, add_special_tokens=add_special_tokens
        )
        return self._unary(self._inference.Tokenize, request)

    def detokenize(self, ids: Sequence[int], *, model: str | None = None, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``."""
        request = inference_pb2.DetokenizeRequest(
            model=model or self.default_model(), ids=list(ids), skip_special_tokens=skip_special_tokens
        )
        return self._unary(self._inference.Detokenize, request).text

    # -- health --------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN`` for ``service`` ("" is the daemon)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        response = self._unary(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # -- plumbing --------------------------------------------------------------------
    def _generate(self, request: inference_pb2.GenerateRequest, sampling: SamplingOptions) -> GenerationStream:
        sampling.apply(request)
        return GenerationStream(self._inference.Generate(request), self.target)

    def _unary(self, method: grpc.UnaryUnaryMultiCallable, request: object):  # noqa: ANN202 - the stub's type
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from None


def error_from_rpc(exc: grpc.RpcError, target: str) -> AgentdError:
    """The agentd error for a failed call, carrying the daemon's one-line message."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or code.name  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
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
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Cancelled(details)
    return AgentdError(f"daemon error ({code.name}): {details}")
