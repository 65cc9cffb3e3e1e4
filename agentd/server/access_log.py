"""One access-log record per RPC, and the request id that ties a call's log lines together.

The request id is the client's ``x-request-id`` metadata when it sends a sane
one (so a mobile app can quote its own id), else the id the error interceptor
made; it is returned in the ``x-request-id`` trailer of every call and set in
:data:`agentd.logging_setup.log_context` with the RPC and model names, so
every log line written while serving the call carries them.

The access record has ``rpc``, ``status``, ``duration_ms``, for streams
``first_response_ms`` and token counts, and, only when ``log_prompts`` is on,
the prompt text (``prompt``, ``messages`` or ``texts``). Health checks are
logged at debug level: probes every few seconds would drown the rest.

Installed after :class:`agentd.server.interceptor.ErrorInterceptor`, so
its wrapper runs inside the error mapping and sees the servicer's exceptions.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from grpc import aio

from agentd.logging_setup import log_context
from agentd.server.auth import PUBLIC_METHODS
from agentd.server.interceptor import REQUEST_ID_METADATA, request_id, status_for

log = logging.getLogger("agentd.access")

#: Client-chosen request ids must be short and plain (they go into every log line).
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

Behavior = Callable[[Any, aio.ServicerContext], Any]


class AccessLogInterceptor(aio.ServerInterceptor):
    """Wraps unary-request handlers: request id in, trailer out, one access record at the end.

    :param log_prompts: include prompt and message text in access records.
    """

    def __init__(self, *, log_prompts: bool):
        self._log_prompts = log_prompts

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler  # client-streaming RPCs (reflection only) keep their own handling
        call = _CallLog(handler_call_details, self._log_prompts)
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(call.wrap_unary(handler.unary_unary), **serializers)
        if inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(call.wrap_stream(handler.unary_stream), **serializers)
        # A streaming handler written as a coroutine with context.write (health Watch).
        return grpc.unary_stream_rpc_method_handler(call.wrap_unary(handler.unary_stream), **serializers)


class _CallLog:
    """The per-method part of the wrapping; each call gets its own ``_Record``."""

    def __init__(self, details: grpc.HandlerCallDetails, log_prompts: bool):
        self.method = details.method
        self.log_prompts = log_prompts
        self.client_id = _client_request_id(details.invocation_metadata or ())

    def wrap_unary(self, behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: aio.ServicerContext) -> Any:
            record = self._begin(request, context)
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                record.finish(exc, context)
                raise
            record.finish(None, context)
            return response

        return wrapped

    def wrap_stream(self, behavior: Behavior) -> Callable[[Any, aio.ServicerContext], AsyncIterator[Any]]:
        async def wrapped(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            record = self._begin(request, context)
            try:
                async for response in behavior(request, context):
                    record.saw(response)
                    yield response
            except BaseException as exc:
                record.finish(exc, context)
                raise
            record.finish(None, context)

        return wrapped

    def _begin(self, request: Any, context: aio.ServicerContext) -> "_Record":
        rid = self.client_id or request_id.get()
        request_id.set(rid)  # the error interceptor's INTERNAL message and trailer quote the same id
        context.set_trailing_metadata(((REQUEST_ID_METADATA, rid),))
        fields: dict[str, Any] = {"request_id": rid, "rpc": self.method.rpartition("/")[2]}
        model = getattr(request, "model", "")
        if isinstance(model, str) and model:
            fields["model"] = model
        log_context.set(fields)
        return _Record(self.method, _prompt_fields(request) if self.log_prompts else {})


class _Record:
    """Timing and token counts of one call."""

    def __init__(self, method: str, prompt: dict[str, Any]):
        self.method = method
        self.prompt = prompt
        self.started = time.perf_counter()
        self.first_response: float | None = None
        self.streamed_tokens = 0
        self.usage: dict[str, int] = {}

    def saw(self, response: Any) -> None:
        if self.first_response is None:
            self.first_response = time.perf_counter()
        ids = getattr(response, "token_ids", None)
        if ids is not None:
            self.streamed_tokens += len(ids)
        if _has_field(response, "usage"):
            self.usage = {
                "prompt_tokens": response.usage.prompt_tokens,
                "completion_tokens": response.usage.completion_tokens,
            }

    def finish(self, error: BaseException | None, context: aio.ServicerContext) -> None:
        status = _status(error, context)
        fields: dict[str, Any] = {"status": status, "duration_ms": round((time.perf_counter() - self.started) * 1e3, 3)}
        if self.first_response is not None:
            fields["first_response_ms"] = round((self.first_response - self.started) * 1e3, 3)
            fields["streamed_tokens"] = self.streamed_tokens
        fields.update(self.usage)
        fields.update(self.prompt)
        level = logging.DEBUG if self.method in PUBLIC_METHODS else logging.INFO
        log.log(level, "%s %s %.1f ms", self.method, status, fields["duration_ms"], extra=fields)


def _status(error: BaseException | None, context: aio.ServicerContext) -> str:
    if error is None:
        return "OK"
    if isinstance(error, aio.AbortError):
        code = context.code()  # the handler (or the error interceptor) chose it
        return code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
    if isinstance(error, Exception):
        return status_for(error)[0].name
    return "CANCELLED"  # CancelledError/GeneratorExit: the client left or the server is stopping


def _client_request_id(metadata: Any) -> str | None:
    for key, value in metadata:
        if key.lower() == REQUEST_ID_METADATA and isinstance(value, str) and CLIENT_REQUEST_ID.fullmatch(value):
            return value
    return None


def _prompt_fields(request: Any) -> dict[str, Any]:
    """Prompt text of the request, for ``log_prompts`` only."""
    fields: dict[str, Any] = {}
    if _has_field(request, "prompt") or (isinstance(getattr(request, "prompt", None), str) and request.prompt):
        fields["prompt"] = request.prompt
    if _has_field(request, "messages"):
        fields["messages"] = [{"role": m.role, "content": m.content} for m in request.messages.messages]
    texts = getattr(request, "texts", None)
    if texts:
        fields["texts"] = list(texts)
    text = getattr(request, "text", None)
    if isinstance(text, str) and text:
        fields["text"] = text
    return fields


def _has_field(message: Any, name: str) -> bool:
    """Whether a protobuf message has ``name`` set (False when it has no such field)."""
    try:
        return bool(message.HasField(name))
    except (ValueError, AttributeError):
        return False
