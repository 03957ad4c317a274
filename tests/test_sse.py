"""GraphQL over Server-Sent Events (graphql-sse, "distinct connections" mode) against the app
served by uvicorn over real HTTP, with the `graphql-sse` npm client and with a raw reader of
the stream, on both databases: every operation goes through the pipeline of every transport."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update
from starlette.applications import Starlette

from app.settings import Settings
from db.models import User
from schema.errors import BAD_TOKEN, LOGIN_REQUIRED, NOT_FOUND, TOO_SLOW
from schema.operation import OPERATION_NAME_REQUIRED
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api, running
from tests.schema.test_subscriptions import MESSAGE_ADDED, send, wait_for_subscribers
from tests.sse import EVENT_STREAM, Event, node_client, real_client, served, sse
from tests.test_budgets import USERS, budgeted, over
from tests.test_trusted_documents import ME as TRUSTED_ME
from tests.test_trusted_documents import REQUIRED, UNTRUSTED, apollo, trusted
from tests.ws import PROTOCOLS, TRANSPORT_WS, asgi_socket
from transport.view import CSRF_REFUSED, METHOD_NOT_ALLOWED, MUTATION_OVER_GET

PREFLIGHT = {"X-Requested-With": "test"}
ADDED_IDS = "subscription ($id: ID!) { messageAdded(conversationId: $id) { id content } }"
TOO_DEEP = (
    "subscription ($id: ID!) { messageAdded(conversationId: $id) { conversation { owner {"
    " conversations { edges { node { owner { conversations { edges { node { owner {"
    " conversations { edges { node { title } } } } } } } } } } } } } } }"
)

TOO_DEEP_QUERY = (
    "{ me { conversations { edges { node { owner { conversations { edges { node { owner"
    " { conversations { edges { node { title } } } } } } } } } } } } }"
)


def unauthenticated(message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]}


async def owner_and_conversation(sessionmaker: Sessionmaker) -> tuple[int, str]:
    user = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=user, title="Lovelace")
    return user, conversation


# ---- with the graphql-sse client -------------------------------------------------------------


async def test_the_graphql_sse_client_receives_each_message_then_the_end(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    token = token_for(user)
    variables = {"id": gid("Conversation", conversation)}
    async with served(app) as url, node_client(url, ADDED_IDS, variables, token=token) as client:
        await wait_for_subscribers(app, 1)
        first = await send(api, token, conversation, "one")
        second = await send(api, token, conversation, "two")
        received = [await client.receive(), await client.receive()]
        async with sessionmaker() as session, session.begin():
            await session.execute(update(User).where(User.id == user).values(is_active=False))
        await app.state.watch.sweep()
        ended = [await client.receive(), await client.receive()]
    assert received == [
        {"next": {"data": {"messageAdded": {"id": first, "content": "one"}}}},
        {"next": {"data": {"messageAdded": {"id": second, "content": "two"}}}},
    ]
    assert ended == [{"next": unauthenticated(BAD_TOKEN)}, {"complete": True}]
    assert app.state.services.broker.hub.subscriber_count == 0


async def test_the_graphql_sse_client_runs_a_query(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user, _ = await owner_and_conversation(sessionmaker)
    query = "{ me { username conversations { edges { node { title } } } } }"
    async with served(app) as url, node_client(url, query, token=token_for(user)) as client:
        events = [await client.receive(), await client.receive()]
    me = {"username": "ada", "conversations": {"edges": [{"node": {"title": "Lovelace"}}]}}
    assert events == [{"next": {"data": {"me": me}}}, {"complete": True}]


async def test_the_graphql_sse_client_is_told_of_a_bad_token_and_of_a_missing_login(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    variables = {"id": gid("Conversation", conversation)}
    expired = token_for(user, ttl=-10)
    async with served(app) as url:
        async with node_client(url, ADDED_IDS, variables, token=expired) as client:
            refused = await client.receive()
        async with node_client(url, ADDED_IDS, variables) as client:
            anonymous = [await client.receive(), await client.receive()]
    # Refused before it runs (the token), or ended by the resolver as it begins (no login).
    assert refused == {"error": {"status": 400, "body": unauthenticated(BAD_TOKEN)}}
    assert anonymous == [{"next": unauthenticated(LOGIN_REQUIRED)}, {"complete": True}]
    assert app.state.services.broker.hub.subscriber_count == 0


# ---- the stream, read raw --------------------------------------------------------------------


async def test_a_query_and_a_mutation_are_one_next_then_complete(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    mutation = (
        'mutation ($id: ID!) { sendMessage(input: {conversationId: $id, content: "hi",'
        ' clientId: "c1"}) { content clientId conversation { messageCount } } }'
    )
    async with served(app) as url, real_client(url) as client:
        async with sse(client, "{ me { username } }", token=token_for(user)) as stream:
            query = await stream.rest()
        variables = {"id": gid("Conversation", conversation)}
        async with sse(client, mutation, variables, token=token_for(user)) as stream:
            sent = await stream.rest()
        # The protocol's GET: the request in the query string (and CSRF's rule, as for GET).
        got = await client.get(
            "/graphql",
            params={"query": "{ me { username } }"},
            headers={**EVENT_STREAM, **PREFLIGHT, "Authorization": f"Bearer {token_for(user)}"},
        )
    assert query == [Event("next", {"data": {"me": {"username": "ada"}}}), Event("complete")]
    assert (got.status_code, got.headers["content-type"], got.text) == (
        200,
        "text/event-stream",
        'event: next\r\ndata: {"data":{"me":{"username":"ada"}}}\r\n\r\n'
        "event: complete\r\ndata: \r\n\r\n",
    )
    message = {"content": "hi", "clientId": "c1", "conversation": {"messageCount": 1}}
    assert sent == [Event("next", {"data": {"sendMessage": message}}), Event("complete")]


async def test_a_subscription_ends_with_unauthenticated_when_its_token_expires(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    variables = {"id": gid("Conversation", conversation)}
    async with served(app) as url, real_client(url) as client:
        async with sse(client, ADDED_IDS, variables, token=token_for(user, ttl=2)) as stream:
            events = await stream.rest()
    assert events == [Event("next", unauthenticated(BAD_TOKEN)), Event("complete")]
    assert app.state.services.broker.hub.subscriber_count == 0


async def test_a_deactivated_users_stream_ends_at_their_next_message(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    admin = await make_user(sessionmaker, is_admin=True)
    variables = {"id": gid("Conversation", conversation)}
    async with served(app) as url, real_client(url) as client:
        async with sse(client, ADDED_IDS, variables, token=token_for(user)) as stream:
            await wait_for_subscribers(app, 1)
            async with sessionmaker() as session, session.begin():
                await session.execute(update(User).where(User.id == user).values(is_active=False))
            await send(api, token_for(admin), conversation, "after")
            events = await stream.rest()
    assert events == [Event("next", unauthenticated(BAD_TOKEN)), Event("complete")]


async def test_a_subscriber_too_slow_is_ended_with_an_error(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    hub = app.state.services.broker.hub
    variables = {"id": gid("Conversation", conversation)}
    async with served(app) as url, real_client(url) as client:
        async with sse(client, ADDED_IDS, variables, token=token_for(user)) as stream:
            await wait_for_subscribers(app, 1)
            for n in range(hub.queue_size + 1):
                hub.deliver(conversation, [n + 1_000_000])
            events = await stream.rest()
    error = {"message": TOO_SLOW, "extensions": {"code": "SUBSCRIBER_TOO_SLOW", "queueSize": 1000}}
    assert events == [Event("next", {"errors": [error]}), Event("complete")]
    assert hub.subscriber_count == 0


async def test_a_client_that_disconnects_leaves_no_subscription_behind(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    variables = {"id": gid("Conversation", conversation)}
    hub = app.state.services.broker.hub
    async with served(app) as url, real_client(url) as client:
        for _ in range(3):
            async with sse(client, ADDED_IDS, variables, token=token_for(user)) as stream:
                await wait_for_subscribers(app, 1)
                await send(api, token_for(user), conversation, "seen")
                assert (await stream.receive()).kind == "next"
            # Closed by the client, mid-stream: the server hears of it and unsubscribes.
            for _ in range(500):
                if hub.subscriber_count == 0:
                    break
                await asyncio.sleep(0.01)
            assert hub.subscriber_count == 0


async def test_a_quiet_stream_carries_heartbeats(settings: Settings) -> None:
    async with running(settings, sse_heartbeat=0.05) as app:
        user, conversation = await owner_and_conversation(app.state.services.sessionmaker)
        variables = {"id": gid("Conversation", conversation)}
        async with served(app) as url, real_client(url) as client:
            async with sse(client, ADDED_IDS, variables, token=token_for(user)) as stream:
                beats = [await stream.receive(comments=True) for _ in range(3)]
    assert beats == [Event("comment", "ping")] * 3


async def test_every_subscription_answers_alike_over_sse_and_a_websocket(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    token = token_for(user)
    variables = {"id": gid("Conversation", conversation)}
    async with (
        served(app) as url,
        real_client(url) as client,
        sse(client, MESSAGE_ADDED, variables, token=token) as stream,
        asgi_socket(app, TRANSPORT_WS) as socket,
    ):
        await socket.login(token)
        await socket.subscribe("1", MESSAGE_ADDED, variables)
        await wait_for_subscribers(app, 2)
        over_sse, over_ws = [], []
        # One at a time: nested fields (messageCount) are read when each event is delivered.
        for content in ("one", "two", "three"):
            await send(api, token, conversation, content)
            over_sse.append((await stream.receive()).data)
            over_ws.append({"data": await socket.next_data("1")})
    assert over_sse == over_ws
    assert [result["data"]["messageAdded"]["content"] for result in over_sse] == [
        "one",
        "two",
        "three",
    ]


# ---- refused before the stream: answered as HTTP answers it ------------------------------------


def error_of(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}


REFUSALS = [
    pytest.param(
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        400,
        error_of("Unable to parse request body as JSON", "BAD_REQUEST"),
        id="not JSON",
    ),
    pytest.param(
        {
            "content": json.dumps({"query": "{ me { id } }"}),
            "headers": {"Content-Type": "text/plain"},
        },
        400,
        error_of(CSRF_REFUSED, "BAD_REQUEST"),
        id="CSRF",
    ),
    pytest.param(
        {"method": "PUT", "content": b"{}", "headers": {"Content-Type": "application/json"}},
        405,
        error_of(METHOD_NOT_ALLOWED, "BAD_REQUEST"),
        id="PUT",
    ),
    pytest.param(
        {"method": "GET", "params": {"query": "mutation { logOut }"}, "headers": PREFLIGHT},
        405,
        error_of(MUTATION_OVER_GET, "BAD_REQUEST"),
        id="mutation over GET",
    ),
    pytest.param(
        {"json": {"query": "query A { me { id } }", "operationName": "B"}},
        400,
        error_of('Unknown operation named "B".', "BAD_REQUEST"),
        id="unknown operation",
    ),
    pytest.param(
        {"json": {"query": "query A { me { id } } query B { me { id } }"}},
        400,
        error_of(OPERATION_NAME_REQUIRED, "BAD_REQUEST"),
        id="two operations, no name",
    ),
    pytest.param(
        {"json": {"query": "x" * 2_000_000}},
        413,
        error_of(
            "The request body has 2000012 bytes; the limit is 1048576.",
            "QUERY_TOO_COMPLEX",
            limit=1048576,
            actual=2000012,
        ),
        id="body too large",
    ),
]


@pytest.mark.parametrize(("request_options", "status", "body"), REFUSALS)
async def test_a_malformed_request_is_refused_with_its_http_status(
    app: Starlette, request_options: dict[str, Any], status: int, body: dict[str, Any]
) -> None:
    options = dict(request_options)
    headers = {**EVENT_STREAM, **options.pop("headers", {})}
    method = options.pop("method", "GET" if "params" in options else "POST")
    async with served(app) as url, real_client(url) as client:
        response = await client.request(method, "/graphql", headers=headers, **options)
    assert (response.status_code, response.json()) == (status, body)
    assert response.headers["content-type"].startswith("application/json")


async def test_an_operation_that_cannot_run_is_refused_before_the_stream(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    variables = {"id": gid("Conversation", conversation)}
    cases = [
        ("{ me { ", None, token_for(user)),
        ("{ me { usernam } }", None, token_for(user)),
        (TOO_DEEP, variables, token_for(user)),
        (TOO_DEEP_QUERY, None, token_for(user)),
        (ADDED_IDS, variables, token_for(user, ttl=-10)),
    ]
    async with served(app) as url, real_client(url) as client:
        answers = []
        for query, bound, token in cases:
            headers = dict(EVENT_STREAM)
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            response = await client.post(
                "/graphql", json={"query": query, "variables": bound}, headers=headers
            )
            assert response.headers["content-type"].startswith("application/json")
            answers.append((response.status_code, codes_and_messages(response.json())))
    assert answers == [
        (400, [("GRAPHQL_PARSE_FAILED", "Syntax Error: Expected Name, found <EOF>.")]),
        (400, [("GRAPHQL_VALIDATION_FAILED", "Cannot query field 'usernam' on type 'User'.")]),
        (400, [("QUERY_TOO_COMPLEX", "The query is 15 levels deep; the limit is 12.")]),
        (400, [("QUERY_TOO_COMPLEX", "The query is 13 levels deep; the limit is 12.")]),
        (400, [("UNAUTHENTICATED", BAD_TOKEN)]),
    ]
    assert app.state.services.broker.hub.subscriber_count == 0


def codes_and_messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    assert "data" not in body, body
    return [(error["extensions"]["code"], error["message"]) for error in body["errors"]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscription_over_a_limit_is_refused_over_a_websocket_too(
    app: Starlette, sessionmaker: Sessionmaker, protocol: str
) -> None:
    user, conversation = await owner_and_conversation(sessionmaker)
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(user))
        await socket.subscribe("1", TOO_DEEP, {"id": gid("Conversation", conversation)})
        errors = await socket.errors("1")
    assert [(error["extensions"]["code"], error["message"]) for error in errors] == [
        ("QUERY_TOO_COMPLEX", "The query is 15 levels deep; the limit is 12.")
    ]
    assert app.state.services.broker.hub.subscriber_count == 0


async def test_what_a_subscription_raises_as_it_begins_is_its_one_event(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    _, conversation = await owner_and_conversation(sessionmaker)
    other = await make_user(sessionmaker)
    variables = {"id": gid("Conversation", conversation)}
    cases = [
        (variables, token_for(other)),
        (variables, None),
        ({"id": "nonsense"}, token_for(other)),
    ]
    async with served(app) as url, real_client(url) as client:
        answers = []
        for bound, token in cases:
            async with sse(client, ADDED_IDS, bound, token=token) as stream:
                answers.append(await stream.rest())
    reason = {"conversationId": "not a valid id"}
    assert answers == [
        [Event("next", error_of(NOT_FOUND, "NOT_FOUND")), Event("complete")],
        [Event("next", error_of(LOGIN_REQUIRED, "UNAUTHENTICATED")), Event("complete")],
        [
            Event(
                "next",
                error_of("conversationId: not a valid id", "BAD_USER_INPUT", fields=reason),
            ),
            Event("complete"),
        ],
    ]
    assert app.state.services.broker.hub.subscriber_count == 0


async def test_a_stream_writes_one_log_line_with_its_protocol_and_is_counted(
    app: Starlette, sessionmaker: Sessionmaker, caplog: pytest.LogCaptureFixture
) -> None:
    user, _ = await owner_and_conversation(sessionmaker)
    labels = {"operation": "SseMe", "outcome": "ok"}
    before = REGISTRY.get_sample_value("chatql_graphql_requests_total", labels) or 0.0
    caplog.set_level(logging.INFO, logger="chatql.request")
    async with served(app) as url, real_client(url) as client:
        async with sse(client, "query SseMe { me { username } }", token=token_for(user)) as stream:
            await stream.rest()
    lines = [dict(r.fields) for r in caplog.records if r.name == "chatql.request"]  # type: ignore[attr-defined]
    for line in lines:
        assert line.pop("duration_ms") >= 0
        line.pop("request_id")
        assert line.pop("statements") > 0
    assert lines == [
        {
            "method": "POST",
            "path": "/graphql",
            "status": 200,
            "protocol": "graphql-sse",
            "operation": "SseMe",
            "operation_type": "query",
            "outcome": "ok",
        }
    ]
    after = REGISTRY.get_sample_value("chatql_graphql_requests_total", labels) or 0.0
    assert after == before + 1


async def test_trusted_documents_admit_over_sse_as_over_http(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    token = token_for(await make_user(sessionmaker, username="ada"))
    headers = {**EVENT_STREAM, "Authorization": f"Bearer {token}"}
    async with trusted(settings, "enforce") as enforce:
        await enforce.load("web", apollo(TRUSTED_ME))
        async with served(enforce.app) as url, real_client(url) as client:
            refused = await client.post("/graphql", json={"query": UNTRUSTED}, headers=headers)
            async with sse(client, TRUSTED_ME, token=token) as stream:
                ran = await stream.rest()
    assert (refused.status_code, refused.json()) == (400, REQUIRED)
    assert ran == [Event("next", {"data": {"me": {"username": "ada"}}}), Event("complete")]


async def test_an_operation_over_budget_is_429_before_the_stream(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    token = token_for(await make_user(sessionmaker))
    headers = {**EVENT_STREAM, "Authorization": f"Bearer {token}"}
    async with (
        budgeted(settings) as budgets,
        served(budgets.app) as url,
        real_client(url) as client,
    ):
        ran = []
        for _ in range(2):
            async with sse(client, USERS, token=token) as stream:
                ran.append([event.kind for event in await stream.rest()])
        refused = await client.post("/graphql", json={"query": USERS}, headers=headers)
    assert ran == [["next", "complete"]] * 2
    assert (refused.status_code, refused.headers["retry-after"], refused.json()) == (
        429,
        "5",
        over(5),
    )
