"""Operators' endpoints and records: /healthz, /readyz, /metrics, request ids, log lines."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import pytest
import strawberry
from prometheus_client import REGISTRY
from strawberry.types import ExecutionResult

from app.factory import create_app
from app.settings import Settings
from loaders import Loaders
from ops import metrics
from ops.health import ALIVE, NOT_READY, READY
from ops.instrument import OperationRecorder
from ops.logs import JsonFormatter, TextFormatter
from ops.record import RequestRecord
from schema.context import NO_LOADERS, Context
from tests.conftest import ApiFactory
from tests.factories import TEST_SECRET, Sessionmaker, make_user, token_for
from tests.helpers import Api, StatementCounter
from tests.process import free_port

ME = "query Me { me { username conversations { totalCount } } }"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def settings_for(url: str, *, ready_timeout: float = 2.0) -> Settings:
    return Settings(database_url=url, secret_key=TEST_SECRET, ready_timeout=ready_timeout)


# ---- health --------------------------------------------------------------------------------


async def test_healthz_and_readyz_answer_when_the_database_does(api: Api) -> None:
    health = await api.client.get("/healthz")
    ready = await api.client.get("/readyz")
    assert (health.status_code, health.text) == (200, ALIVE)
    assert (ready.status_code, ready.text) == (200, READY)


async def test_readyz_is_503_when_the_database_refuses_while_healthz_stays_200() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    async with client_for(settings_for(url)) as client:
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
    assert (ready.status_code, ready.text) == (503, NOT_READY)
    assert (health.status_code, health.text) == (200, ALIVE)


async def test_readyz_is_503_when_the_database_does_not_answer_in_time() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept the connection, then never say a word

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/silent"
    try:
        async with client_for(settings_for(url, ready_timeout=0.3)) as client:
            ready = await client.get("/readyz")
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert (ready.status_code, ready.text) == (503, NOT_READY)
    # The probe reached the silent database (the real-time listener may have knocked too).
    assert len(accepted) >= 1


# ---- request ids ---------------------------------------------------------------------------


async def test_a_sane_incoming_request_id_is_echoed(api: Api) -> None:
    response = await api.post(ME, headers={"X-Request-ID": "edge-7f3a:42"})
    assert response.headers["x-request-id"] == "edge-7f3a:42"


@pytest.mark.parametrize(
    "incoming",
    [pytest.param("x" * 129, id="too-long"), pytest.param("a b", id="space"), None],
)
async def test_a_missing_or_insane_request_id_is_replaced_by_a_new_one(
    api: Api, incoming: str | None
) -> None:
    headers = {"X-Request-ID": incoming} if incoming is not None else {}
    first = await api.post(ME, headers=headers)
    second = await api.post(ME, headers=headers)
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert [bool(GENERATED_ID.fullmatch(value)) for value in ids] == [True, True]
    assert ids[0] != ids[1]


async def test_every_response_carries_a_request_id(api: Api) -> None:
    for path in ["/healthz", "/readyz", "/metrics", "/explorer/explorer.js", "/nowhere"]:
        response = await api.client.get(path)
        assert GENERATED_ID.fullmatch(response.headers["x-request-id"]), path


# ---- metrics -------------------------------------------------------------------------------


async def test_metrics_count_requests_by_operation_and_outcome(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    before = {
        outcome: sample("chatql_graphql_requests_total", operation="Me", outcome=outcome)
        for outcome in ["ok", "UNAUTHENTICATED"]
    }
    bad_json_before = sample("chatql_graphql_requests_total", operation="none", outcome="http_400")
    latency_before = sample("chatql_graphql_request_duration_seconds_count", operation="Me")

    await api.data(ME, token=token_for(ada))
    await api.data(ME, token=token_for(ada))
    await api.post(ME, token="not-a-token")
    await api.client.post("/graphql", content=b"{", headers={"content-type": "application/json"})

    after = {
        outcome: sample("chatql_graphql_requests_total", operation="Me", outcome=outcome)
        for outcome in ["ok", "UNAUTHENTICATED"]
    }
    assert {key: after[key] - before[key] for key in after} == {"ok": 2, "UNAUTHENTICATED": 1}
    assert (
        sample("chatql_graphql_requests_total", operation="none", outcome="http_400")
        - bad_json_before
        == 1
    )
    assert sample("chatql_graphql_request_duration_seconds_count", operation="Me") == (
        latency_before + 3
    )


PERSISTED = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
JSON_POST = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "params", "body", "headers", "status", "outcome"),
    [
        pytest.param("POST", None, b"{}", JSON_POST, 400, "http_400", id="no-query"),
        pytest.param(
            "GET",
            {"query": 'mutation M { logIn(input: {login: "a", password: "b"}) { token } }'},
            None,
            {"x-requested-with": "x"},
            405,
            "http_405",
            id="mutation-over-get",
        ),
        pytest.param(
            "POST",
            None,
            json.dumps({"extensions": PERSISTED}).encode(),
            JSON_POST,
            200,
            "PERSISTED_QUERY_NOT_FOUND",
            id="unknown-persisted-query",
        ),
        pytest.param(
            "POST",
            None,
            json.dumps({"query": "query A { me { id } } query B { me { id } }"}).encode(),
            JSON_POST,
            400,
            "http_400",
            id="several-operations-unnamed",
        ),
        pytest.param("GET", {"query": "{ me { id } }"}, None, {}, 400, "http_400", id="csrf"),
    ],
)
async def test_a_request_refused_before_it_ran_is_logged_and_counted_with_its_outcome(
    api: Api,
    caplog: pytest.LogCaptureFixture,
    method: str,
    params: dict[str, str] | None,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    outcome: str,
) -> None:
    caplog.set_level(logging.INFO, logger="chatql.request")
    before = sample("chatql_graphql_requests_total", operation="none", outcome=outcome)
    response = await api.client.request(
        method, "/graphql", params=params, content=body, headers=headers
    )
    [line] = [record for record in caplog.records if record.name == "chatql.request"]
    fields = dict(line.fields)  # type: ignore[attr-defined]
    assert (response.status_code, fields["status"]) == (status, status)
    assert (fields["operation"], fields["operation_type"], fields["outcome"]) == (
        None,
        None,
        outcome,
    )
    after = sample("chatql_graphql_requests_total", operation="none", outcome=outcome)
    assert after - before == 1


async def test_the_statements_histogram_counts_each_requests_sql(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    count_before = sample("chatql_graphql_sql_statements_count")
    sum_before = sample("chatql_graphql_sql_statements_sum")
    statements.reset()

    await api.data(ME, token=token_for(ada))

    assert statements.count > 0
    assert sample("chatql_graphql_sql_statements_count") - count_before == 1
    assert sample("chatql_graphql_sql_statements_sum") - sum_before == statements.count


async def test_the_pool_gauge_returns_to_where_it_was_after_requests(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    before = sample("chatql_db_pool_connections_in_use")
    async with sessionmaker() as session:
        await session.connection()
        assert sample("chatql_db_pool_connections_in_use") == before + 1
    await api.data(ME, token=token_for(ada))
    assert sample("chatql_db_pool_connections_in_use") == before


@strawberry.type
class TinyQuery:
    ok: bool = True


@strawberry.type
class TinySubscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncGenerator[int, None]:
        for tick in range(3):
            yield tick


TINY = strawberry.Schema(
    query=TinyQuery, subscription=TinySubscription, extensions=[OperationRecorder]
)


async def test_a_subscription_is_counted_open_until_its_stream_ends() -> None:
    before = sample("chatql_subscriptions_open")
    stream = await TINY.subscribe("subscription { ticks }")
    assert not isinstance(stream, ExecutionResult)
    seen = []
    async for result in stream:
        seen.append((result.data, sample("chatql_subscriptions_open") - before))
    assert seen == [({"ticks": 0}, 1), ({"ticks": 1}, 1), ({"ticks": 2}, 1)]
    assert sample("chatql_subscriptions_open") == before


async def test_a_subscriber_who_leaves_early_is_no_longer_counted() -> None:
    before = sample("chatql_subscriptions_open")
    stream = await TINY.subscribe("subscription { ticks }")
    assert not isinstance(stream, ExecutionResult)
    first = await anext(stream)
    during = sample("chatql_subscriptions_open") - before
    await stream.aclose()
    assert (first.data, during, sample("chatql_subscriptions_open") - before) == (
        {"ticks": 0},
        1,
        0,
    )


async def test_queries_and_invalid_subscriptions_are_not_counted() -> None:
    before = sample("chatql_subscriptions_open")
    query = await TINY.execute("{ ok }", root_value=TinyQuery())
    invalid = await TINY.subscribe("subscription { nope }")
    results = [invalid] if isinstance(invalid, ExecutionResult) else [r async for r in invalid]
    assert query.data == {"ok": True}
    assert [bool(result.errors) for result in results] == [True]
    assert sample("chatql_subscriptions_open") == before


async def test_metrics_endpoint_exposes_every_metric_in_the_text_format(api: Api) -> None:
    await api.post(ME)
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = set(re.findall(r"^# TYPE (chatql_\w+) (\w+)$", response.text, re.MULTILINE))
    assert families >= {
        ("chatql_graphql_requests_total", "counter"),
        ("chatql_graphql_request_duration_seconds", "histogram"),
        ("chatql_graphql_sql_statements", "histogram"),
        ("chatql_subscriptions_open", "gauge"),
        ("chatql_db_pool_connections_in_use", "gauge"),
    }


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="none"),
        pytest.param(b"Bearer wrong", id="wrong-token"),
        pytest.param(b"Bearer scrape-m", id="a-prefix-of-the-token"),
        pytest.param(b"Bearer scrape-me-too", id="the-token-and-more"),
        pytest.param(b"Basic c2NyYXBlLW1l", id="another-scheme"),
        pytest.param(b"scrape-me", id="no-scheme"),
        pytest.param("Bearer scrapé-me".encode(), id="not-ascii"),
    ],
)
async def test_metrics_with_a_token_refuse_anyone_without_it(
    other_app: ApiFactory, authorization: bytes | None
) -> None:
    headers = {b"Authorization": authorization} if authorization is not None else {}
    async with other_app(metrics_token="scrape-me") as api:
        response = await api.client.get("/metrics", headers=headers)
    assert (response.status_code, response.text) == (401, metrics.UNAUTHORIZED)
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
async def test_metrics_with_a_token_answer_its_bearer(other_app: ApiFactory, scheme: str) -> None:
    async with other_app(metrics_token="scrape-me") as api:
        await api.post(ME)
        response = await api.client.get(
            "/metrics", headers={"Authorization": f"{scheme} scrape-me"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE chatql_graphql_requests_total counter" in response.text


def test_operation_names_become_labels_up_to_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_names", set())
    monkeypatch.setattr(metrics, "MAX_OPERATION_NAMES", 2)

    def label(name: str | None, operation_type: str | None = "query") -> str:
        record = RequestRecord(
            request_id="r", started=0, operation=name, operation_type=operation_type
        )
        return metrics.operation_label(record)

    assert [label("A"), label("B"), label("C"), label("A"), label("no-dash"), label(None)] == [
        "A",
        "B",
        "other",
        "A",
        "other",
        "anonymous",
    ]
    assert label(None, operation_type=None) == "none"  # refused, or did not parse


# ---- logs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("times", [1, 2], ids=["first", "again, on the fast lane"])
async def test_each_request_writes_one_log_line_with_its_id_operation_and_cost(
    api: Api, sessionmaker: Sessionmaker, caplog: pytest.LogCaptureFixture, times: int
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    caplog.set_level(logging.INFO, logger="chatql.request")
    for _ in range(times - 1):
        await api.post(ME, token=token_for(ada))
    caplog.clear()
    response = await api.post(ME, token=token_for(ada), headers={"X-Request-ID": "req-1"})
    lines = [record for record in caplog.records if record.name == "chatql.request"]
    assert len(lines) == 1
    fields = dict(lines[0].fields)  # type: ignore[attr-defined]
    assert fields.pop("duration_ms") >= 0
    assert fields.pop("statements") > 0
    assert (response.status_code, fields) == (
        200,
        {
            "request_id": "req-1",
            "method": "POST",
            "path": "/graphql",
            "status": 200,
            "operation": "Me",
            "operation_type": "query",
            "outcome": "ok",
        },
    )


async def test_probes_are_logged_at_debug_only(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="chatql.request")
    await api.client.get("/healthz")
    requests = [r for r in caplog.records if r.name == "chatql.request"]
    assert [(r.levelname, r.getMessage()) for r in requests] == [("DEBUG", "GET /healthz 200")]


def log_record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("chatql.request", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
    record.created = 1_790_000_000.5
    record.fields = fields
    return record


def test_the_json_format_is_one_object_a_line_with_the_fields_on_top() -> None:
    line = JsonFormatter().format(log_record(request_id="r1", statements=3))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-09-21T14:13:20.500+00:00",
        "level": "info",
        "logger": "chatql.request",
        "pid": os.getpid(),
        "message": "GET /x",
        "request_id": "r1",
        "statements": 3,
    }


def test_the_text_format_puts_the_fields_after_the_message() -> None:
    line = TextFormatter().format(log_record(request_id="r1", statements=3))
    assert line.endswith("INFO    chatql.request: GET /x  request_id=r1 statements=3")


async def test_a_finished_request_keeps_nothing_of_its_answer_alive(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    # Timers and tasks copy the request's context (a pooled connection's idle timer did):
    # through the request record they must not reach the loaders and the rows they hold.
    viewer = await make_user(sessionmaker, is_admin=True)
    for _ in range(3):
        answer = await api.data(
            "{ users { edges { node { conversations { edges { node { messages "
            "{ edges { node { content } } } } } } } } } }",
            token=token_for(viewer),
        )
        assert answer["users"]["edges"]
    await asyncio.sleep(0)
    gc.collect()
    alive = [
        item
        for item in gc.get_objects()
        if isinstance(item, Loaders | Context) and item is not NO_LOADERS
    ]
    assert alive == []  # (NO_LOADERS, a WebSocket connection's empty set, is one for all)
