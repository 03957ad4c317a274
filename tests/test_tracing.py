"""Tracing (issue 18): span trees of real requests over HTTP and WebSocket, on both databases,
recorded by the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from app.settings import Settings
from bench.workloads import Q1, W1
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, running, serve
from tests.ws import TRANSPORT_WS, asgi_socket

ROOT = Path(__file__).resolve().parent.parent
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Traced:
    api: Api
    exporter: InMemorySpanExporter

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()


def provider_to(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
async def traced(settings: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    on = settings.model_copy(update={"tracing": True})
    async with serve(on, tracer_provider=provider_to(exporter)) as api:
        yield Traced(api, exporter)


@pytest.fixture
async def admin(sessionmaker: Sessionmaker) -> tuple[int, str]:
    """An admin who owns four conversations of three messages (Q1's answer is not empty)."""
    admin_id = await make_user(sessionmaker, is_admin=True)
    for _ in range(4):
        conversation = await make_conversation(sessionmaker, owner_id=admin_id)
        await make_messages(sessionmaker, conversation_id=conversation, count=3)
    return admin_id, token_for(admin_id)


def tree(spans: Sequence[ReadableSpan], root: ReadableSpan) -> tuple[str, list[Any]]:
    """(name, children) from `root` down, children in the order they started; every statement
    span is named `SQL` (what they run differs between the databases)."""
    children = sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id),
        key=lambda s: s.start_time or 0,
    )
    name = "SQL" if "db.query.text" in (root.attributes or {}) else root.name
    return name, [tree(spans, child) for child in children]


def request_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.name in {"POST /graphql", f"WS {TRANSPORT_WS}"}]


def statements(spans: Sequence[ReadableSpan], request: ReadableSpan) -> list[ReadableSpan]:
    trace_id = request.context.trace_id
    return [
        s
        for s in spans
        if s.context.trace_id == trace_id and "db.query.text" in (s.attributes or {})
    ]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


SQL: tuple[str, list[Any]] = ("SQL", [])
# The viewer's lookup while the context is built, then the operation's phases.
Q1_TREE = (
    "POST /graphql",
    [SQL, ("parse", []), ("validate", []), ("execute", [SQL, SQL, SQL])],
)
# The fast lane runs a document parsed and validated before: no parse or validate happens,
# and it makes no span for them (the request span says `chatql.cached`).
Q1_FAST_TREE = ("POST /graphql", [SQL, ("execute", [SQL, SQL, SQL])])
# On PostgreSQL the fast lane takes the viewer it has seen from its cache, and the check that
# the account is unchanged rides in the data's statements (`schema.context.ViewerCache`).
Q1_FAST_TREE_POSTGRES = ("POST /graphql", [("execute", [SQL, SQL, SQL])])
# Each object counts once per instance, a connection's edges times its page: users 1 + 50 * (an
# edge 1 + a node 1 + conversations 1 + 10 * (1 + 1 + messages 1 + 20 * (1 + 1))) = 21,651.
Q1_COST = 21_651


async def test_q1_is_one_request_span_with_its_phases_and_a_span_per_statement(
    traced: Traced, admin: tuple[int, str], database_url: str
) -> None:
    admin_id, token = admin
    for _ in range(2):  # Strawberry's way, then the fast lane's
        await traced.api.data(Q1, token=token)
    spans = traced.spans()
    first, second = request_spans(spans)
    postgres = database_url.startswith("postgresql")
    fast = Q1_FAST_TREE_POSTGRES if postgres else Q1_FAST_TREE
    assert (tree(spans, first), tree(spans, second)) == (Q1_TREE, fast)
    cached = {"chatql.cached": True}
    for request, count, extra in ((first, 4, {}), (second, 3 if postgres else 4, cached)):
        assert request.parent is None
        assert attributes(request) == {
            **extra,
            "http.request.method": "POST",
            "url.path": "/graphql",
            "http.response.status_code": 200,
            "graphql.operation.name": "Q1",
            "graphql.operation.type": "query",
            "enduser.id": str(admin_id),
            "chatql.cost": Q1_COST,
            "chatql.statements": count,
        }
        sql = statements(spans, request)
        assert len(sql) == count
        # The text alone, never the parameters.
        assert all(set(attributes(s)) == {"db.system.name", "db.query.text"} for s in sql)


async def test_a_mutation_has_the_same_tree_and_a_span_for_each_of_its_statements(
    traced: Traced, sessionmaker: Sessionmaker
) -> None:
    user_id = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user_id)
    variables = {"input": {"conversationId": gid("Conversation", conversation), "content": "hi"}}
    for _ in range(2):  # Strawberry's way, then the fast lane's (issue 15: its mutation lane)
        await traced.api.data(W1, variables, token=token_for(user_id))
    spans = traced.spans()
    first, second = request_spans(spans)
    counted = attributes(first)["chatql.statements"]
    writes = counted - 1  # all but the viewer's lookup
    # The fast lane runs a document it knows (no parse or validate, `chatql.cached` says so)
    # and reads a mutation's viewer before it runs, from the database, never from a cache.
    assert (tree(spans, first), tree(spans, second)) == (
        ("POST /graphql", [SQL, ("parse", []), ("validate", []), ("execute", [SQL] * writes)]),
        ("POST /graphql", [SQL, ("execute", [SQL] * writes)]),
    )
    assert writes >= 2
    for request, extra in ((first, {}), (second, {"chatql.cached": True})):
        assert len(statements(spans, request)) == counted
        assert attributes(request) == {
            **extra,
            "http.request.method": "POST",
            "url.path": "/graphql",
            "http.response.status_code": 200,
            "graphql.operation.name": "W1",
            "graphql.operation.type": "mutation",
            "enduser.id": str(user_id),
            "chatql.cost": 1,
            "chatql.statements": counted,
        }


