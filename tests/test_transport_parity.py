"""One pipeline: every operation answers the same over HTTP (POST, the fast lane, GET), over
Server-Sent Events and over both WebSocket protocols, errors included, on both databases.

Each document below runs as one viewer over every transport; the answers are compared whole,
after taking out what must differ (a request id). Mutations that succeed write a new row per
run, so they are compared with their ids and times replaced by placeholders.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from starlette.applications import Starlette

from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api
from tests.ws import LEGACY_WS, TRANSPORT_WS, asgi_socket

# (name, document, variables, operationName): queries, mutations, and every kind of error a
# client can meet before or during execution.
CASES: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("me", "{ me { username email isAdmin conversationCount } }", None, None),
    (
        "conversation with a page",
        """query ($id: ID!) { conversation(id: $id) { title messageCount
             messages(first: 2) { edges { cursor node { content role } }
                                  pageInfo { hasNextPage hasPreviousPage endCursor } } } }""",
        {"id": "{conversation}"},
        None,
    ),
    (
        "someone else's conversation",
        "query ($id: ID!) { conversation(id: $id) { title } }",
        {"id": "{others}"},
        None,
    ),
    (
        "users",
        '{ users(first: 5, search: "par") { totalCount edges { node { username } } } }',
        None,
        None,
    ),
    ("node of nothing", '{ node(id: "VXNlcjo5OTk5OTk=") { id } }', None, None),
    ("malformed id", '{ user(id: "not-an-id") { username } }', None, None),
    ("parse error", "{ me { ", None, None),
    ("unknown field", "{ me { usernam } }", None, None),
    ("unknown operation name", "query A { me { id } }", None, "B" * 200),
    ("two operations, no name", "query A { me { id } } query B { me { id } }", None, None),
    (
        "variable of the wrong type",
        "query ($n: Int!) { users(first: $n) { totalCount } }",
        {"n": "x"},
        None,
    ),
    ("page too large", "{ users(first: 1000) { totalCount } }", None, None),
    (
        "too deep",
        "{ me { conversations { edges { node { owner { conversations { edges { node { owner"
        " { conversations { edges { node { title } } } } } } } } } } } } }",
        None,
        None,
    ),
    (
        "NUL in a variable",
        "query ($s: String) { users(search: $s) { totalCount } }",
        {"s": "a\u0000b"},
        None,
    ),
    (
        "invalid input",
        'mutation { createConversation(input: {title: ""}) { id } }',
        None,
        None,
    ),
    (
        "send to someone else's conversation",
        'mutation ($id: ID!) { sendMessage(input: {conversationId: $id, content: "hi"}) { id } }',
        {"id": "{others}"},
        None,
    ),
    (
        "create a conversation",
        'mutation { createConversation(input: {title: "Parity"}) { id title createdAt '
        "owner { username } messageCount } }",
        None,
        None,
    ),
    (
        "send a message",
        'mutation ($id: ID!) { sendMessage(input: {conversationId: $id, content: "same"}) '
        "{ id content role createdAt conversation { messageCount } } }",
        {"id": "{conversation}"},
        None,
    ),
]
PLACEHOLDERS = [
    (re.compile(r'"(Q29udmVyc2F0aW9u|TWVzc2FnZT)[A-Za-z0-9+/=]*"'), '"<id>"'),
    (re.compile(r'"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)"'), '"<time>"'),
]


def comparable(body: dict[str, Any], *, mutation: bool) -> str:
    for error in body.get("errors", []):
        (error.get("extensions") or {}).pop("requestId", None)
    text = json.dumps(body, sort_keys=True)
    if mutation:
        for pattern, placeholder in PLACEHOLDERS:
            text = pattern.sub(placeholder, text)
    # Each transport's mutations add rows: counts differ by when they were read.
    text = re.sub(r'"(messageCount|conversationCount)": \d+', r'"\1": "<n>"', text)
    return text


async def over_http(
    api: Api, query: str, variables: Any, name: str | None, token: str, get: bool
) -> dict[str, Any]:
    if get:
        params = {"query": query}
        if variables is not None:
            params["variables"] = json.dumps(variables)
        if name is not None:
            params["operationName"] = name
        response = await api.raw(
            "GET", params=params, headers={"X-Requested-With": "test"}, token=token
        )
    else:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        if name is not None:
            body["operationName"] = name
        response = await api.client.post(
            "/graphql", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code < 500, response.text
    result: dict[str, Any] = response.json()
    return result


async def over_sse(
    api: Api, query: str, variables: Any, name: str | None, token: str
) -> dict[str, Any]:
    """The answer over Server-Sent Events: the one `next` event of a stream (then `complete`),
    or the JSON body of a request refused before it ran."""
    body: dict[str, Any] = {"query": query, "variables": variables, "operationName": name}
    response = await api.client.post(
        "/graphql",
        json=body,
        headers={"Accept": "text/event-stream", "Authorization": f"Bearer {token}"},
    )
    assert response.status_code < 500, response.text
    if response.headers["content-type"] != "text/event-stream":
        assert response.status_code >= 400, response.text
        refused: dict[str, Any] = response.json()
        return refused
    next_event, complete, end = response.text.split("\r\n\r\n")
    assert (complete, end) == ("event: complete\r\ndata: ", ""), response.text
    kind, data = next_event.split("\r\n")
    assert kind == "event: next", response.text
    result: dict[str, Any] = json.loads(data.removeprefix("data: "))
    return result


async def test_every_operation_answers_alike_over_http_and_both_websocket_protocols(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="first_admin", is_admin=True)
    viewer = await make_user(sessionmaker, username="parity")
    other = await make_user(sessionmaker, username="another")
    mine = await make_conversation(sessionmaker, owner_id=viewer, title="Mine")
    others = await make_conversation(sessionmaker, owner_id=other, title="Theirs")
    await make_messages(sessionmaker, conversation_id=mine, count=3)
    token = token_for(viewer)
    ids = {"{conversation}": gid("Conversation", mine), "{others}": gid("Conversation", others)}

    def bound(variables: dict[str, Any] | None) -> dict[str, Any] | None:
        if variables is None:
            return None
        return {k: ids.get(v, v) if isinstance(v, str) else v for k, v in variables.items()}

    answers: list[dict[str, dict[str, Any]]] = []
    for query, variables, name in ((q, bound(v), n) for _, q, v, n in CASES):
        over = {
            "POST": await over_http(api, query, variables, name, token, get=False),
            # The second POST of a document takes the fast lane when it can.
            "POST again": await over_http(api, query, variables, name, token, get=False),
        }
        if not query.lstrip().startswith("mutation"):
            over["GET"] = await over_http(api, query, variables, name, token, get=True)
        over["SSE"] = await over_sse(api, query, variables, name, token)
        answers.append(over)
    # One socket at a time: the in-process WebSocket transport cannot interleave two.
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        async with asgi_socket(app, protocol) as socket:
            await socket.login(token)
            for number, (_, query, variables, name) in enumerate(CASES):
                answers[number][protocol] = await socket.execute(
                    f"{number}", query, bound(variables), name
                )
    for (case, query, _, _), over in zip(CASES, answers, strict=True):
        mutation = query.lstrip().startswith("mutation")
        expected = comparable(over["POST"], mutation=mutation)
        for transport, answer in over.items():
            assert comparable(answer, mutation=mutation) == expected, (case, transport, answer)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_anonymous_socket_answers_as_anonymous_http(
    app: Starlette, api: Api, protocol: str
) -> None:
    async with asgi_socket(app, protocol) as socket:
        assert (await socket.init()).kind == "connection_ack"
        for number, query in enumerate(
            [
                "{ me { id } }",
                "{ users { totalCount } }",
                'mutation { createConversation(input: {title: "x"}) { id } }',
            ]
        ):
            over_socket = await socket.execute(str(number), query)
            response = await api.client.post("/graphql", json={"query": query})
            assert comparable(over_socket, mutation=False) == comparable(
                response.json(), mutation=False
            )
