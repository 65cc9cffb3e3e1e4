"""A minimal in-process gRPC server over agentd's servicers, for the engine/session/registry tests.

It wires exactly what the daemon wires (error interceptor, Inference, Models,
health) plus ``ModelTable.bind_health``, on a Unix socket and its own event
loop thread, so these tests do not depend on how ``agentd.server.app``
evolves around them. Clients are plain synchronous gRPC stubs.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Coroutine

import grpc
import numpy as np
import torch
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agentd.server.catalog import ModelsServicer
from agentd.server.inference import InferenceServicer
from agentd.server.interceptor import ErrorInterceptor
from agentd.server.served import ModelTable
from agentd.v1 import inference_pb2 as pb
from agentd.v1 import inference_pb2_grpc, models_pb2_grpc


class ServingHarness:
    """Serve ``table`` on ``socket_path`` until the ``with`` block ends."""

    def __init__(self, table: ModelTable, socket_path: Path):
        self.table = table
        self.target = f"unix://{socket_path}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="serving-harness", daemon=True)
        self._server: aio.Server | None = None
        self.channel: grpc.Channel | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout)

    async def _start(self) -> None:
        server = aio.server(interceptors=[ErrorInterceptor()])
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(self.table), server)
        models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(self.table), server)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        server.add_insecure_port(self.target)
        await server.start()
        await self.table.bind_health(checker)
        self._server = server

    async def _stop(self) -> None:
        assert self._server is not None
        await self._server.stop(1.0)
        await self.table.close()

    def __enter__(self) -> "ServingHarness":
        self._thread.start()
        self.run(self._start())
        self.channel = grpc.insecure_channel(self.target)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.channel is not None:
                self.channel.close()
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    # -- stubs ----------------------------------------------------------------------------
    @property
    def inference(self) -> inference_pb2_grpc.InferenceStub:
        return inference_pb2_grpc.InferenceStub(self.channel)

    @property
    def models(self) -> models_pb2_grpc.ModelsStub:
        return models_pb2_grpc.ModelsStub(self.channel)

    def health(self, service: str) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            raise


def ids_request(model: str, ids: list[int], max_tokens: int, **fields: Any) -> pb.GenerateRequest:
    """A greedy GenerateRequest over token ids."""
    request = pb.GenerateRequest(model=model, max_tokens=max_tokens, temperature=0.0, **fields)
    request.prompt_token_ids.CopyFrom(pb.TokenIds(ids=ids))
    return request


def collect(responses) -> tuple[list[int], pb.GenerateResponse]:
    """Token ids of a finished Generate stream, and its last message."""
    messages = list(responses)
    return [i for m in messages for i in m.token_ids], messages[-1]


def assert_greedy_under(reference: torch.nn.Module, prompt: list[int], generated: list[int], atol: float = 1e-4) -> None:
    """Teacher-forced through ``reference`` (a transformers model), every generated token is
    the argmax (up to ``atol``, for float32 near-ties) after the tokens before it."""
    with torch.no_grad():
        logits = reference(torch.tensor([prompt + generated]), use_cache=False).logits[0].double().numpy()
    for step, token in enumerate(generated):
        row = logits[len(prompt) - 1 + step]
        assert row[token] >= row.max() - atol, f"step {step}: token {token} is not the reference's argmax {int(np.argmax(row))}"
