"""Queries and mutations over a long-lived WebSocket get what the same operation gets over HTTP:
the token checked again, fresh loaders, coded and masked errors, a log line and metrics; and
the socket survives what a client may send (a long operation name, a slow init)."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app.settings import Settings
from db.models import Conversation, Message
from schema.errors import BAD_TOKEN, INTERNAL
from schema.limits import BAD_OPERATION_NAME, TEXT_REFUSED
from schema.validation import NOT_UNICODE
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, running
from tests.ws import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, GraphQLSocket, asgi_socket
from transport.websockets import BAD_EXTENSIONS, BAD_QUERY, BAD_VARIABLES, NO_QUERY

protocols = pytest.mark.parametrize("protocol", PROTOCOLS)

CREATE = 'mutation { createConversation(input: {title: "After"}) { id } }'
SEND = 'mutation ($id: ID!) { sendMessage(input: {conversationId: $id, content: "x"}) { id } }'
CONVERSATION = """
query ($id: ID!) {
  conversation(id: $id) { title messages(last: 5) { edges { node { content } } } }
}
"""


async def still_answers(socket: GraphQLSocket) -> None:
    """The socket goes on: ada's next query is answered."""
    assert await socket.execute("next", "{ me { username } }") == {
        "data": {"me": {"username": "ada"}}
    }


def codes(result: dict[str, object]) -> list[object]:
    errors = result.get("errors")
    assert isinstance(errors, list), result
    return [error["extensions"]["code"] for error in errors]


async def counts(sessionmaker: Sessionmaker) -> tuple[int, int]:
    async with sessionmaker() as session:
        conversations = await session.scalar(select(func.count()).select_from(Conversation))
        messages = await session.scalar(select(func.count()).select_from(Message))
    return int(conversations or 0), int(messages or 0)


@protocols
@pytest.mark.parametrize("how", ["deactivated", "deleted"])
async def test_an_account_closed_after_connecting_can_no_longer_write_over_its_socket(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, protocol: str, how: str
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    lee = await make_user(sessionmaker, username="lee")
    conversation = await make_conversation(sessionmaker, owner_id=lee)
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(lee))
        assert "errors" not in await socket.execute("0", "{ me { username } }")
        if how == "deactivated":
            mutation = (
                "mutation ($id: ID!) { updateUser(id: $id, input: {isActive: false}) { id } }"
            )
        else:
            mutation = "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }"
        await api.data(mutation, {"id": gid("User", lee)}, token=token_for(admin))
        before = await counts(sessionmaker)
        for number, (query, variables) in enumerate(
            [(CREATE, None), (SEND, {"id": gid("Conversation", conversation)})], start=1
        ):
            result = await socket.execute(str(number), query, variables)
            assert result == {
                "errors": [
                    {"message": BAD_TOKEN, "extensions": {"code": "UNAUTHENTICATED"}},
                ],
            }
        assert await counts(sessionmaker) == before


@protocols
async def test_each_operation_on_a_socket_reads_afresh(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, protocol: str
) -> None:
    alice = await make_user(sessionmaker, username="alice")
    bob = await make_user(sessionmaker, username="bob")
    conversation = await make_conversation(sessionmaker, owner_id=alice, title="Moving")
    await make_messages(sessionmaker, conversation_id=conversation, count=1, content="first")
    variables = {"id": gid("Conversation", conversation)}
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(alice))
        before = await socket.execute("1", CONVERSATION, variables)
        assert before == {
            "data": {
                "conversation": {
                    "title": "Moving",
                    "messages": {"edges": [{"node": {"content": "first"}}]},
                }
            }
        }
        await api.data(
            "mutation ($c: ID!, $to: ID!) { transferConversation(input: "
            "{conversationId: $c, toUserId: $to}) { id } }",
            {"c": variables["id"], "to": gid("User", bob)},
            token=token_for(alice),
        )
        await api.data(SEND, variables, token=token_for(bob))
        after = await socket.execute("2", CONVERSATION, variables)
        assert codes(after) == ["NOT_FOUND"]
        assert "bob" not in repr(after) and '"x"' not in repr(after)


