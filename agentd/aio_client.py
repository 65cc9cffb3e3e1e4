"""The asyncio Python SDK: :class:`AsyncClient`, the same calls as :class:`agentd.client.Client` on ``grpc.aio``.

    from agentd.aio_client import AsyncClient
    from agentd.client import SamplingOptions

    async with AsyncClient() as client:
        async for chunk in client.generate("Once upon", sampling=SamplingOptions(max_tokens=20)):
            print(chunk.text, end="")
        vectors = await client.embed(["hello", "world"])
        stream = await client.chat([{"role": "user", "content": "Hi"}], session_id="chat-1")
        reply = await stream.text()                 # then stream.session_outcome, stream.usage

Use it from one event loop (the channel belongs to the loop that made it).
Errors are the same :mod:`agentd.errors` classes the blocking client raises.
"""

from __future__ import annotations

import asyncio
from os import PathLike
from typing import AsyncIterator, Mapping, Sequence

import grpc
import numpy as np
from grpc import aio

from agentd.client import (
    Constraint,
    Credentials,
    Kind,
    SamplingOptions,
    Classification,
    chat_request,
    classification,
    default_target,
    embeddings,
    error_from_rpc,
    finish_reason_name,
    ids_request,
    load_model_request,
    pick_default,
    prompt_request,
    request_id_of,
    session_outcome_name,
)
from agentd.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc


class AsyncGenerationStream:
    """``async for`` over :class:`GenerateResponse` chunks; ``cancel()`` stops the daemon's generation.

    After the stream ends, ``finish_reason``, ``usage`` (with
    ``cached_prompt_tokens``), ``session_outcome`` and ``request_id()`` are
    available, as on :class:`agentd.client.GenerationStream`.
    """

    def __init__(self, call: aio.UnaryStreamCall, target: str):
        self._call = call
        self._target = target
        self._cancelled = False
        self.finish_reason: str | None = None
        self.usage: inference_pb2.Usage | None = None
        self.session_outcome: str | None = None

    async def __aiter__(self) -> AsyncIterator[inference_pb2.GenerateResponse]:
        try:
            async for chunk in self._call:
                reason = finish_reason_name(chunk)
                if reason is not None:
                    self.finish_reason = reason
                    self.usage = chunk.usage
                    self.session_outcome = session_outcome_name(chunk)
                yield chunk
        except asyncio.CancelledError:
            if self._cancelled:  # grpc.aio ends a call we cancelled with CancelledError
                self.finish_reason = "cancelled"
                return
            self.cancel()  # the caller's task was cancelled: do not leave the daemon generating
            raise
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                self.finish_reason = "cancelled"
                return
            raise error_from_rpc(exc, self._target) from None

    async def request_id(self) -> str | None:
        """The daemon's request id for the call (waits for it to end)."""
        return request_id_of(await self._call.trailing_metadata())

    async def text(self) -> str:
        """Consume the stream and return the whole generated text."""
        return "".join([chunk.text async for chunk in self])

    def cancel(self) -> None:
        """Cancel the call; the daemon stops generating at its next token."""
        self._cancelled = True
        self._call.cancel()


