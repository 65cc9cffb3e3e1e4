"""One error hierarchy for agentd.

Every error a user can cause is an :class:`AgentdError` subclass. The gRPC
server maps them to status codes (``grpc_code``) and the CLI to exit codes
(``exit_code``) in exactly one place each; anything else is a bug and is
reported as INTERNAL / exit 70 without leaking a traceback to the client.
"""

from __future__ import annotations

import errno
import os
import sqlite3


class AgentdError(Exception):
    """Base class: a clear, one-line message a user can act on."""

    #: Name of the ``grpc.StatusCode`` member this error maps to.
    grpc_code: str = "INTERNAL"
    #: Process exit code for the CLI (sysexits.h style).
    exit_code: int = 1


class InvalidArgument(AgentdError):
    """A request field or CLI argument is malformed or out of its range."""

    grpc_code = "INVALID_ARGUMENT"
    exit_code = 2

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(AgentdError):
    """A named model, session, file or backend does not exist."""

    grpc_code = "NOT_FOUND"
    exit_code = 3


class OutOfRange(AgentdError):
    """The request is well formed but exceeds a model limit (e.g. context length)."""

    grpc_code = "OUT_OF_RANGE"
    exit_code = 2


class FailedPrecondition(AgentdError):
    """The request is valid but the model or daemon is not in a state to serve it
    (e.g. Classify on a model with no token-classification head)."""

    grpc_code = "FAILED_PRECONDITION"
    exit_code = 4


class ModelLoadError(AgentdError):
    """A checkpoint or bundle cannot be loaded: names the file and the problem."""

    grpc_code = "FAILED_PRECONDITION"
    exit_code = 4

    def __init__(self, path: object, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


class UnsupportedArchitecture(ModelLoadError):
    """No registered backend serves the checkpoint's architecture."""


class BackendUnavailable(AgentdError):
    """The backend serving a model needs something this install lacks (e.g. torch)."""

    grpc_code = "FAILED_PRECONDITION"
    exit_code = 4


class Unavailable(AgentdError):
    """The daemon cannot be reached or is shutting down."""

    grpc_code = "UNAVAILABLE"
    exit_code = 69


class ResourceExhausted(AgentdError):
    """A queue, slot pool, memory budget or the storage is full; retry later."""

    grpc_code = "RESOURCE_EXHAUSTED"
    exit_code = 75


class Unauthenticated(AgentdError):
    """Missing or wrong credentials."""

    grpc_code = "UNAUTHENTICATED"
    exit_code = 77


class PermissionDenied(AgentdError):
    """Authenticated, but not allowed to make this call here."""

    grpc_code = "PERMISSION_DENIED"
    exit_code = 77


class Cancelled(AgentdError):
    """The client cancelled the request or its deadline expired."""

    grpc_code = "CANCELLED"
    exit_code = 130


#: What the OS says when a write finds no room: the device, or the user's quota, is full.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the storage running out: ENOSPC/EDQUOT from the OS, SQLITE_FULL from SQLite."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def storage_full(exc: BaseException) -> ResourceExhausted | None:
    """``exc`` as a ResourceExhausted when it is the device's storage running out, else None.

    A phone fills up; every writer (SQLite journals and memories, session files,
    bundles, tool state) then fails with an error of its own library. The
    server and the CLI map them here, in one place, to one clear error instead
    of INTERNAL and a traceback.
    """
    if isinstance(exc, ResourceExhausted):
        return exc
    if not is_storage_full(exc):
        return None
    if isinstance(exc, OSError):
        where = f" writing {exc.filename}" if exc.filename else ""
        return ResourceExhausted(f"{os.strerror(exc.errno)}{where}: free some space and retry")
    return ResourceExhausted(f"{os.strerror(errno.ENOSPC)} (SQLite: {exc}): free some space and retry")