@protocols
async def test_unexpected_errors_over_a_socket_are_masked_and_coded(
    app: Starlette, engine: AsyncEngine, sessionmaker: Sessionmaker, protocol: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=ada)
    # A real fault: the table the messages live in is gone.
    async with engine.begin() as connection:
        await connection.execute(text("ALTER TABLE messages RENAME TO messages_gone"))
    try:
        async with asgi_socket(app, protocol) as socket:
            await socket.login(token_for(ada))
            result = await socket.execute(
                "1",
                "query ($id: ID!) { conversation(id: $id) { messages { totalCount } } }",
                {"id": gid("Conversation", conversation)},
            )
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE messages_gone RENAME TO messages"))
    errors = result["errors"]
    assert [(e["message"], e["extensions"]["code"]) for e in errors] == [
        (INTERNAL, "INTERNAL_SERVER_ERROR")
    ]
    assert errors[0]["extensions"]["requestId"]
    assert "messages" not in repr(result).replace("'messages'", "")
    assert "SELECT" not in repr(result) and "sqlite" not in repr(result).lower()


@protocols
async def test_validation_errors_over_a_socket_are_coded_without_suggestions(
    app: Starlette, sessionmaker: Sessionmaker, protocol: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(ada))
        result = await socket.execute("1", "{ me { usernam } }")
        subscription = await socket.execute("2", "subscription { messageAdded { id } }")
    assert result == {
        "errors": [
            {
                "message": "Cannot query field 'usernam' on type 'User'.",
                "locations": [{"line": 1, "column": 8}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ]
    }
    assert codes(subscription) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "Did you mean" not in repr(subscription)


@protocols
async def test_too_many_operations_on_one_socket_is_a_coded_refusal(
    settings: Settings, sessionmaker: Sessionmaker, protocol: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=ada)
    async with (
        running(settings, ws_max_operations=1) as application,
        asgi_socket(application, protocol) as socket,
    ):
        await socket.login(token_for(ada))
        await socket.subscribe(
            "1",
            "subscription ($id: ID!) { messageAdded(conversationId: $id) { id } }",
            {"id": gid("Conversation", conversation)},
        )
        await socket.subscribe("2", "{ me { id } }")
        event = await socket.receive()
    assert (event.kind, event.id, event.payload) == (
        "error",
        "2",
        [
            {
                "message": "Too many operations at once on this connection (at most 1); "
                "complete one first.",
                "extensions": {"code": "RATE_LIMITED", "limit": 1},
            }
        ],
    )


@protocols
@pytest.mark.parametrize("name", ["N" * 200, "é" * 70], ids=["200 N", "70 é"])
async def test_a_long_operation_name_is_an_error_not_a_dropped_socket(
    app: Starlette, sessionmaker: Sessionmaker, protocol: str, name: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(ada))
        result = await socket.execute("1", "query A { me { id } }", operation_name=name)
        assert result == {
            "errors": [
                {
                    "message": f'Unknown operation named "{name}".',
                    "extensions": {"code": "BAD_REQUEST"},
                }
            ]
        }
        # The socket is still there.
        await still_answers(socket)


async def test_a_close_reason_is_cut_to_what_a_close_frame_carries(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=ada)
    long_id = "é" * 100
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token_for(ada))
        subscription = "subscription ($id: ID!) { messageAdded(conversationId: $id) { id } }"
        variables = {"id": gid("Conversation", conversation)}
        await socket.subscribe(long_id, subscription, variables)
        await socket.subscribe(long_id, subscription, variables)
        closed = await socket.closed()
    assert closed.code == 4409
    assert closed.reason.startswith("Subscriber for éé")
    assert len(closed.reason.encode()) <= 123


@protocols
async def test_a_socket_that_never_initialises_is_closed_with_4408(
    settings: Settings, protocol: str
) -> None:
    async with (
        running(settings, ws_init_timeout=0.3) as application,
        asgi_socket(application, protocol) as socket,
    ):
        closed = await socket.closed()
    assert (closed.code, closed.reason) == (4408, "Connection initialisation timeout")


@protocols
async def test_each_operation_on_a_socket_writes_a_log_line_and_is_counted(
    app: Starlette, sessionmaker: Sessionmaker, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    labels = {"operation": "WsMe", "outcome": "ok"}
    before = REGISTRY.get_sample_value("chatql_graphql_requests_total", labels) or 0.0
    caplog.set_level(logging.INFO, logger="chatql.request")
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(ada))
        caplog.clear()
        await socket.execute("1", "query WsMe { me { username conversations { totalCount } } }")
        await socket.execute("2", "query WsBad { me { usernam } }")
    lines = [dict(r.fields) for r in caplog.records if r.name == "chatql.request"]  # type: ignore[attr-defined]
    for line in lines:
        assert line.pop("duration_ms") >= 0
        line.pop("request_id")
    statements = [line.pop("statements") for line in lines]
    assert statements[0] > 0
    assert lines == [
        {
            "method": "WS",
            "path": "/graphql",
            "status": None,
            "protocol": protocol,
            "operation": "WsMe",
            "operation_type": "query",
            "outcome": "ok",
        },
        {
            "method": "WS",
            "path": "/graphql",
            "status": None,
            "protocol": protocol,
            "operation": "WsBad",
            "operation_type": "query",
            "outcome": "GRAPHQL_VALIDATION_FAILED",
        },
    ]
    after = REGISTRY.get_sample_value("chatql_graphql_requests_total", labels) or 0.0
    assert after == before + 1


async def test_the_legacy_protocol_runs_queries_and_mutations(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, LEGACY_WS) as socket:
        await socket.login(token_for(ada))
        created = await socket.execute("1", CREATE)
    assert set(created["data"]["createConversation"]) == {"id"}
    assert await counts(sessionmaker) == (1, 0)


@protocols
@pytest.mark.parametrize(
    ("name", "answer"),
    [
        (
            "\ud800",
            {
                "message": TEXT_REFUSED,
                "extensions": {
                    "code": "BAD_USER_INPUT",
                    "fields": {"operationName": NOT_UNICODE},
                },
            },
        ),
        (7, {"message": BAD_OPERATION_NAME, "extensions": {"code": "BAD_REQUEST"}}),
    ],
    ids=["lone surrogate", "not a string"],
)
async def test_an_operation_name_no_operation_can_have_is_refused_as_over_http(
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
    protocol: str,
    name: object,
    answer: dict[str, object],
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(ada))
        result = await socket.execute("1", "query A { me { id } }", operation_name=name)  # type: ignore[arg-type]
        assert result == {"errors": [answer]}
        await still_answers(socket)
    body = json.dumps({"query": "query A { me { id } }", "operationName": name})
    over_http = await api.raw(
        "POST", content=body, headers={"Content-Type": "application/json"}, token=token_for(ada)
    )
    assert over_http.json() == {"errors": [answer]}


@protocols
async def test_a_subscription_ends_when_its_token_expires(
    app: Starlette, sessionmaker: Sessionmaker, protocol: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=ada)
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(ada, ttl=2))
        await socket.subscribe(
            "1",
            "subscription ($id: ID!) { messageAdded(conversationId: $id) { id } }",
            {"id": gid("Conversation", conversation)},
        )
        errors = await socket.errors("1")
    assert [(error["message"], error["extensions"]["code"]) for error in errors] == [
        (BAD_TOKEN, "UNAUTHENTICATED")
    ]


