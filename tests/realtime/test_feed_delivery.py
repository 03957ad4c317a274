"""The change feed under fire on PostgreSQL (issue 13): every change exactly once, in commit
order, to a reader polling `changes(after:)` and to a `changes` subscriber, while many writers
commit out of order and while the LISTEN connection is cut."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from starlette.applications import Starlette

import schema.conversation_mutations
import schema.message_edits
import schema.message_mutations
from db import changes
from realtime.postgres import APPLICATION_NAME
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api
from tests.schema.test_changes_feed import feed_cursor
from tests.schema.test_changes_subscription import subscribe, whole_feed
from tests.schema.test_subscriptions import wait_for_subscribers
from tests.ws import TRANSPORT_WS, GraphQLSocket, asgi_socket

pytestmark = pytest.mark.postgres_only

SEND = """
mutation ($c: ID!, $content: String!) {
  sendMessage(input: {conversationId: $c, content: $content}) { id }
}
"""
RENAME = (
    "mutation ($id: ID!, $t: String!) { updateConversation(id: $id, input: {title: $t}) { id } }"
)
CREATE = "mutation ($t: String!) { createConversation(input: {title: $t}) { id } }"
EDIT = """
mutation ($id: ID!, $content: String!) { editMessage(id: $id, input: {content: $content}) { id } }
"""
DELETE = "mutation ($id: ID!) { deleteMessage(id: $id) { deletedId } }"
TRANSFER = """
mutation ($c: ID!, $u: ID!) {
  transferConversation(input: {conversationId: $c, toUserId: $u}) { id }
}
"""
# 8 writers of 200 writes each, as issue 13 asks, take minutes on CI's two shared cores: 40
# each by default (CHATQL_TEST_RACE_WRITES=200 runs the full count).
WRITERS = 8
WRITES = int(os.environ.get("CHATQL_TEST_RACE_WRITES", "40"))
# The longest a writer dawdles before it records its changes, and again before it commits.
DAWDLE_SECONDS = 0.005


async def send(api: Api, token: str, conversation: str, content: str) -> None:
    await api.data(SEND, {"c": gid("Conversation", conversation), "content": content}, token=token)


async def cut_listener(sessionmaker: Sessionmaker) -> None:
    async with sessionmaker() as session:
        cut = await session.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": APPLICATION_NAME},
        )
    assert cut == 1


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def collect(socket: GraphQLSocket, count: int) -> list[dict[str, Any]]:
    return [(await socket.next_data("1"))["changes"] for _ in range(count)]


async def test_every_change_arrives_once_while_the_listener_is_cut_again_and_again(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    broker = app.state.services.broker
    # Holds the listener down until the writes meant for the gap are committed.
    gate = asyncio.Event()
    gate.set()
    listen_once = broker._listen_once

    async def gated() -> None:
        await gate.wait()
        await listen_once()

    monkeypatch.setattr(broker, "_listen_once", gated)
    got: list[dict[str, Any]] = []
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await subscribe(socket, token, feed_cursor(alice, 0))
        await wait_for_subscribers(app, 1)
        for round_ in range(4):
            await send(api, token, conversation, f"{round_}: before the cut")
            gate.clear()
            await cut_listener(sessionmaker)
            await until(lambda: broker.connection is None)
            for n in range(3):  # announced while nobody listens: lost
                await send(api, token, conversation, f"{round_}: in the gap {n}")
            gate.set()
            # No write follows: only the re-read on reconnecting can bring them.
            got += await collect(socket, 4)
        await send(api, token, conversation, "sentinel")
        got += await collect(socket, 1)
    assert got == await whole_feed(api, token, feed_cursor(alice, 0))
    assert [c["message"]["content"] for c in got][-5:] == [
        "3: before the cut",
        "3: in the gap 0",
        "3: in the gap 1",
        "3: in the gap 2",
        "sentinel",
    ]


async def test_readers_see_exactly_the_final_feed_while_writers_commit_out_of_order(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 writers make mixed writes (sends, edits, deletes, renames, creates, a transfer) on one
    user's conversations, dawdling inside their transactions before and after they record
    their changes, while a reader polls `changes(after:)` and a subscriber listens. Both
    sequences equal the final feed: nothing missing, nothing twice, the same order. (With
    positions drawn from a plain sequence instead, this fails: the reader skips a position
    committed after a higher one.)"""
    alice, bob = await make_user(sessionmaker), await make_user(sessionmaker)
    token = token_for(alice)
    shared = [
        gid("Conversation", await make_conversation(sessionmaker, owner_id=alice)) for _ in range(4)
    ]
    leaving = gid("Conversation", await make_conversation(sessionmaker, owner_id=alice))
    real_record = changes.record

    async def dawdling(*args: Any, **kwargs: Any) -> dict[int, list[int]]:
        await asyncio.sleep(random.random() * DAWDLE_SECONDS)
        positions = await real_record(*args, **kwargs)
        await asyncio.sleep(random.random() * DAWDLE_SECONDS)  # holding the feed, before the commit
        return positions

    monkeypatch.setattr(schema.message_mutations, "record", dawdling)
    monkeypatch.setattr(schema.conversation_mutations, "record", dawdling)
    monkeypatch.setattr(schema.message_edits, "record", dawdling)
    done = asyncio.Event()
    polled: list[str] = []

    async def writer(number: int) -> None:
        rng = random.Random(number)
        mine: list[str] = []  # this writer's messages not deleted yet
        for n in range(WRITES):
            roll = rng.random()
            if number == 0 and n == WRITES // 2:
                await api.data(TRANSFER, {"c": leaving, "u": gid("User", bob)}, token=token)
            elif number == 0 and n < WRITES // 2:
                await api.data(SEND, {"c": leaving, "content": f"{number}.{n}"}, token=token)
            elif roll < 0.15 and mine:
                edit = {"id": rng.choice(mine), "content": f"{number}.{n} edited"}
                await api.data(EDIT, edit, token=token)
            elif roll < 0.25 and mine:
                await api.data(DELETE, {"id": mine.pop(rng.randrange(len(mine)))}, token=token)
            elif roll < 0.85:
                sent = await api.data(
                    SEND, {"c": rng.choice(shared), "content": f"{number}.{n}"}, token=token
                )
                mine.append(sent["sendMessage"]["id"])
            elif roll < 0.97:
                rename = {"id": rng.choice(shared), "t": f"{number}.{n}"}
                await api.data(RENAME, rename, token=token)
            else:
                await api.data(CREATE, {"t": f"{number}.{n}"}, token=token)

    async def reader() -> None:
        after: str | None = None
        while True:
            finished = done.is_set()
            data = await api.data(
                "query ($a: String) { changes(first: 100, after: $a) "
                "{ edges { cursor } pageInfo { hasNextPage } } }",
                {"a": after},
                token=token,
            )
            edges = data["changes"]["edges"]
            polled.extend(e["cursor"] for e in edges)
            if edges:
                after = edges[-1]["cursor"]
            if finished and not data["changes"]["pageInfo"]["hasNextPage"]:
                return

    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await subscribe(socket, token, feed_cursor(alice, 0))
        await wait_for_subscribers(app, 1)
        pushed: list[str] = []

        async def subscriber() -> None:
            while True:
                pushed.append((await socket.next_data("1"))["changes"]["cursor"])

        listening = asyncio.create_task(subscriber())
        polling = asyncio.create_task(reader())
        await asyncio.gather(*(writer(n) for n in range(WRITERS)))
        done.set()
        await polling
        final = [c["cursor"] for c in await whole_feed(api, token, feed_cursor(alice, 0))]
        await until(lambda: len(pushed) >= len(final) or listening.done())
        await asyncio.sleep(0.2)  # a duplicate would come now
        listening.cancel()
    assert len(final) == WRITERS * WRITES  # one change a write (the transfer: its OUT)
    assert polled == final
    assert pushed == final


