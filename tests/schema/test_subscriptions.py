"""messageAdded over both WebSocket protocols, against the ASGI app (in-process)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update
from starlette.applications import Starlette

from db.models import User
from schema.errors import BAD_TOKEN, LOGIN_REQUIRED, NOT_FOUND, TOO_SLOW
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api
from tests.ws import LEGACY_WS, PROTOCOLS, Event, GraphQLSocket, asgi_socket

MESSAGE_ADDED = """
subscription ($id: ID!) {
  messageAdded(conversationId: $id) {
    id role content clientId
    conversation { id title messageCount owner { username } }
  }
}
"""
SEND = """
mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id } }
"""
IMPORT = """
mutation ($input: ImportMessagesInput!) { importMessages(input: $input) { importedCount } }
"""

protocols = pytest.mark.parametrize("protocol", PROTOCOLS)


async def send(api: Api, token: str, conversation: str, content: str) -> str:
    data = await api.data(
        SEND,
        {"input": {"conversationId": gid("Conversation", conversation), "content": content}},
        token=token,
    )
    message_id: str = data["sendMessage"]["id"]
    return message_id


async def subscribed(
    socket: GraphQLSocket, token: str, conversation: str, query: str = MESSAGE_ADDED
) -> None:
    """Log in and subscribe (as "1") to a conversation's new messages."""
    await socket.login(token)
    await socket.subscribe("1", query, {"id": gid("Conversation", conversation)})


async def wait_for_subscribers(app: Starlette, count: int) -> None:
    """The subscription is registered asynchronously; publishing before that would miss it."""
    hub = app.state.services.broker.hub
    for _ in range(500):
        if hub.subscriber_count >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{hub.subscriber_count} subscribers, expected {count}")


@protocols
async def test_a_sent_message_reaches_the_subscriber_with_its_fields(
    protocol: str,
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
) -> None:
    user = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=user, title="Lovelace")
    async with asgi_socket(app, protocol) as socket:
        await subscribed(socket, token_for(user), conversation)
        await wait_for_subscribers(app, 1)
        message_id = await send(api, token_for(user), conversation, "hello")
        data = await socket.next_data("1")
    assert data == {
        "messageAdded": {
            "id": message_id,
            "role": "USER",
            "content": "hello",
            "clientId": None,
            "conversation": {
                "id": gid("Conversation", conversation),
                "title": "Lovelace",
                "messageCount": 1,
                "owner": {"username": "ada"},
            },
        }
    }