# ---- malformed messages: what HTTP refuses is refused, and nothing escapes as a 500 --------

BAD_FIELDS = [
    pytest.param({"query": 1}, BAD_QUERY, id="query not a string"),
    pytest.param({"variables": {}}, NO_QUERY, id="no query"),
    pytest.param({"query": "{ me { id } }", "variables": [1]}, BAD_VARIABLES, id="variables list"),
    pytest.param({"query": "{ me { id } }", "variables": "x"}, BAD_VARIABLES, id="variables text"),
    pytest.param({"query": "{ me { id } }", "extensions": 1}, BAD_EXTENSIONS, id="extensions"),
]


@protocols
@pytest.mark.parametrize(("payload", "message"), BAD_FIELDS)
async def test_a_request_http_refuses_is_refused_alike_over_a_socket(
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
    protocol: str,
    payload: dict[str, object],
    message: str,
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    over_http = await api.raw(
        "POST",
        content=json.dumps(payload),
        headers={"Content-Type": "application/json"},
        token=token_for(ada),
    )
    refused = {"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]}
    assert (over_http.status_code, over_http.json()) == (400, refused)
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(ada))
        kind = "subscribe" if protocol == TRANSPORT_WS else "start"
        await socket.socket.send({"type": kind, "id": "1", "payload": payload})
        event = await socket.receive()
        assert (event.kind, event.id, event.payload) == ("error", "1", refused["errors"])
        await still_answers(socket)


NESTED = (
    '{"id": "1", "type": "subscribe", "payload": {"query": "{ me { id } }", "variables": {"v": '
    + "[" * 100_000
    + "]" * 100_000
    + "}}}"
)
NOT_MESSAGES = [
    pytest.param("[1, 2]", 4400, id="an array"),
    pytest.param("7", 4400, id="a number"),
    pytest.param('{"type": 5}', 4400, id="a type that is no string"),
    pytest.param(
        '{"id": {"a": 1}, "type": "subscribe", "payload": {"query": "{ me { id } }"}}',
        4400,
        id="an id that is an object",
    ),
    pytest.param(
        '{"id": 5, "type": "subscribe", "payload": {"query": "{ me { id } }"}}',
        4400,
        id="an id that is a number",
    ),
    pytest.param(
        json.dumps({"id": "x" * 200, "type": "subscribe", "payload": {"query": "{ me { id } }"}}),
        4400,
        id="a long id",
    ),
    pytest.param('{"id": "1", "type": "subscribe", "payload": "q"}', 4400, id="payload text"),
    pytest.param('{"id": "1", "type": "subscribe", "payload": null}', 4400, id="payload null"),
    pytest.param(NESTED, 4400, id="nested past the decoder"),
    pytest.param(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "{ me { id } }", "variables": {"x": "a" * 1_100_000}},
            }
        ),
        1009,
        id="larger than a request body",
    ),
]


