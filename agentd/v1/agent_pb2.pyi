from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunTaskRequest(_message.Message):
    __slots__ = ("request", "run_id", "model", "auto_approve", "user", "no_plan_cache")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUTO_APPROVE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    NO_PLAN_CACHE_FIELD_NUMBER: _ClassVar[int]
    request: str
    run_id: str
    model: str
    auto_approve: bool
    user: str
    no_plan_cache: bool
    def __init__(self, request: _Optional[str] = ..., run_id: _Optional[str] = ..., model: _Optional[str] = ..., auto_approve: _Optional[bool] = ..., user: _Optional[str] = ..., no_plan_cache: _Optional[bool] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("run_id", "plan", "step_started", "step_finished", "approval_needed", "run_finished")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_FINISHED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_NEEDED_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    plan: PlanReady
    step_started: StepStarted
    step_finished: StepFinished
    approval_needed: ApprovalNeeded
    run_finished: RunFinished
    def __init__(self, run_id: _Optional[str] = ..., plan: _Optional[_Union[PlanReady, _Mapping]] = ..., step_started: _Optional[_Union[StepStarted, _Mapping]] = ..., step_finished: _Optional[_Union[StepFinished, _Mapping]] = ..., approval_needed: _Optional[_Union[ApprovalNeeded, _Mapping]] = ..., run_finished: _Optional[_Union[RunFinished, _Mapping]] = ...) -> None: ...

class PlanReady(_message.Message):
    __slots__ = ("plan_json", "text", "completion_tokens")
    PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    plan_json: str
    text: str
    completion_tokens: int
    def __init__(self, plan_json: _Optional[str] = ..., text: _Optional[str] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class StepStarted(_message.Message):
    __slots__ = ("step", "tool", "arguments_json")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    step: int
    tool: str
    arguments_json: str
    def __init__(self, step: _Optional[int] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class StepFinished(_message.Message):
    __slots__ = ("step", "tool", "status", "result_json", "error", "replayed")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    step: int
    tool: str
    status: str
    result_json: str
    error: str
    replayed: bool
    def __init__(self, step: _Optional[int] = ..., tool: _Optional[str] = ..., status: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ApprovalNeeded(_message.Message):
    __slots__ = ("step", "tool", "arguments_json", "description")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    step: int
    tool: str
    arguments_json: str
    description: str
    def __init__(self, step: _Optional[int] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class RunFinished(_message.Message):
    __slots__ = ("status", "answer", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: str
    answer: str
    error: str
    def __init__(self, status: _Optional[str] = ..., answer: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ApproveRequest(_message.Message):
    __slots__ = ("run_id", "step", "approved")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: int
    approved: bool
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[int] = ..., approved: _Optional[bool] = ...) -> None: ...

class ApproveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelRunResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "request", "status", "plan_json", "answer", "error", "steps", "created", "updated", "user")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request: str
    status: str
    plan_json: str
    answer: str
    error: str
    steps: _containers.RepeatedCompositeFieldContainer[StepInfo]
    created: float
    updated: float
    user: str
    def __init__(self, run_id: _Optional[str] = ..., request: _Optional[str] = ..., status: _Optional[str] = ..., plan_json: _Optional[str] = ..., answer: _Optional[str] = ..., error: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[StepInfo, _Mapping]]] = ..., created: _Optional[float] = ..., updated: _Optional[float] = ..., user: _Optional[str] = ...) -> None: ...

class StepInfo(_message.Message):
    __slots__ = ("step", "tool", "status", "arguments_json", "result_json", "error", "attempts", "approval")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    step: int
    tool: str
    status: str
    arguments_json: str
    result_json: str
    error: str
    attempts: int
    approval: str
    def __init__(self, step: _Optional[int] = ..., tool: _Optional[str] = ..., status: _Optional[str] = ..., arguments_json: _Optional[str] = ..., result_json: _Optional[str] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., approval: _Optional[str] = ...) -> None: ...

class ListMemoriesRequest(_message.Message):
    __slots__ = ("user", "kind")
    USER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    user: str
    kind: str
    def __init__(self, user: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class ListMemoriesResponse(_message.Message):
    __slots__ = ("memories",)
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[Memory]
    def __init__(self, memories: _Optional[_Iterable[_Union[Memory, _Mapping]]] = ...) -> None: ...

class Memory(_message.Message):
    __slots__ = ("id", "kind", "user", "summary", "created", "uses")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    user: str
    summary: str
    created: float
    uses: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., user: _Optional[str] = ..., summary: _Optional[str] = ..., created: _Optional[float] = ..., uses: _Optional[int] = ...) -> None: ...

class ForgetRequest(_message.Message):
    __slots__ = ("user", "id", "kind", "all")
    USER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    user: str
    id: str
    kind: str
    all: bool
    def __init__(self, user: _Optional[str] = ..., id: _Optional[str] = ..., kind: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class ForgetResponse(_message.Message):
    __slots__ = ("forgotten",)
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    forgotten: int
    def __init__(self, forgotten: _Optional[int] = ...) -> None: ...
