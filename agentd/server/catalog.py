"""``agentd.v1.Models``: which models the daemon serves, what they are, and loading them at run time."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from agentd.errors import InvalidArgument
from agentd.server.served import ModelTable, ServedModel
from agentd.v1 import models_pb2 as pb
from agentd.v1 import models_pb2_grpc

KINDS = {"decoder": pb.MODEL_KIND_DECODER, "encoder": pb.MODEL_KIND_ENCODER}
STATUSES = {
    "loading": pb.MODEL_STATUS_LOADING,
    "ready": pb.MODEL_STATUS_READY,
    "evicted": pb.MODEL_STATUS_EVICTED,
    "failed": pb.MODEL_STATUS_FAILED,
}


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    """Serves ListModels, GetModelInfo, LoadModel and UnloadModel over a :class:`ModelTable`."""

    def __init__(self, models: ModelTable):
        self._models = models

    async def ListModels(self, request: pb.ListModelsRequest, context: aio.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_info(served, self._models) for served in self._models])

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: aio.ServicerContext) -> pb.ModelInfo:
        return model_info(self._models.get(request.name, field_name="name"), self._models)

    async def LoadModel(self, request: pb.LoadModelRequest, context: aio.ServicerContext) -> pb.ModelInfo:
        if not request.path:
            raise InvalidArgument("path", "is required: a model directory or file on the daemon's machine")
        description = request.description if request.HasField("description") else None
        quant = request.quant if request.HasField("quant") else None
        served = await self._models.start_load(request.name, Path(request.path), description, quant)
        if request.wait:
            await self._models.wait_loaded(served.name)
        return model_info(served, self._models)

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: aio.ServicerContext) -> pb.UnloadModelResponse:
        await self._models.unload(request.name)
        return pb.UnloadModelResponse()


def model_info(served: ServedModel, table: ModelTable | None = None) -> pb.ModelInfo:
    """The wire form of a served model (what it is, once it has loaded, and where it stands)."""
    message = pb.ModelInfo(
        name=served.name,
        description=served.description,
        source=str(served.path),
        status=STATUSES[served.status],
        health_service=served.health_service,
        weight_bytes=served.weight_bytes,
        state_bytes=state_bytes(served, table),
        error=str(served.error) if served.error is not None else "",
        default=table is not None and table.is_default(served),
    )
    info = served.info
    if info is not None:
        message.architecture = info.architecture
        message.kind = KINDS.get(info.kind, pb.MODEL_KIND_UNSPECIFIED)
        message.parameters = info.parameters
        message.context_length = info.context_length
        message.vocab_size = info.vocab_size
        message.dtype = info.dtype
        message.state_bytes_per_token = info.state_bytes_per_token
        message.state_bytes_per_sequence = info.state_bytes_per_sequence
        message.embedding_dim = info.embedding_dim
        message.weight_note = info.weight_note
        message.labels.extend(info.labels)
    return message


def state_bytes(served: ServedModel, table: ModelTable | None) -> int:
    """State memory a model holds now: running sequences, its sessions and its prefix cache."""
    total = served.engine.state_bytes() if served.engine is not None else 0
    total += served.prefix_cache.nbytes if served.prefix_cache is not None else 0
    if table is not None:
        total += table.sessions.total_bytes(served.name)
    return total