@protocols
async def test_nested_fields_are_fresh_for_every_message(
    protocol: str,
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    async with asgi_socket(app, protocol) as socket:
        await subscribed(socket, token_for(user), conversation)
        await wait_for_subscribers(app, 1)
        received = []
        for text in ("one", "two", "three"):
            await send(api, token_for(user), conversation, text)
            received.append(await socket.next_data("1"))
    assert [
        (r["messageAdded"]["content"], r["messageAdded"]["conversation"]["messageCount"])
        for r in received
    ] == [("one", 1), ("two", 2), ("three", 3)]


@protocols
async def test_two_hundred_messages_arrive_in_commit_order(
    protocol: str,
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    token = token_for(user)
    async with asgi_socket(app, protocol) as socket:
        await subscribed(
            socket,
            token,
            conversation,
            "subscription ($id: ID!) { messageAdded(conversationId: $id) { id content } }",
        )
        await wait_for_subscribers(app, 1)
        sent = [await send(api, token, conversation, f"m{i}") for i in range(200)]
        received = [(await socket.next_data("1"))["messageAdded"] for _ in range(200)]
    assert received == [{"id": sent[i], "content": f"m{i}"} for i in range(200)]


@protocols
async def test_two_hundred_imported_messages_arrive_in_order(
    protocol: str,
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    token = token_for(user)
    async with asgi_socket(app, protocol) as socket:
        await subscribed(
            socket,
            token,
            conversation,
            "subscription ($id: ID!) { messageAdded(conversationId: $id) { content } }",
        )
        await wait_for_subscribers(app, 1)
        messages = [{"role": "USER", "content": f"m{i}"} for i in range(200)]
        data = await api.data(
            IMPORT,
            {"input": {"conversationId": gid("Conversation", conversation), "messages": messages}},
            token=token,
        )
        received = [(await socket.next_data("1"))["messageAdded"] for _ in range(200)]
    assert data == {"importMessages": {"importedCount": 200}}
    assert received == [{"content": f"m{i}"} for i in range(200)]


@protocols
async def test_a_bad_token_closes_the_connection_with_4403(protocol: str, app: Starlette) -> None:
    async with asgi_socket(app, protocol) as socket:
        events, closed = await socket.refused({"authorization": "Bearer not-a-token"})
    legacy_error = [Event("connection_error", None, {"message": BAD_TOKEN})]
    assert (events, closed.code) == (legacy_error if protocol == LEGACY_WS else [], 4403)


@protocols
async def test_a_subscription_without_a_login_is_unauthenticated(
    protocol: str, app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    async with asgi_socket(app, protocol) as socket:
        ack = await socket.init()
        await socket.subscribe("1", MESSAGE_ADDED, {"id": gid("Conversation", conversation)})
        errors = await socket.errors("1")
    assert ack.kind == "connection_ack"
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (LOGIN_REQUIRED, {"code": "UNAUTHENTICATED"})
    ]


@protocols
async def test_subscribing_to_a_foreign_conversation_is_not_found_and_hears_nothing(
    protocol: str,
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
) -> None:
    owner = await make_user(sessionmaker)
    other = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    async with asgi_socket(app, protocol) as socket:
        await subscribed(socket, token_for(other), conversation)
        errors = await socket.errors("1")
        await send(api, token_for(owner), conversation, "private")
        # A second subscription, to a conversation of their own, proves the socket still
        # works and that nothing of the foreign one came first.
        own = await make_conversation(sessionmaker, owner_id=other)
        await socket.subscribe("2", MESSAGE_ADDED, {"id": gid("Conversation", own)})
        await wait_for_subscribers(app, 1)
        await send(api, token_for(other), own, "mine")
        data = await socket.next_data("2")
    assert [(e["message"], e["extensions"]) for e in errors] == [(NOT_FOUND, {"code": "NOT_FOUND"})]
    assert data["messageAdded"]["content"] == "mine"


@protocols
async def test_a_malformed_conversation_id_is_bad_user_input(
    protocol: str, app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token_for(user))
        await socket.subscribe("1", MESSAGE_ADDED, {"id": gid("User", user)})
        errors = await socket.errors("1")
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"]


@protocols
async def test_a_deactivated_users_subscription_ends(
    protocol: str,
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
) -> None:
    user = await make_user(sessionmaker)
    admin = await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    async with asgi_socket(app, protocol) as socket:
        await subscribed(socket, token_for(user), conversation)
        await wait_for_subscribers(app, 1)
        async with sessionmaker() as session, session.begin():
            await session.execute(update(User).where(User.id == user).values(is_active=False))
        # The admin may still write to the conversation; the deactivated owner hears nothing.
        await send(api, token_for(admin), conversation, "after")
        errors = await socket.errors("1")
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (BAD_TOKEN, {"code": "UNAUTHENTICATED"})
    ]


@protocols
async def test_the_periodic_check_ends_a_deactivated_users_quiet_subscription(
    protocol: str, app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    async with asgi_socket(app, protocol) as socket:
        await subscribed(socket, token_for(user), conversation)
        await wait_for_subscribers(app, 1)
        async with sessionmaker() as session, session.begin():
            await session.execute(update(User).where(User.id == user).values(is_active=False))
        await app.state.watch.sweep()
        errors = await socket.errors("1")
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (BAD_TOKEN, {"code": "UNAUTHENTICATED"})
    ]


@protocols
async def test_a_subscriber_too_slow_to_keep_up_is_ended_with_an_error(
    protocol: str, app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    hub = app.state.services.broker.hub
    async with asgi_socket(app, protocol) as socket:
        await subscribed(socket, token_for(user), conversation)
        await wait_for_subscribers(app, 1)
        # Faster than any consumer: more events than the queue holds, in one go.
        for n in range(hub.queue_size + 1):
            hub.deliver(conversation, [n + 1_000_000])
        errors = await socket.errors("1")
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (TOO_SLOW, {"code": "SUBSCRIBER_TOO_SLOW", "queueSize": hub.queue_size})
    ]
    assert hub.subscriber_count == 0