async def test_the_callers_traceparent_is_taken_and_ours_returned(
    traced: Traced, admin: tuple[int, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatql.request")
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    response = await traced.api.post("{ me { id } }", headers={"traceparent": caller})
    assert response.status_code == 200, response.text
    [request] = request_spans(traced.spans())
    context = request.context
    assert format_trace_id(context.trace_id) == CALLER_TRACE
    assert request.parent is not None and format_span_id(request.parent.span_id) == CALLER_SPAN
    ours = f"00-{CALLER_TRACE}-{format_span_id(context.span_id)}-01"
    assert response.headers["traceparent"] == ours
    [line] = [record for record in caplog.records if record.name == "chatql.request"]
    assert line.fields["trace_id"] == CALLER_TRACE  # type: ignore[attr-defined]


async def test_without_a_traceparent_a_request_starts_a_trace_and_names_it(
    traced: Traced,
) -> None:
    response = await traced.api.post("{ me { id } }")
    [request] = request_spans(traced.spans())
    context = request.context
    assert request.parent is None
    flags = f"{context.trace_flags:02x}"  # sampled, and a random trace id (W3C level 2)
    expected = f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-{flags}"
    assert context.trace_flags.sampled
    assert response.headers["traceparent"] == expected


async def test_each_websocket_operation_is_a_request_span(
    settings: Settings, admin: tuple[int, str]
) -> None:
    admin_id, token = admin
    exporter = InMemorySpanExporter()
    on = {"tracing": True}
    async with (
        running(settings, tracer_provider=provider_to(exporter), **on) as app,
        asgi_socket(app, TRANSPORT_WS) as socket,
    ):
        await socket.init({"authorization": f"Bearer {token}"})
        result = await socket.execute("1", Q1)
        assert "errors" not in result, result
    spans = exporter.get_finished_spans()
    [request] = request_spans(spans)
    assert tree(spans, request) == (
        f"WS {TRANSPORT_WS}",
        [SQL, ("parse", []), ("validate", []), ("execute", [SQL, SQL, SQL])],
    )
    assert attributes(request) == {
        "network.protocol.name": TRANSPORT_WS,
        "graphql.operation.name": "Q1",
        "graphql.operation.type": "query",
        "enduser.id": str(admin_id),
        "chatql.cost": Q1_COST,
        "chatql.statements": 4,
    }


async def test_nothing_is_recorded_or_returned_when_tracing_is_off(
    settings: Settings, admin: tuple[int, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatql.request")
    exporter = InMemorySpanExporter()
    assert not settings.tracing_on()
    async with serve(settings, tracer_provider=provider_to(exporter)) as api:
        for _ in range(2):
            response = await api.post(Q1, token=admin[1])
            assert response.status_code == 200, response.text
            assert "traceparent" not in response.headers
    assert exporter.get_finished_spans() == ()
    lines = [record for record in caplog.records if record.name == "chatql.request"]
    assert [("trace_id" in line.fields) for line in lines] == [False, False]  # type: ignore[attr-defined]


def test_off_opentelemetry_is_not_even_imported(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from app.factory import create_app\n"
        "from app.settings import Settings\n"
        f"create_app(Settings(secret_key='k', database_url='sqlite+aiosqlite:///{tmp_path}/x.db'))\n"
        "print([m for m in sys.modules if m.startswith(('opentelemetry', 'app.tracing'))])\n"
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"CHATQL_TRACING", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    }
    finished = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert finished.stdout == "[]\n"


async def test_a_document_that_does_not_validate_is_traced_without_a_cost(
    traced: Traced,
) -> None:
    response = await traced.api.post("query Bad { nope }")
    assert response.status_code == 200, response.text
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == [
        "GRAPHQL_VALIDATION_FAILED"
    ]
    spans = traced.spans()
    [request] = request_spans(spans)
    assert tree(spans, request) == ("POST /graphql", [("parse", []), ("validate", [])])
    assert attributes(request) == {
        "http.request.method": "POST",
        "url.path": "/graphql",
        "http.response.status_code": 200,
        "graphql.operation.name": "Bad",
        "graphql.operation.type": "query",
        "chatql.statements": 0,
    }


async def test_a_collector_that_is_down_costs_no_log_record_per_dropped_span(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider the server makes (OTLP in batches) with a queue of two spans and a
    collector nothing listens on: the spans past the queue are dropped without the SDK's
    warning per span (a log record each, on the request's path, in an outage)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0.1")
    caplog.set_level(logging.WARNING)
    async with serve(settings.model_copy(update={"tracing": True})) as api:
        for _ in range(3):
            assert await api.data("{ me { id } }") == {"me": None}
        dropped = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert dropped == []