@pytest.mark.parametrize(("text", "code"), NOT_MESSAGES)
async def test_what_is_no_message_of_the_protocol_closes_the_socket_with_a_reason(
    app: Starlette, sessionmaker: Sessionmaker, text: str, code: int
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token_for(ada))
        await socket.socket.send_text(text)
        closed = await socket.closed()
    assert closed.code == code
    assert closed.reason.startswith(("Invalid message", "WebSocket message", "A message may"))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[1, 2]", id="an array"),
        pytest.param("not json", id="not JSON"),
        pytest.param('{"type": 5}', id="a type that is no string"),
        pytest.param(NESTED.replace('"subscribe"', '"start"'), id="nested past the decoder"),
    ],
)
async def test_the_legacy_protocol_skips_what_is_no_message_and_goes_on(
    app: Starlette, sessionmaker: Sessionmaker, text: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, LEGACY_WS) as socket:
        await socket.login(token_for(ada))
        await socket.socket.send_text(text)
        await still_answers(socket)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            {"id": {"a": 1}, "type": "start", "payload": {"query": "{ me { id } }"}},
            id="id an object",
        ),
        pytest.param(
            {"id": 5, "type": "start", "payload": {"query": "{ me { id } }"}}, id="id a number"
        ),
        pytest.param({"id": "1", "type": "start"}, id="no payload"),
        pytest.param({"id": "1", "type": "start", "payload": "q"}, id="payload text"),
    ],
)
async def test_the_legacy_protocol_answers_a_malformed_start_with_an_error(
    app: Starlette, sessionmaker: Sessionmaker, message: dict[str, object]
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, LEGACY_WS) as socket:
        await socket.login(token_for(ada))
        await socket.socket.send(message)
        event = await socket.receive()
        assert event.kind == "error"
        assert event.payload[0]["extensions"] == {"code": "BAD_REQUEST"}
        assert event.payload[0]["message"].startswith("Invalid message")
        await still_answers(socket)


async def test_a_second_legacy_connection_init_closes_with_4429(
    app: Starlette, sessionmaker: Sessionmaker
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with asgi_socket(app, LEGACY_WS) as socket:
        await socket.login(token_for(ada))
        await socket.socket.send({"type": "connection_init", "payload": {}})
        closed = await socket.closed()
    assert (closed.code, closed.reason) == (4429, "Too many initialisation requests")


@protocols
async def test_a_variable_whose_name_no_database_keeps_is_refused(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, protocol: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    body = '{"query": "{ me { id } }", "variables": {"\\ud800": 1}}'
    over_http = await api.raw(
        "POST", content=body, headers={"Content-Type": "application/json"}, token=token_for(ada)
    )
    answer = over_http.json()
    assert answer["errors"][0]["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"\\ud800": NOT_UNICODE},
    }
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(ada))
        over_socket = await socket.execute("1", "{ me { id } }", {"\ud800": 1})
    assert over_socket == answer