async def test_message_added_makes_up_for_what_was_sent_while_the_listener_was_cut(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    await send(api, token, conversation, "before subscribing")
    broker = app.state.services.broker
    gate = asyncio.Event()
    gate.set()
    listen_once = broker._listen_once

    async def gated() -> None:
        await gate.wait()
        await listen_once()

    monkeypatch.setattr(broker, "_listen_once", gated)
    got: list[str] = []
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token)
        await socket.subscribe(
            "1",
            "subscription ($id: ID!) { messageAdded(conversationId: $id) { content } }",
            {"id": gid("Conversation", conversation)},
        )
        await wait_for_subscribers(app, 1)
        await send(api, token, conversation, "ready")  # the subscription has settled
        got.append((await socket.next_data("1"))["messageAdded"]["content"])
        for round_ in range(3):
            await send(api, token, conversation, f"{round_}: before the cut")
            gate.clear()
            await cut_listener(sessionmaker)
            await until(lambda: broker.connection is None)
            for n in range(2):
                await send(api, token, conversation, f"{round_}: in the gap {n}")
            gate.set()
            for _ in range(3):
                got.append((await socket.next_data("1"))["messageAdded"]["content"])
        await send(api, token, conversation, "sentinel")
        got.append((await socket.next_data("1"))["messageAdded"]["content"])
    assert got == ["ready"] + [
        f"{round_}: {what}"
        for round_ in range(3)
        for what in ("before the cut", "in the gap 0", "in the gap 1")
    ] + ["sentinel"]
