"""``agentd.v1.Models``: which models the daemon serves and what they are."""

from __future__ import annotations

from grpc import aio

from agentd.server.served import ModelTable, ServedModel
from agentd.v1 import models_pb2 as pb
from agentd.v1 import models_pb2_grpc

KINDS = {"decoder": pb.MODEL_KIND_DECODER, "encoder": pb.MODEL_KIND_ENCODER}


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    """Serves ListModels and GetModelInfo from a :class:`ModelTable`."""

    def __init__(self, models: ModelTable):
        self._models = models

    async def ListModels(self, request: pb.ListModelsRequest, context: aio.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_info(served) for served in self._models])

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: aio.ServicerContext) -> pb.ModelInfo:
        return model_info(self._models.get(request.name, field_name="name"))


def model_info(served: ServedModel) -> pb.ModelInfo:
    """The wire form of a served model's :class:`agentd.backend.ModelInfo`."""
    info = served.model.info
    return pb.ModelInfo(
        name=served.name,
        architecture=info.architecture,
        kind=KINDS.get(info.kind, pb.MODEL_KIND_UNSPECIFIED),
        parameters=info.parameters,
        context_length=info.context_length,
        vocab_size=info.vocab_size,
        dtype=info.dtype,
        state_bytes_per_token=info.state_bytes_per_token,
        state_bytes_per_sequence=info.state_bytes_per_sequence,
        embedding_dim=info.embedding_dim,
        description=served.description,
        source=str(served.model.path),
    )
