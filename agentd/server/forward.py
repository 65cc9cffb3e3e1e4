"""Serve ``agentd.v1`` (Inference, Models, Agent) by forwarding every call to another agentd endpoint (the Ray Serve proxy).

``agentd serve --ray`` keeps the daemon's own listeners in front of Ray: the
Unix socket (mode 0600) and TCP with TLS and a bearer token, with the same
interceptors (auth first, then error mapping and the access log). Each call is
parsed here (bad bytes are INVALID_ARGUMENT before anything is sent on), then
re-sent on one channel to ``upstream`` with its deadline and without the
caller's credentials; the answer, or the upstream status and message, goes
back as it came.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import grpc
from grpc import aio
from google.protobuf.message_factory import GetMessageClass

from agentd.errors import AgentdError
from agentd.v1 import agent_pb2, inference_pb2, models_pb2

#: Services forwarded (the front answers health and reflection itself).
FORWARDED = (inference_pb2, models_pb2, agent_pb2)


class UpstreamError(AgentdError):
    """The upstream's own status, passed through unchanged."""

    def __init__(self, error: aio.AioRpcError):
        super().__init__(error.details() or error.code().name)
        self.grpc_code = error.code().name


class ForwardingHandler(grpc.GenericRpcHandler):
    """Method handlers for every RPC of :data:`FORWARDED`, each forwarding on ``channel``."""

    def __init__(self, channel: aio.Channel, modules: tuple[Any, ...] = FORWARDED):
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for module in modules:
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    request, response = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
                    self._handlers[path] = _handler(channel, path, request, response, method.server_streaming)
        self.services = tuple(s.full_name for m in modules for s in m.DESCRIPTOR.services_by_name.values())

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def _handler(channel: aio.Channel, path: str, request: type, response: type, streaming: bool) -> grpc.RpcMethodHandler:
    serializers = {"request_serializer": request.SerializeToString, "response_deserializer": response.FromString}
    parse = {"request_deserializer": request.FromString, "response_serializer": response.SerializeToString}
    if streaming:
        call = channel.unary_stream(path, **serializers)

        async def forward_stream(message: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            stream = call(message, timeout=context.time_remaining())
            try:
                async for item in stream:
                    yield item
            except aio.AioRpcError as exc:
                raise UpstreamError(exc) from None
            finally:
                stream.cancel()  # the caller left: so does the upstream call

        return grpc.unary_stream_rpc_method_handler(forward_stream, **parse)
    unary = channel.unary_unary(path, **serializers)

    async def forward(message: Any, context: aio.ServicerContext) -> Any:
        try:
            return await unary(message, timeout=context.time_remaining())
        except aio.AioRpcError as exc:
            raise UpstreamError(exc) from None

    return grpc.unary_unary_rpc_method_handler(forward, **parse)
