"""The `changes` subscription over both WebSocket protocols (RULES.md, "Sync"): replay, then
live, with no gap and no duplicate at the seam; resuming from a cursor; how it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import update
from starlette.applications import Starlette

from db.models import Feed
from schema.errors import BAD_TOKEN, CURSOR_EXPIRED, TOO_SLOW
from tests.conftest import ApiFactory
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api, StatementCounter
from tests.schema.test_changes_feed import CURSOR, feed_cursor
from tests.schema.test_subscriptions import wait_for_subscribers
from tests.ws import PROTOCOLS, TRANSPORT_WS, GraphQLSocket, asgi_socket

SUBSCRIBE = """
subscription ($after: String) {
  changes(after: $after) { cursor kind conversationId messageId message { content } }
}
"""
FEED = """
query ($after: String) {
  changes(first: 100, after: $after) {
    edges { node { cursor kind conversationId messageId message { content } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
SEND = """
mutation ($c: ID!, $content: String!) {
  sendMessage(input: {conversationId: $c, content: $content}) { id }
}
"""

protocols = pytest.mark.parametrize("protocol", PROTOCOLS)


async def send(api: Api, token: str, conversation: str, content: str) -> None:
    await api.data(SEND, {"c": gid("Conversation", conversation), "content": content}, token=token)


async def whole_feed(api: Api, token: str, after: str | None = None) -> list[dict[str, Any]]:
    """Every change after `after`, as the query pages them."""
    nodes: list[dict[str, Any]] = []
    while True:
        data = (await api.data(FEED, {"after": after}, token=token))["changes"]
        nodes += [e["node"] for e in data["edges"]]
        if not data["pageInfo"]["hasNextPage"]:
            return nodes
        after = data["pageInfo"]["endCursor"]


async def received(socket: GraphQLSocket, count: int) -> list[dict[str, Any]]:
    return [(await socket.next_data("1"))["changes"] for _ in range(count)]


async def subscribe(socket: GraphQLSocket, token: str, after: str | None) -> None:
    await socket.login(token)
    await socket.subscribe("1", SUBSCRIBE, {"after": after} if after is not None else {})


@protocols
async def test_it_replays_after_the_cursor_then_goes_live(
    protocol: str, app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    for n in range(150):  # more than one page of replay
        await send(api, token, conversation, f"before {n}")
    async with asgi_socket(app, protocol) as socket:
        await subscribe(socket, token, feed_cursor(alice, 20))
        replayed = await received(socket, 130)
        await wait_for_subscribers(app, 1)
        for n in range(3):
            await send(api, token, conversation, f"live {n}")
        live = await received(socket, 3)
    feed = await whole_feed(api, token, feed_cursor(alice, 20))
    assert replayed + live == feed
    assert [c["message"]["content"] for c in live] == ["live 0", "live 1", "live 2"]
    assert [c["cursor"] for c in feed] == [feed_cursor(alice, p) for p in range(21, 154)]


@protocols
async def test_without_a_cursor_it_starts_from_now(
    protocol: str, app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    alice, bob = await make_user(sessionmaker), await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    bobs = await make_conversation(sessionmaker, owner_id=bob)
    await send(api, token_for(alice), conversation, "old")
    async with asgi_socket(app, protocol) as socket:
        await subscribe(socket, token_for(alice), None)
        await wait_for_subscribers(app, 1)
        await send(api, token_for(bob), bobs, "not alice's")
        await send(api, token_for(alice), conversation, "new")
        live = await received(socket, 1)
    assert live == [
        {
            "cursor": feed_cursor(alice, 2),
            "kind": "MESSAGE_ADDED",
            "conversationId": gid("Conversation", conversation),
            "messageId": live[0]["messageId"],
            "message": {"content": "new"},
        }
    ]


@protocols
async def test_writes_racing_the_subscribe_arrive_once_each_in_order(
    protocol: str, app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    for n in range(5):
        await send(api, token, conversation, f"before {n}")
    cursor = feed_cursor(alice, 2)

    async def writer() -> None:
        for n in range(40):
            await send(api, token, conversation, f"racing {n}")

    async with asgi_socket(app, protocol) as socket:
        writing = asyncio.create_task(writer())
        await subscribe(socket, token, cursor)  # while the writer writes
        await writing
        await send(api, token, conversation, "last")
        got = await received(socket, 3 + 40 + 1)
        # Nothing more: a duplicate would come next.
        await send(api, token, conversation, "sentinel")
        sentinel = await received(socket, 1)
    feed = await whole_feed(api, token, cursor)
    assert got + sentinel == feed
    assert sentinel[0]["message"] == {"content": "sentinel"}


@protocols
async def test_a_subscriber_too_slow_is_ended_and_resumes_from_its_last_cursor(
    protocol: str, app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    hub = app.state.services.broker.hub
    async with asgi_socket(app, protocol) as socket:
        await subscribe(socket, token, feed_cursor(alice, 0))
        await wait_for_subscribers(app, 1)
        await send(api, token, conversation, "seen")
        (last,) = await received(socket, 1)
        # Faster than any consumer: more wake-ups than the queue holds, in one go.
        for _ in range(hub.queue_size + 1):
            hub.deliver_feed(alice, 1_000_000)
        errors = await socket.errors("1")
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (TOO_SLOW, {"code": "SUBSCRIBER_TOO_SLOW", "queueSize": hub.queue_size})
    ]
    assert hub.subscriber_count == 0
    for n in range(3):
        await send(api, token, conversation, f"missed {n}")
    async with asgi_socket(app, protocol) as socket:
        await subscribe(socket, token, last["cursor"])
        resumed = await received(socket, 3)
    assert resumed == await whole_feed(api, token, last["cursor"])
    assert [c["message"]["content"] for c in resumed] == ["missed 0", "missed 1", "missed 2"]


@protocols
async def test_bad_and_expired_cursors_end_it_with_their_codes(
    protocol: str, app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    alice, bob = await make_user(sessionmaker), await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    await send(api, token_for(alice), conversation, "one")
    bobs = (await api.data(CURSOR, token=token_for(bob)))["changesCursor"]
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Feed).where(Feed.user_id == alice).values(pruned_through=1))
    answers = []
    for after in ("garbage", bobs, feed_cursor(alice, 5), feed_cursor(alice, 0)):
        async with asgi_socket(app, protocol) as socket:
            await subscribe(socket, token_for(alice), after)
            answers.append([(e["message"], e["extensions"]) for e in await socket.errors("1")])
    not_ours = "not a valid cursor for this connection"
    assert answers == [
        [(f"after: {not_ours}", {"code": "BAD_USER_INPUT", "fields": {"after": not_ours}})],
        [
            (
                "after: a cursor of another user's feed",
                {
                    "code": "BAD_USER_INPUT",
                    "fields": {"after": "a cursor of another user's feed"},
                },
            )
        ],
        [(f"after: {not_ours}", {"code": "BAD_USER_INPUT", "fields": {"after": not_ours}})],
        [(CURSOR_EXPIRED, {"code": "CURSOR_EXPIRED"})],
    ]


@protocols
async def test_deactivation_ends_it_as_unauthenticated(
    protocol: str, app: Starlette, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    hub = app.state.services.broker.hub
    async with asgi_socket(app, protocol) as socket:
        await subscribe(socket, token_for(alice), None)
        await wait_for_subscribers(app, 1)
        hub.end_for_viewers([alice])
        errors = await socket.errors("1")
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (BAD_TOKEN, {"code": "UNAUTHENTICATED"})
    ]
    assert hub.subscriber_count == 0


async def test_it_ends_when_its_token_expires(app: Starlette, sessionmaker: Sessionmaker) -> None:
    alice = await make_user(sessionmaker)
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await subscribe(socket, token_for(alice, ttl=1), None)
        errors = await socket.errors("1")
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (BAD_TOKEN, {"code": "UNAUTHENTICATED"})
    ]


@protocols
async def test_a_replayed_page_loads_its_conversations_and_messages_at_once(
    protocol: str,
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
    statements: StatementCounter,
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversations = [await make_conversation(sessionmaker, owner_id=alice) for _ in range(10)]
    for n in range(100):
        await send(api, token, conversations[n % 10], f"m{n}")
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token)
        statements.reset()
        await socket.subscribe(
            "1",
            "subscription ($after: String) { changes(after: $after) "
            "{ ...on Change { conversation { title } } message { content } } }",
            {"after": feed_cursor(alice, 0)},
        )
        replayed = await received(socket, 100)
        await wait_for_subscribers(app, 1)
        seen = list(statements.seen)
    assert [c["message"]["content"] for c in replayed] == [f"m{n}" for n in range(100)]
    # One statement for the page's conversations and one for its messages, not one an event;
    # besides them: the operation's viewer, the page and the viewer again, and perhaps by now
    # the empty page that ends the replay with its viewer.
    assert [
        sum("FROM conversations" in s for s in seen),
        sum("FROM messages" in s for s in seen),
    ] == [1, 1], seen
    assert 5 <= len(seen) <= 7, seen


async def test_writes_through_another_server_process_reach_the_subscriber(
    app: Starlette, other_app: ApiFactory, api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    async with asgi_socket(app, TRANSPORT_WS) as socket, other_app() as other:
        await subscribe(socket, token, None)
        await wait_for_subscribers(app, 1)
        for n in range(3):
            await send(other, token, conversation, f"elsewhere {n}")
        got = await received(socket, 3)
    assert got == await whole_feed(api, token, feed_cursor(alice, 0))
    assert [c["message"]["content"] for c in got] == [f"elsewhere {n}" for n in range(3)]
