"""Prometheus metrics. With several worker processes, `PROMETHEUS_MULTIPROC_DIR` is set (by
`python server.py serve --workers N`) before any worker imports this module, and `/metrics`
merges every process's files.

Operation names come from clients, so at most `MAX_OPERATION_NAMES` distinct ones become
labels per process; the rest count as `other`.

`/metrics` answers anyone unless `CHATQL_METRICS_TOKEN` is set; then only a request with
`Authorization: Bearer <token>` (what Prometheus sends for a scrape job's `authorization`
setting), and any other 401 with `WWW-Authenticate: Bearer`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ops.record import RequestRecord

# `_created` series double the output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

MAX_OPERATION_NAMES = 100
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")

REQUESTS = Counter(
    "chatql_graphql_requests",
    "GraphQL HTTP requests by operation name and outcome (ok, an error code, or http_STATUS).",
    ["operation", "outcome"],
)
LATENCY = Histogram(
    "chatql_graphql_request_duration_seconds",
    "Time to answer a GraphQL HTTP request.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STATEMENTS = Histogram(
    "chatql_graphql_sql_statements",
    "SQL statements run to answer one GraphQL HTTP request.",
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100),
)
UNTRUSTED = Counter(
    "chatql_untrusted_operations",
    "Operations outside every trusted-document manifest, let through by audit mode.",
)
# Counted by `ops.instrument.OperationRecorder` for every transport: nothing else need touch it.
OPEN_SUBSCRIPTIONS = Gauge(
    "chatql_subscriptions_open",
    "GraphQL subscriptions currently open.",
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "chatql_db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)

_names: set[str] = set()


def operation_label(record: RequestRecord) -> str:
    name = record.operation
    if name is None:
        # `none`: no operation was found (refused before it, or a document that did not parse).
        return "anonymous" if record.operation_type is not None else "none"
    if name in _names:
        return name
    if not NAME.fullmatch(name) or len(_names) >= MAX_OPERATION_NAMES:
        return "other"
    _names.add(name)
    return name


# The labelled series of each (operation, outcome) seen: `labels()` validates and locks on every
# call, a tenth of a fast request's metrics. As bounded as the labels themselves.
_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def observe(record: RequestRecord, *, status: int, duration: float) -> None:
    operation = operation_label(record)
    key = (operation, record.outcome or f"http_{status}")
    series = _series.get(key)
    if series is None:
        series = _series[key] = (REQUESTS.labels(*key), LATENCY.labels(operation))
    series[0].inc()
    series[1].observe(duration)
    STATEMENTS.observe(record.statements)


def exposition(multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The text format of every metric, merged over all worker processes when there are some."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


UNAUTHORIZED = "unauthorized"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def metrics_endpoint(
    multiprocess_dir: str | None, *, token: str | None
) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics`: the exposition, to anyone, or with a `token` only to its bearer (the
    token compared in constant time, so its answer times tell nothing of it)."""
    expected = token.encode() if token else None

    async def endpoint(request: Request) -> Response:
        if expected is not None and not _bears(request.headers.get("authorization"), expected):
            return PlainTextResponse(UNAUTHORIZED, status_code=401, headers=CHALLENGE)
        body, media_type = exposition(multiprocess_dir)
        return Response(body, media_type=media_type)

    return endpoint


def _bears(authorization: str | None, expected: bytes) -> bool:
    scheme, _, credentials = (authorization or "").partition(" ")
    # Header values arrive decoded as Latin-1: encoding them back gives the bytes sent.
    given = credentials.strip().encode("latin-1")
    return scheme.lower() == "bearer" and secrets.compare_digest(given, expected)
