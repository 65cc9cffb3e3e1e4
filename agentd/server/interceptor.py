"""The one place exceptions become gRPC status codes.

Every RPC gets a short request id (logged, and sent back in the ``x-request-id``
trailer of failed calls). :class:`agentd.errors.AgentdError` subclasses carry
their status code (``grpc_code``) and a one-line message that goes to the
client as is. Anything else is a bug: the traceback is logged here, on the
server, and the client sees only INTERNAL with the request id to quote.
Every RPC is also counted here by its final status code (``agentd_requests_total``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc
from grpc import aio

from agentd.errors import AgentdError, InvalidArgument, storage_full
from agentd.server import metrics

log = logging.getLogger(__name__)

#: Id of the RPC being served (``-`` outside one); servicers put it in their log lines.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("agentd_request_id", default="-")
REQUEST_ID_METADATA = "x-request-id"

UnaryBehavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext], Any]  # async generator, or coroutine using context.write
Parse = Callable[[bytes], Any] | None  # a message type's FromString


class ErrorInterceptor(aio.ServerInterceptor):
    """Wraps every unary-request handler (and reflection's bidi one) so exceptions map to status codes once."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        # The request is parsed inside the wrapper, not by grpc: bytes that are not the message
        # then get INVALID_ARGUMENT naming the type (grpc's own parse failure is UNKNOWN, with a
        # traceback in the log per call), and only after the auth interceptor has let the call in.
        parse = handler.request_deserializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, parse),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, parse),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            # Reflection's bidi stream: each incoming message is parsed as it is read.
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method, parse, each=True),
                response_serializer=handler.response_serializer,
            )
        # Other client-streaming handlers (none today) keep grpc's own handling.
        return handler


def _wrap_unary(behavior: UnaryBehavior, method: str, parse: Parse) -> UnaryBehavior:
    rpc = method.lstrip("/")

    async def wrapped(request: Any, context: aio.ServicerContext) -> Any:
        request_id.set(_new_request_id())
        code = "OK"
        try:
            return await behavior(_parsed(request, parse, method), context)
        except aio.AbortError:
            code = _aborted_code(context)
            raise  # the handler chose its status itself
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except Exception as exc:  # noqa: BLE001 - this is the single mapping point
            code = status_for(exc)[0].name
            await abort_with(context, exc, method)
        finally:
            metrics.REQUESTS.labels(rpc, code).inc()

    return wrapped


def _wrap_stream(behavior: StreamBehavior, method: str, parse: Parse, *, each: bool = False) -> StreamBehavior:
    """A streaming handler whose request (``each``: every message of its request stream) is parsed here."""
    if not inspect.isasyncgenfunction(behavior):
        # e.g. health Watch: a coroutine that writes with ``context.write``.
        return _wrap_unary(behavior, method, parse)

    rpc = method.lstrip("/")

    async def wrapped(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        request_id.set(_new_request_id())
        code = "OK"
        try:
            parsed = _parsed_each(request, parse, method) if each else _parsed(request, parse, method)
            async for response in behavior(parsed, context):
                yield response
        except aio.AbortError:
            code = _aborted_code(context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"  # the client went away (or the server is stopping)
            raise
        except Exception as exc:  # noqa: BLE001 - this is the single mapping point
            code = status_for(exc)[0].name
            await abort_with(context, exc, method)
        finally:
            metrics.REQUESTS.labels(rpc, code).inc()

    return wrapped


def _parsed(request: Any, parse: Parse, method: str) -> Any:
    """The request message from its wire bytes; InvalidArgument when they are not one."""
    if parse is None or not isinstance(request, bytes):
        return request
    try:
        return parse(request)
    except Exception:  # noqa: BLE001 - DecodeError, or invalid UTF-8 in a string field
        name = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        kind = f"a valid {name.full_name}" if name is not None else "a valid request"
        raise InvalidArgument("request", f"is not {kind} message (malformed protobuf)") from None


async def _parsed_each(requests: AsyncIterator[Any], parse: Parse, method: str) -> AsyncIterator[Any]:
    """The messages of a request stream, parsed as they arrive (InvalidArgument at the first bad one)."""
    async for request in requests:
        yield _parsed(request, parse, method)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-visible message for ``exc``."""
    if isinstance(exc, AgentdError):
        return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL), str(exc)
    full = storage_full(exc)
    if full is not None:
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(full)
    return grpc.StatusCode.INTERNAL, f"internal error (request id {request_id.get()}); details are in the daemon log"


async def abort_with(context: aio.ServicerContext, exc: BaseException, method: str) -> None:
    """Log ``exc`` and end the RPC with its status (raises ``aio.AbortError``)."""
    code, message = status_for(exc)
    rid = request_id.get()
    if isinstance(exc, InvalidArgument):
        # Only the field: the problem text may quote request content (no prompt text in logs).
        log.info("request %s %s -> %s (field %s)", rid, method, code.name, exc.field)
    elif isinstance(exc, AgentdError):
        log.info("request %s %s -> %s: %s", rid, method, code.name, message)
    elif storage_full(exc) is not None:  # the device is full: a condition to report, not a bug
        log.warning("request %s %s -> %s: %s", rid, method, code.name, message)
    else:
        log.error("request %s %s failed with an unexpected error", rid, method, exc_info=exc)
    await context.abort(code, message, trailing_metadata=((REQUEST_ID_METADATA, rid),))


def _aborted_code(context: aio.ServicerContext) -> str:
    """The status a handler aborted with itself (``context.abort``)."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _new_request_id() -> str:
    return uuid.uuid4().hex[:12]
