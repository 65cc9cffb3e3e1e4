"""How the daemon logs: one JSON object per line (or readable text) on stderr.

Every record carries ``ts``, ``level``, ``logger`` and ``msg``; inside an RPC
it also carries the fields of :data:`log_context` (``request_id``, ``rpc``,
``model``), set once per call by :mod:`agentd.server.access_log`, so a
servicer's plain ``log.info(...)`` is attributed to its request without
passing ids around. Structured values go in ``extra=``
(``log.info("done", extra={"duration_ms": 3.2, "completion_tokens": 12})``)
and become top-level keys.

Nothing here decides what is safe to log: callers never pass tokens, and
prompt text only when ``log_prompts`` is on (see access_log).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from typing import Any, Mapping, TextIO

from agentd.config import LogFormat, LogLevel

#: Fields describing the RPC being served; empty outside one.
log_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("agentd_log_context", default={})

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The request context and ``extra=`` fields of ``record`` (context first, extras win)."""
    fields = dict(log_context.get())
    fields.update((name, value) for name, value in record.__dict__.items() if name not in _RECORD_ATTRIBUTES)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then context and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(record_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # default=str: a stray Path or numpy scalar must not lose the whole line.
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``agentd: INFO logger: message key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{name}={value}" for name, value in record_fields(record).items())
        line = f"agentd: {record.levelname} {record.name}: {record.getMessage()}"
        if fields:
            line += f" [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve_format(log_format: LogFormat, stream: TextIO) -> LogFormat:
    """``auto`` is text on a terminal and JSON otherwise (files, journald, pipes)."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(log_format: LogFormat, level: LogLevel, stream: TextIO | None = None) -> LogFormat:
    """Send every log record to ``stream`` (stderr) in ``log_format``; returns the format used."""
    stream = stream or sys.stderr
    chosen = resolve_format(log_format, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return chosen