class AsyncClient:
    """An asyncio connection to one daemon; same arguments as :class:`agentd.client.Client`."""

    def __init__(self, target: str | None = None, *, credentials: Credentials = Credentials(), timeout: float | None = None):
        self.target = default_target(target)
        self.timeout = timeout
        self._metadata = credentials.metadata()
        self._channel = credentials.open_channel(self.target, aio)
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._models = models_pb2_grpc.ModelsStub(self._channel)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # -- models ----------------------------------------------------------------
    async def list_models(self) -> list[models_pb2.ModelInfo]:
        """Every served model, in serving order."""
        response = await self._unary(self._models.ListModels, models_pb2.ListModelsRequest())
        return list(response.models)

    async def model_info(self, name: str) -> models_pb2.ModelInfo:
        """One served model; NotFound if the daemon does not serve ``name``."""
        return await self._unary(self._models.GetModelInfo, models_pb2.GetModelInfoRequest(name=name))

    async def default_model(self, kind: Kind | None = None) -> str:
        """The first served model of ``kind`` (any kind when None)."""
        return pick_default(await self.list_models(), kind, self.target)

    async def load_model(
        self,
        name: str,
        path: str | PathLike[str],
        *,
        description: str | None = None,
        wait: bool = False,
        quant: str | None = None,
    ) -> models_pb2.ModelInfo:
        """Serve the model at ``path`` (on the daemon's machine) as ``name``; see ``Client.load_model``."""
        return await self._unary(self._models.LoadModel, load_model_request(name, path, description, wait, quant))

    async def unload_model(self, name: str) -> None:
        """Stop serving ``name`` and free its memory and sessions."""
        await self._unary(self._models.UnloadModel, models_pb2.UnloadModelRequest(name=name))

    # -- inference ---------------------------------------------------------------
    async def generate(
        self,
        prompt: str,
        *,
        model: str | None = None,
        sampling: SamplingOptions = SamplingOptions(),
        session_id: str | None = None,
        constraint: Constraint | None = None,
    ) -> AsyncGenerationStream:
        """Start streaming a continuation of ``prompt``; ``session_id`` keeps the state for the next call;
        ``constraint`` makes the output conform to a JSON schema, regex or Lark grammar."""
        return self._stream(prompt_request(prompt, model, sampling, session_id, constraint))

    async def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        model: str | None = None,
        sampling: SamplingOptions = SamplingOptions(),
        session_id: str | None = None,
        constraint: Constraint | None = None,
    ) -> AsyncGenerationStream:
        """Start streaming the assistant's reply to ``messages`` (``{"role", "content"}`` dicts).

        With ``session_id`` send the whole conversation every turn: only what
        the session does not hold yet is prefilled.
        """
        return self._stream(chat_request(messages, model, sampling, session_id, constraint))

    async def generate_ids(
        self,
        token_ids: Sequence[int],
        *,
        model: str | None = None,
        sampling: SamplingOptions = SamplingOptions(),
        session_id: str | None = None,
        constraint: Constraint | None = None,
    ) -> AsyncGenerationStream:
        """Start streaming a continuation of pre-tokenized ``token_ids``."""
        return self._stream(ids_request(token_ids, model, sampling, session_id, constraint))

    async def embed(self, texts: Sequence[str], *, model: str | None = None) -> np.ndarray:
        """L2-normalised embeddings, float32 of shape ``(len(texts), dim)``."""
        request = inference_pb2.EmbedRequest(model=model or "", texts=list(texts))
        return embeddings(await self._unary(self._inference.Embed, request))

    async def classify(self, texts: Sequence[str], *, model: str | None = None) -> Classification:
        """Labels of every token of each text (a token classifier; None: the default one)."""
        request = inference_pb2.ClassifyRequest(model=model or "", texts=list(texts))
        return classification(await self._unary(self._inference.Classify, request))

    async def tokenize(
        self, text: str, *, model: str | None = None, add_special_tokens: bool = True
    ) -> inference_pb2.TokenizeResponse:
        """Token ids and their vocabulary strings."""
        request = inference_pb2.TokenizeRequest(
            model=model or "", text=text, add_special_tokens=add_special_tokens
        )
        return await self._unary(self._inference.Tokenize, request)

    async def detokenize(self, ids: Sequence[int], *, model: str | None = None, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``."""
        request = inference_pb2.DetokenizeRequest(
            model=model or "", ids=list(ids), skip_special_tokens=skip_special_tokens
        )
        return (await self._unary(self._inference.Detokenize, request)).text

    # -- sessions --------------------------------------------------------------------
    async def save_session(self, session_id: str) -> inference_pb2.SaveSessionResponse:
        """Write an idle session to the daemon's disk: the file's path, size and token count."""
        request = inference_pb2.SaveSessionRequest(session_id=session_id)
        return await self._unary(self._inference.SaveSession, request)

    async def restore_session(self, session_id: str) -> inference_pb2.SessionInfo:
        """Read a saved session back into the daemon's memory."""
        request = inference_pb2.RestoreSessionRequest(session_id=session_id)
        return await self._unary(self._inference.RestoreSession, request)

    async def list_sessions(self, model: str | None = None) -> list[inference_pb2.SessionInfo]:
        """Sessions held in memory (of ``model`` only, if given), least recently used first."""
        request = inference_pb2.ListSessionsRequest(model=model or "")
        return list((await self._unary(self._inference.ListSessions, request)).sessions)

    async def delete_session(
        self, session_id: str, *, delete_saved: bool = False
    ) -> inference_pb2.DeleteSessionResponse:
        """Forget a session held in memory and, with ``delete_saved``, its saved file."""
        request = inference_pb2.DeleteSessionRequest(session_id=session_id, delete_saved=delete_saved)
        return await self._unary(self._inference.DeleteSession, request)

    async def health(self, service: str = "") -> str:
        """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN`` for ``service`` ("" is the daemon)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        response = await self._unary(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    # -- plumbing --------------------------------------------------------------------
    def _stream(self, request: inference_pb2.GenerateRequest) -> AsyncGenerationStream:
        return AsyncGenerationStream(self._inference.Generate(request, metadata=self._metadata), self.target)

    async def _unary(self, method: aio.UnaryUnaryMultiCallable, request: object):  # noqa: ANN202 - the stub's type
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from None
