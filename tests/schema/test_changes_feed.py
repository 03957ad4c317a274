"""The read side of the change feed (RULES.md, "Sync"): `changes` and `changesCursor`, their
cursors and errors, the current state of what a change names, and what a page costs."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from sqlalchemy import delete, update

from db.changes import ChangeKind, NewChange, record
from db.formats import encode_cursor
from db.models import Change, Feed
from schema.errors import CURSOR_EXPIRED
from tests.factories import BASE_TIME, Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api, StatementCounter

CHANGES = """
query ($first: Int, $after: String) {
  changes(first: $first, after: $after) {
    edges { cursor node { cursor kind conversationId messageId } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
CHANGES_WITH_STATE = """
query ($first: Int, $after: String) {
  changes(first: $first, after: $after) {
    edges { node { kind at conversation { id title } message { id content } } }
  }
}
"""
CURSOR = "{ changesCursor }"
CREATE = "mutation ($t: String!) { createConversation(input: {title: $t}) { id } }"
RENAME = (
    "mutation ($id: ID!, $t: String!) { updateConversation(id: $id, input: {title: $t}) { id } }"
)
DELETE = "mutation ($id: ID!) { deleteConversation(id: $id) { deletedId } }"
TRANSFER = """
mutation ($c: ID!, $u: ID!) {
  transferConversation(input: {conversationId: $c, toUserId: $u}) { id }
}
"""
SEND = """
mutation ($c: ID!, $content: String!) {
  sendMessage(input: {conversationId: $c, content: $content}) { id }
}
"""


def feed_cursor(user_id: int, position: int) -> str:
    raw = json.dumps(["f", user_id, position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def create(api: Api, token: str, title: str) -> str:
    data = await api.data(CREATE, {"t": title}, token=token)
    conversation: str = data["createConversation"]["id"]
    return conversation


async def send(api: Api, token: str, conversation: str, content: str) -> str:
    data = await api.data(SEND, {"c": conversation, "content": content}, token=token)
    message: str = data["sendMessage"]["id"]
    return message


async def page(
    api: Api, token: str, *, first: int | None = None, after: str | None = None
) -> dict[str, Any]:
    data = await api.data(CHANGES, {"first": first, "after": after}, token=token)
    result: dict[str, Any] = data["changes"]
    return result


def edge(
    user_id: int, position: int, kind: str, conversation: str, message: str | None = None
) -> dict[str, Any]:
    cursor = feed_cursor(user_id, position)
    return {
        "cursor": cursor,
        "node": {
            "cursor": cursor,
            "kind": kind,
            "conversationId": conversation,
            "messageId": message,
        },
    }


def info(next_: bool, previous: bool, edges: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "hasNextPage": next_,
        "hasPreviousPage": previous,
        "startCursor": edges[0]["cursor"] if edges else None,
        "endCursor": edges[-1]["cursor"] if edges else None,
    }


async def test_pages_follow_the_feed_with_exact_page_info(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await create(api, token, "one")
    m1 = await send(api, token, conversation, "a")
    m2 = await send(api, token, conversation, "b")
    await api.data(RENAME, {"id": conversation, "t": "two"}, token=token)
    m3 = await send(api, token, conversation, "c")
    everything = [
        edge(alice, 1, "CONVERSATION_CREATED", conversation),
        edge(alice, 2, "MESSAGE_ADDED", conversation, m1),
        edge(alice, 3, "MESSAGE_ADDED", conversation, m2),
        edge(alice, 4, "CONVERSATION_UPDATED", conversation),
        edge(alice, 5, "MESSAGE_ADDED", conversation, m3),
    ]
    assert await page(api, token) == {
        "edges": everything,
        "pageInfo": info(False, False, everything),
    }
    first = await page(api, token, first=2)
    assert first == {"edges": everything[:2], "pageInfo": info(True, False, everything[:2])}
    second = await page(api, token, first=2, after=first["pageInfo"]["endCursor"])
    assert second == {"edges": everything[2:4], "pageInfo": info(True, True, everything[2:4])}
    third = await page(api, token, first=2, after=second["pageInfo"]["endCursor"])
    assert third == {"edges": everything[4:], "pageInfo": info(False, True, everything[4:])}
    assert await page(api, token, first=2, after=third["pageInfo"]["endCursor"]) == {
        "edges": [],
        "pageInfo": info(False, True, []),
    }


async def test_changes_cursor_is_the_end_of_the_feed_then_and_nothing_after_it_is_missed(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    start = (await api.data(CURSOR, token=token))["changesCursor"]
    assert start == feed_cursor(alice, 0)
    assert await page(api, token, after=start) == {"edges": [], "pageInfo": info(False, False, [])}
    conversation = await create(api, token, "one")
    middle = (await api.data(CURSOR, token=token))["changesCursor"]
    message = await send(api, token, conversation, "a")
    after_start = await page(api, token, after=start)
    assert after_start["edges"] == [
        edge(alice, 1, "CONVERSATION_CREATED", conversation),
        edge(alice, 2, "MESSAGE_ADDED", conversation, message),
    ]
    assert middle == after_start["edges"][0]["cursor"]
    assert (await page(api, token, after=middle))["edges"] == after_start["edges"][1:]
    assert (await api.data(CURSOR, token=token))["changesCursor"] == feed_cursor(alice, 2)


async def test_bad_cursors_and_sizes_are_bad_user_input(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice, bob = await make_user(sessionmaker), await make_user(sessionmaker)
    token = token_for(alice)
    await create(api, token, "one")
    bobs = (await api.data(CURSOR, token=token_for(bob)))["changesCursor"]
    not_ours = "not a valid cursor for this connection"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"after": "garbage"}, "after", not_ours),
        ({"after": encode_cursor("message", (BASE_TIME, 1))}, "after", not_ours),
        ({"after": feed_cursor(alice, -1)}, "after", not_ours),
        ({"after": feed_cursor(alice, 2)}, "after", not_ours),  # beyond the head (1)
        ({"after": feed_cursor(alice, True)}, "after", not_ours),  # JSON true, not a position
        ({"after": bobs}, "after", "a cursor of another user's feed"),
        ({"first": 0}, "first", "must be between 1 and 100"),
        ({"first": 101}, "first", "must be between 1 and 100"),
    ]
    for variables, field, reason in cases:
        error = await api.error(CHANGES, variables, token=token)
        assert (error["message"], error["extensions"]) == (
            f"{field}: {reason}",
            {"code": "BAD_USER_INPUT", "fields": {field: reason}},
        ), variables
    error = await api.error(CHANGES, {})
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_a_cursor_before_what_retention_pruned_is_expired(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    async with sessionmaker() as session, session.begin():
        await record(
            session, [NewChange(alice, ChangeKind.CONVERSATION_UPDATED, "c") for _ in range(5)]
        )
    # Retention has taken positions 1-3 (and, mid-way, not yet deleted position 3's row).
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(Change).where(Change.user_id == alice, Change.position < 3))
        await session.execute(update(Feed).where(Feed.user_id == alice).values(pruned_through=3))
    token = token_for(alice)
    for position in (0, 1, 2):
        error = await api.error(CHANGES, {"after": feed_cursor(alice, position)}, token=token)
        assert (error["message"], error["extensions"]) == (
            CURSOR_EXPIRED,
            {"code": "CURSOR_EXPIRED"},
        )
    kept = [edge(alice, p, "CONVERSATION_UPDATED", gid("Conversation", "c")) for p in (4, 5)]
    assert await page(api, token) == {"edges": kept, "pageInfo": info(False, False, kept)}
    assert await page(api, token, after=feed_cursor(alice, 3)) == {
        "edges": kept,
        "pageInfo": info(False, False, kept),
    }
    assert await page(api, token, after=feed_cursor(alice, 4)) == {
        "edges": kept[1:],
        "pageInfo": info(False, True, kept[1:]),
    }


async def test_conversation_and_message_are_current_and_null_once_gone_or_not_the_viewers(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice, bob = await make_user(sessionmaker), await make_user(sessionmaker)
    token = token_for(alice)
    kept = await create(api, token, "kept")
    moved = await create(api, token, "moved")
    gone = await create(api, token, "gone")
    m_kept = await send(api, token, kept, "stays")
    m_moved = await send(api, token, moved, "leaves")
    m_gone = await send(api, token, gone, "vanishes")
    await api.data(RENAME, {"id": kept, "t": "kept, renamed"}, token=token)
    await api.data(TRANSFER, {"c": moved, "u": gid("User", bob)}, token=token)
    await api.data(DELETE, {"id": gone}, token=token)
    data = await api.data(CHANGES_WITH_STATE, token=token)
    nodes = [e["node"] for e in data["changes"]["edges"]]
    renamed = {"id": kept, "title": "kept, renamed"}
    assert [(n["kind"], n["conversation"], n["message"]) for n in nodes] == [
        ("CONVERSATION_CREATED", renamed, None),
        ("CONVERSATION_CREATED", None, None),
        ("CONVERSATION_CREATED", None, None),
        ("MESSAGE_ADDED", renamed, {"id": m_kept, "content": "stays"}),
        ("MESSAGE_ADDED", None, None),
        ("MESSAGE_ADDED", None, None),
        ("CONVERSATION_UPDATED", renamed, None),
        ("CONVERSATION_TRANSFERRED_OUT", None, None),
        ("CONVERSATION_DELETED", None, None),
    ]
    data = await api.data(CHANGES_WITH_STATE, token=token_for(bob))
    assert [(e["node"]["kind"], e["node"]["conversation"]) for e in data["changes"]["edges"]] == [
        ("CONVERSATION_TRANSFERRED_IN", {"id": moved, "title": "moved"})
    ]
    assert m_moved and m_gone


async def test_an_admin_reads_their_own_feed_only(api: Api, sessionmaker: Sessionmaker) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    alice = await make_user(sessionmaker)
    alices = await create(api, token_for(alice), "alice's")
    admins = await create(api, token_for(admin), "admin's")
    # The admin renames alice's conversation: the change is in alice's feed, not the admin's.
    await api.data(RENAME, {"id": alices, "t": "renamed by the admin"}, token=token_for(admin))
    await api.data(TRANSFER, {"c": admins, "u": gid("User", alice)}, token=token_for(admin))
    data = await api.data(CHANGES_WITH_STATE, token=token_for(admin))
    assert [(e["node"]["kind"], e["node"]["conversation"]) for e in data["changes"]["edges"]] == [
        ("CONVERSATION_CREATED", None),  # now alice's: no longer the admin's
        ("CONVERSATION_TRANSFERRED_OUT", None),
    ]
    data = await api.data(CHANGES_WITH_STATE, token=token_for(alice))
    assert [e["node"]["kind"] for e in data["changes"]["edges"]] == [
        "CONVERSATION_CREATED",
        "CONVERSATION_UPDATED",
        "CONVERSATION_TRANSFERRED_IN",
    ]
    error = await api.error(CHANGES, {"after": feed_cursor(alice, 1)}, token=token_for(admin))
    assert error["extensions"]["fields"] == {"after": "a cursor of another user's feed"}


async def test_a_page_of_a_hundred_with_conversation_and_message_costs_three_statements(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    alice = await make_user(sessionmaker)
    conversations = [await make_conversation(sessionmaker, owner_id=alice) for _ in range(10)]
    token = token_for(alice)
    for n in range(100):
        await send(api, token, gid("Conversation", conversations[n % 10]), f"m{n}")
    statements.reset()
    data = await api.data(CHANGES_WITH_STATE, {"first": 100}, token=token)
    nodes = [e["node"] for e in data["changes"]["edges"]]
    assert [n["message"]["content"] for n in nodes] == [f"m{n}" for n in range(100)]
    assert all(n["conversation"] is not None for n in nodes)
    # The viewer, then the page (with the feed's state), the conversations, the messages.
    assert statements.count == 4, statements.seen


SNAPSHOT = """
{
  me {
    conversations(first: 100) {
      edges { node { id title messages(first: 100) { edges { node { id } } } } }
    }
  }
}
"""
ALL_CHANGES = """
query ($after: String) {
  changes(first: 100, after: $after) {
    edges { node { kind conversationId messageId } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_a_snapshot_then_changes_after_the_cursor_taken_before_it_miss_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    """RULES' recipe: changesCursor, then the snapshot, then `changes(after:)`, while writers
    write all along; the snapshot plus the changes after the cursor hold every message and
    title there is at the end."""
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversations = [await create(api, token, f"c{n}") for n in range(3)]

    async def writer(number: int) -> None:
        for n in range(15):
            conversation = conversations[(number + n) % 3]
            await send(api, token, conversation, f"{number}.{n}")
            if n % 5 == 0:
                await api.data(RENAME, {"id": conversation, "t": f"{number}.{n}"}, token=token)

    async def snapshot() -> tuple[str, dict[str, Any]]:
        await asyncio.sleep(0.01)
        cursor: str = (await api.data(CURSOR, token=token))["changesCursor"]
        return cursor, await api.data(SNAPSHOT, token=token)

    *_, (cursor, seen) = await asyncio.gather(writer(0), writer(1), writer(2), snapshot())
    messages = {
        m["node"]["id"]
        for c in seen["me"]["conversations"]["edges"]
        for m in c["node"]["messages"]["edges"]
    }
    titles = {c["node"]["id"]: c["node"]["title"] for c in seen["me"]["conversations"]["edges"]}
    after: str | None = cursor
    while True:
        data = (await api.data(ALL_CHANGES, {"after": after}, token=token))["changes"]
        for change in (e["node"] for e in data["edges"]):
            if change["kind"] == "MESSAGE_ADDED":
                messages.add(change["messageId"])
            elif change["kind"] == "CONVERSATION_UPDATED":
                titles[change["conversationId"]] = "(reloaded)"
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    final = await api.data(SNAPSHOT, token=token)
    assert messages == {
        m["node"]["id"]
        for c in final["me"]["conversations"]["edges"]
        for m in c["node"]["messages"]["edges"]
    }
    assert len(messages) == 45
    # A title that changed after the cursor is known to be stale; the others are current.
    assert {
        c["node"]["id"]: c["node"]["title"]
        for c in final["me"]["conversations"]["edges"]
        if titles[c["node"]["id"]] != "(reloaded)"
    } == {k: v for k, v in titles.items() if v != "(reloaded)"}


EDIT = """
mutation ($id: ID!, $content: String!) { editMessage(id: $id, input: {content: $content}) { id } }
"""
DELETE_MESSAGE = "mutation ($id: ID!) { deleteMessage(id: $id) { deletedId } }"


async def test_an_edited_message_reads_as_it_is_now_and_a_deleted_one_as_null(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    created = await api.data(
        'mutation { createConversation(input: {title: "one"}) { id createdAt } }', token=token
    )
    conversation = created["createConversation"]["id"]
    edited = await send(api, token, conversation, "first words")
    deleted = await send(api, token, conversation, "regretted")
    await api.data(EDIT, {"id": edited, "content": "second thoughts"}, token=token)
    await api.data(DELETE_MESSAGE, {"id": deleted}, token=token)
    data = await api.data(CHANGES_WITH_STATE, token=token)
    conversation_now = {"id": conversation, "title": "one"}
    now = {"id": edited, "content": "second thoughts"}
    assert [
        (e["node"]["kind"], e["node"]["conversation"], e["node"]["message"])
        for e in data["changes"]["edges"]
    ] == [
        ("CONVERSATION_CREATED", conversation_now, None),
        ("MESSAGE_ADDED", conversation_now, now),
        ("MESSAGE_ADDED", conversation_now, None),
        ("MESSAGE_EDITED", conversation_now, now),
        ("MESSAGE_DELETED", conversation_now, None),
    ]
    moments = [e["node"]["at"] for e in data["changes"]["edges"]]
    assert moments[0] == created["createConversation"]["createdAt"]
    assert moments == sorted(moments)
