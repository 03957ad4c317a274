"""Cost budgets per viewer (issue 18): a token bucket charged each operation's estimated cost,
on every transport, with 429 and the IETF draft's RateLimit headers; refill on an injected
clock; shared by two servers on one PostgreSQL within the documented bound."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette

from app.settings import Settings
from schema.errors import OVER_BUDGET
from schema.limits import TOO_COSTLY
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, running
from tests.process import serve
from tests.schema.test_limits import too_complex
from tests.schema.test_subscriptions import wait_for_subscribers
from tests.ws import PROTOCOLS, asgi_socket

# Costs (schema.complexity): `me` is 1; `users(first: 2)` is 1 + 2 * (1 + 1) = 5.
ME = "query Me { me { username } }"
USERS = "query Users { users(first: 2) { edges { node { id } } } }"
CREATE = 'mutation Create { createConversation(input: {title: "t"}) { id } }'
POLICY = '"cost";q=10;w=10'


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    app: Starlette
    api: Api
    clock: Clock


@contextlib.asynccontextmanager
async def budgeted(
    settings: Settings, *, address: str = "203.0.113.9", **changes: Any
) -> AsyncIterator[Served]:
    """An app whose budgets refill 1 a second (60 a minute) up to 10, on an injected clock."""
    options = {"cost_budget_per_minute": 60, "cost_burst": 10, **changes}
    async with running(settings, **options) as app:
        clock = Clock()
        app.state.services.budgets.clock = clock
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Served(app, Api(client), clock)


def over(seconds: int) -> dict[str, Any]:
    message = OVER_BUDGET.format(seconds=seconds)
    return {
        "errors": [
            {"message": message, "extensions": {"code": "RATE_LIMITED", "retryAfter": seconds}}
        ]
    }


def limits(response: httpx.Response) -> tuple[int, str | None, str, str]:
    return (
        response.status_code,
        response.headers.get("retry-after"),
        response.headers["ratelimit-policy"],
        response.headers["ratelimit"],
    )


async def test_a_user_over_budget_gets_429_while_another_is_unaffected(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    ada = token_for(await make_user(sessionmaker))
    bob = token_for(await make_user(sessionmaker))
    async with budgeted(settings) as served:
        # The first goes Strawberry's way, the second the fast lane's: each charged once.
        first = await served.api.post(USERS, token=ada)
        assert limits(first) == (200, None, POLICY, '"cost";r=5;t=5')
        second = await served.api.post(USERS, token=ada)
        assert limits(second) == (200, None, POLICY, '"cost";r=0;t=10')
        refused = await served.api.post(USERS, token=ada)
        assert limits(refused) == (429, "5", POLICY, '"cost";r=0;t=10')
        assert refused.json() == over(5)
        got = await served.api.raw("GET", params={"query": ME}, token=ada, headers=GET)
        assert (limits(got), got.json()) == ((429, "1", POLICY, '"cost";r=0;t=10'), over(1))
        # Bob, and an anonymous client, have budgets of their own.
        ran = await served.api.post(USERS, token=bob)
        assert limits(ran) == (200, None, POLICY, '"cost";r=5;t=5')
        anonymous = await served.api.post(ME)
        assert limits(anonymous) == (200, None, POLICY, '"cost";r=9;t=1')
        assert anonymous.json() == {"data": {"me": None}}


GET = {"Content-Type": "application/json"}


async def test_the_bucket_refills_on_the_clock(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    ada = token_for(await make_user(sessionmaker))
    async with budgeted(settings) as served:
        for _ in range(2):
            assert (await served.api.post(USERS, token=ada)).status_code == 200
        assert limits(await served.api.post(USERS, token=ada))[:2] == (429, "5")
        served.clock.now += 4
        assert limits(await served.api.post(USERS, token=ada)) == (
            429,
            "1",
            POLICY,
            '"cost";r=4;t=6',
        )
        served.clock.now += 1
        assert limits(await served.api.post(USERS, token=ada)) == (
            200,
            None,
            POLICY,
            '"cost";r=0;t=10',
        )
        served.clock.now += 100  # never beyond the burst
        assert limits(await served.api.post(ME, token=ada))[3] == '"cost";r=9;t=1'


async def test_a_mutation_costs_at_least_the_minimum_and_a_refused_one_writes_nothing(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    ada = token_for(await make_user(sessionmaker))
    async with budgeted(settings, cost_mutation_minimum=6) as served:
        ran = await served.api.post(CREATE, token=ada)
        assert limits(ran) == (200, None, POLICY, '"cost";r=4;t=6')
        refused = await served.api.post(CREATE, token=ada)
        assert (limits(refused), refused.json()) == ((429, "2", POLICY, '"cost";r=4;t=6'), over(2))
        mine = await served.api.data("{ me { conversations { totalCount } } }", token=ada)
    assert mine == {"me": {"conversations": {"totalCount": 1}}}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_operations_over_websockets_are_charged(
    settings: Settings, sessionmaker: Sessionmaker, protocol: str
) -> None:
    ada = token_for(await make_user(sessionmaker))
    async with budgeted(settings) as served:
        async with asgi_socket(served.app, protocol) as socket:
            await socket.login(ada)
            for op_id in ("1", "2"):
                result = await socket.execute(op_id, USERS)
                assert "errors" not in result, result
            assert await socket.execute("3", USERS) == over(5)
        # The same bucket as over HTTP.
        assert limits(await served.api.post(ME, token=ada))[:2] == (429, "1")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscription_is_charged_per_event_and_ends_past_its_budget(
    settings: Settings, sessionmaker: Sessionmaker, protocol: str
) -> None:
    user = await make_user(sessionmaker)
    ada = token_for(user)
    conversation = gid("Conversation", await make_conversation(sessionmaker, owner_id=user))
    subscription = "subscription ($id: ID!) { messageAdded(conversationId: $id) { content } }"
    send = (
        "mutation ($id: ID!, $text: String!) "
        "{ sendMessage(input: {conversationId: $id, content: $text}) { id } }"
    )
    # Each event costs 1; each send 1 too (no minimum): 4 in all pays 2 sends and 2 events.
    async with budgeted(settings, cost_burst=4, cost_mutation_minimum=0) as served:
        async with asgi_socket(served.app, protocol) as socket:
            await socket.login(ada)
            await socket.subscribe("s", subscription, {"id": conversation})
            # Registered asynchronously: a send before that would not reach it.
            await wait_for_subscribers(served.app, 1)
            for text in ("one", "two"):
                sent = await served.api.post(send, {"id": conversation, "text": text}, token=ada)
                assert sent.status_code == 200, sent.text
                assert await socket.next_data("s") == {"messageAdded": {"content": text}}
            served.clock.now += 1  # one more token: a send, but no event after it
            sent = await served.api.post(send, {"id": conversation, "text": "three"}, token=ada)
            assert sent.status_code == 200, sent.text
            assert await socket.errors("s") == over(1)["errors"]


async def test_budgets_are_off_by_default(app: Starlette, api: Api) -> None:
    response = await api.post(ME)
    assert "ratelimit" not in response.headers
    assert app.state.services.budgets is None


@pytest.mark.postgres_only
async def test_two_servers_on_one_postgresql_stay_within_the_bound(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    """Two processes (each its own app, engine and buckets, as a second worker has) serve one
    user alternately, six requests each every half second of their clocks for five seconds.
    `schema.budgets` bounds what they admit over T seconds: burst + rate*T + (N-1)*(burst +
    rate*2 s) = 10 + 5 + 12 = 27; one bucket would admit 10 + 5 = 15."""
    ada = token_for(await make_user(sessionmaker))
    async with budgeted(settings) as one, budgeted(settings) as two:
        admitted = 0
        for _ in range(11):
            for _ in range(6):
                for served in (one, two):
                    response = await served.api.post(ME, token=ada)
                    assert response.status_code in (200, 429), response.text
                    admitted += response.status_code == 200
            for served in (one, two):
                served.clock.now += 0.5
        assert 15 <= admitted <= 27, admitted


@pytest.mark.postgres_only
async def test_two_server_processes_on_one_postgresql_stay_within_the_bound(
    settings: Settings, sessionmaker: Sessionmaker, tmp_path: Path
) -> None:
    """Two `python server.py serve` processes, one user's requests sent to each in turn as
    fast as they answer, on the real clock: over T seconds they admit at most
    burst + rate*T + (N-1)*(burst + rate*2 s), and at least what one bucket would."""
    ada = token_for(await make_user(sessionmaker))
    burst, rate = 20, 0.1
    budget = {"CHATQL_COST_BUDGET_PER_MINUTE": "6", "CHATQL_COST_BURST": str(burst)}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        serve(settings.database_url, tmp_path / "one", **budget) as one,
        serve(settings.database_url, tmp_path / "two", **budget) as two,
    ):
        headers = {"Authorization": f"Bearer {ada}"}
        admitted = 0
        async with httpx.AsyncClient(timeout=30) as client:
            started = time.monotonic()
            for _ in range(40):
                for served in (one, two):
                    response = await client.post(
                        f"{served.url}/graphql", json={"query": ME}, headers=headers
                    )
                    assert response.status_code in (200, 429), response.text
                    admitted += response.status_code == 200
            elapsed = time.monotonic() - started
    assert burst <= admitted <= burst + rate * elapsed + (burst + rate * 2) + 1e-9, (
        admitted,
        elapsed,
    )


async def test_an_operation_refused_before_it_runs_costs_nothing_and_still_gets_headers(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    ada = token_for(await make_user(sessionmaker))
    async with budgeted(settings, max_query_depth=2) as served:
        invalid = await served.api.post("{ nope }", token=ada)
        assert limits(invalid) == (200, None, POLICY, '"cost";r=10;t=0')
        assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        deep = await served.api.post(USERS, token=ada)
        assert limits(deep) == (200, None, POLICY, '"cost";r=10;t=0')
        assert deep.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert limits(await served.api.post(ME, token=ada))[3] == '"cost";r=9;t=1'


# Dearer than a full bucket of 10: 1 + 7 * (1 + 1) = 15; a subscription whose every event
# costs 1 + 1 + 1 + 10 * (1 + 1) = 23 (the message, its conversation, the connection).
DEAR = "query Dear { users(first: 7) { edges { node { id } } } }"
DEAR_EVENTS = (
    "subscription ($id: ID!) { messageAdded(conversationId: $id) "
    "{ conversation { messages(first: 10) { edges { node { id } } } } } }"
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_dearer_than_the_burst_is_too_complex_and_costs_nothing(
    settings: Settings, sessionmaker: Sessionmaker, protocol: str
) -> None:
    """No wait would let it run (it once got a Retry-After that could never succeed, and
    was charged each time): it is refused like any operation over the cost limit, which
    budgets lower to the burst. Over POST (Strawberry's way, then the fast lane's), GET and
    the socket (a query, and a subscription whose events would each cost too much)."""
    user = await make_user(sessionmaker)
    ada = token_for(user)
    conversation = gid("Conversation", await make_conversation(sessionmaker, owner_id=user))
    refused = {"errors": [too_complex(TOO_COSTLY, limit=10, actual=15)]}
    untouched = (200, None, POLICY, '"cost";r=10;t=0')
    async with budgeted(settings) as served:
        for _ in range(2):
            posted = await served.api.post(DEAR, token=ada)
            assert (limits(posted), posted.json()) == (untouched, refused)
        got = await served.api.raw("GET", params={"query": DEAR}, token=ada, headers=GET)
        assert (limits(got), got.json()) == (untouched, refused)
        async with asgi_socket(served.app, protocol) as socket:
            await socket.login(ada)
            assert await socket.execute("1", DEAR) == refused
            await socket.subscribe("2", DEAR_EVENTS, {"id": conversation})
            assert await socket.errors("2") == [too_complex(TOO_COSTLY, limit=10, actual=23)]
        assert limits(await served.api.post(ME, token=ada)) == (
            200,
            None,
            POLICY,
            '"cost";r=9;t=1',
        )


async def test_an_export_dearer_than_the_burst_runs_from_a_full_bucket_and_leaves_a_debt(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    """An export's size is the account's, not the client's choice: one dearer than the burst
    runs when the bucket is full, and the debt is paid back by waiting as long as
    Retry-After says (it was once refused even from a full bucket, and charged each time,
    so no wait was ever enough)."""
    user = await make_user(sessionmaker)
    await make_messages(
        sessionmaker, conversation_id=await make_conversation(sessionmaker, owner_id=user), count=14
    )
    headers = {"Authorization": f"Bearer {token_for(user)}"}
    async with budgeted(settings) as served:
        client = served.api.client
        first = await client.get("/export", headers=headers)
        assert (first.status_code, first.headers["ratelimit"]) == (200, '"cost";r=0;t=15')
        assert len(first.text.splitlines()) == 1
        second = await client.get("/export", headers=headers)
        assert (limits(second), second.json()) == ((429, "15", POLICY, '"cost";r=0;t=15'), over(15))
        served.clock.now += 14
        assert (await client.get("/export", headers=headers)).headers["retry-after"] == "1"
        served.clock.now += 1
        third = await client.get("/export", headers=headers)
        assert (third.status_code, third.headers["ratelimit"]) == (200, '"cost";r=0;t=15')


def test_a_mutation_minimum_above_the_burst_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="no mutation could ever be paid"):
        Settings(
            secret_key="key",
            cost_budget_per_minute=60,
            cost_burst=5,
            cost_mutation_minimum=6,
        )
