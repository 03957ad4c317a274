"""One record, one log line and the metrics for every HTTP request; `X-Request-ID` on every
response (the caller's own id when it sent a sane one, else a new one).

The outcome is `ok`, the code of the operation's first error, or, for a request refused before
it ran, what the transport left in the request's state under `refused` (`http_STATUS`, or a
code such as PERSISTED_QUERY_NOT_FOUND); failing that, `http_STATUS` for any status of 400 up.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ops.instrument import settle
from ops.metrics import observe
from ops.record import CURRENT, RequestRecord

logger = logging.getLogger("chatql.request")

HEADER = b"x-request-id"
SANE_ID = re.compile(rb"[A-Za-z0-9._:@+=/-]{1,128}")
# Probes and scrapes come every few seconds: their lines are DEBUG.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Where the transport says why it refused a request (`transport.view`).
REFUSED = "refused"


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER:
            return value.decode("ascii") if SANE_ID.fullmatch(value) else None
    return None


class RequestLog:
    def __init__(self, app: ASGIApp, *, graphql_path: str = "/graphql") -> None:
        self.app = app
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        # Shared through the request's state, so the transport's answers name the same id.
        scope.setdefault("state", {})["request_id"] = request_id
        record = RequestRecord(request_id=request_id, started=time.perf_counter())
        header = (HEADER, request_id.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = CURRENT.set(record)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            CURRENT.reset(token)
            self.finish(scope, record, status)

    def finish(self, scope: Scope, record: RequestRecord, status: int) -> None:
        path: str = scope["path"]
        # GET /graphql from a browser is the explorer's page, not an operation.
        graphql = path == self.graphql_path
        refused = scope["state"].get(REFUSED)
        finish(
            record,
            method=scope["method"],
            path=path,
            status=status,
            graphql=graphql,
            refused=refused,
            # An HTTP request that carried a streamed protocol (`transport.sse`).
            protocol=scope["state"].get("protocol"),
        )


@contextlib.contextmanager
def operation_record(protocol: str, *, path: str = "/graphql") -> Iterator[RequestRecord]:
    """The record of one operation carried by a WebSocket: `CURRENT` while it runs (statements
    count into it), then one log line (method `WS`, `protocol` named) and the metrics, as an
    HTTP request gets from `RequestLog`. Its id is fresh; the caller may replace it."""
    record = RequestRecord(request_id=uuid.uuid4().hex, started=time.perf_counter())
    token = CURRENT.set(record)
    try:
        yield record
    finally:
        CURRENT.reset(token)
        finish(record, method="WS", path=path, status=None, protocol=protocol)


def finish(
    record: RequestRecord,
    *,
    method: str,
    path: str,
    status: int | None,
    graphql: bool = True,
    protocol: str | None = None,
    refused: str | None = None,
) -> None:
    """Settle the record, count it in the metrics (when it was a GraphQL operation) and write
    its log line. `status` is None for an operation that no HTTP response carried; `refused`
    is the outcome of a request the transport refused before it ran (see `settle`)."""
    duration = time.perf_counter() - record.started
    settle(record, refused=refused)
    failed = status is not None and status >= 400
    if graphql and (record.outcome is not None or failed):
        observe(record, status=status or 200, duration=duration)
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    if not logger.isEnabledFor(level):
        return
    fields = {
        "request_id": record.request_id,
        "method": method,
        "path": path,
        "status": status,
        "operation": record.operation,
        "operation_type": record.operation_type,
        "outcome": record.outcome or ("ok" if not failed else f"http_{status}"),
        "duration_ms": round(duration * 1000, 2),
        "statements": record.statements,
    }
    if protocol is not None:
        fields["protocol"] = protocol
    if record.trace_id is not None:
        fields["trace_id"] = record.trace_id
    if record.untrusted:
        fields["trusted"] = False
    logger.log(
        level,
        "%s %s %s",
        method,
        path,
        status if status is not None else protocol,
        extra={"fields": fields},
    )
