from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATUS_UNSPECIFIED: _ClassVar[ModelStatus]
    MODEL_STATUS_LOADING: _ClassVar[ModelStatus]
    MODEL_STATUS_READY: _ClassVar[ModelStatus]
    MODEL_STATUS_EVICTED: _ClassVar[ModelStatus]
    MODEL_STATUS_FAILED: _ClassVar[ModelStatus]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_DECODER: _ClassVar[ModelKind]
    MODEL_KIND_ENCODER: _ClassVar[ModelKind]
MODEL_STATUS_UNSPECIFIED: ModelStatus
MODEL_STATUS_LOADING: ModelStatus
MODEL_STATUS_READY: ModelStatus
MODEL_STATUS_EVICTED: ModelStatus
MODEL_STATUS_FAILED: ModelStatus
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_DECODER: ModelKind
MODEL_KIND_ENCODER: ModelKind

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "architecture", "kind", "parameters", "context_length", "vocab_size", "dtype", "state_bytes_per_token", "state_bytes_per_sequence", "embedding_dim", "description", "source", "status", "health_service", "weight_bytes", "state_bytes", "error", "default", "weight_note", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_PER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_SERVICE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_NOTE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    architecture: str
    kind: ModelKind
    parameters: int
    context_length: int
    vocab_size: int
    dtype: str
    state_bytes_per_token: int
    state_bytes_per_sequence: int
    embedding_dim: int
    description: str
    source: str
    status: ModelStatus
    health_service: str
    weight_bytes: int
    state_bytes: int
    error: str
    default: bool
    weight_note: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., architecture: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., parameters: _Optional[int] = ..., context_length: _Optional[int] = ..., vocab_size: _Optional[int] = ..., dtype: _Optional[str] = ..., state_bytes_per_token: _Optional[int] = ..., state_bytes_per_sequence: _Optional[int] = ..., embedding_dim: _Optional[int] = ..., description: _Optional[str] = ..., source: _Optional[str] = ..., status: _Optional[_Union[ModelStatus, str]] = ..., health_service: _Optional[str] = ..., weight_bytes: _Optional[int] = ..., state_bytes: _Optional[int] = ..., error: _Optional[str] = ..., default: _Optional[bool] = ..., weight_note: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "path", "description", "wait", "quant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    QUANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    description: str
    wait: bool
    quant: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., description: _Optional[str] = ..., wait: _Optional[bool] = ..., quant: _Optional[str] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
