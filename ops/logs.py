"""Log formats: JSON lines for machines, `key=value` lines for people at a terminal.

A record's `fields` extra (a dict) becomes top-level keys of the JSON object, or `key=value`
pairs after the message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        if not pairs:
            return line
        head, newline, rest = line.partition("\n")
        return f"{head}  {pairs}{newline}{rest}"


def log_config(*, level: str, json: bool, stderr: bool = False) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the whole process: ours, uvicorn's, everyone's.

    uvicorn applies it in every worker process too (`uvicorn.run(log_config=...)`). Its access
    log stays off: the request middleware writes one richer line per request instead.
    """
    formatter = JsonFormatter if json else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"chatql": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr" if stderr else "ext://sys.stdout",
                "formatter": "chatql",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
