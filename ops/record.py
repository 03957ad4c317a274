"""The record of the HTTP request being served, reachable from anywhere through a contextvar.

The middleware opens it, the SQL listener counts statements into it and the GraphQL
extension writes the operation's name and outcome; tasks started during the request
(DataLoader batches) copy the context and so share the same record.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    started: float
    statements: int = 0
    operation: str | None = None
    operation_type: str | None = None
    outcome: str | None = None
    # The request's trace (hex), when tracing is on (`app.tracing`).
    trace_id: str | None = None
    # Audit mode of trusted documents: the operation's text is in no manifest.
    untrusted: bool = False
    # Strawberry's execution context, read once the response is sent: by then every
    # extension (the one that adds error codes included) has finished with it.
    execution: Any = None


CURRENT: ContextVar[RequestRecord | None] = ContextVar("chatql_request", default=None)


def current_request_id() -> str | None:
    record = CURRENT.get()
    return record.request_id if record is not None else None
