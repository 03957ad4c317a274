"""The write side of sync (RULES.md, "Sync"): every write records its changes in the owner's
feed, in the same transaction; edits keep revisions; deletes leave a tombstone in the feed
only; `updatedAt` is the time of the conversation's latest change."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
from sqlalchemy import select

from app.settings import Settings
from db.changes import ChangeKind, FeedState, NewChange, feed_state, read_changes, record
from db.formats import stamp
from db.models import Message, MessageRevision
from schema.plan import PLAN_MISSED
from tests.factories import (
    BASE_TIME,
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, StatementCounter, codes, running, serve

CREATE = "mutation ($t: String!) { createConversation(input: {title: $t}) { id updatedAt } }"
RENAME = """
mutation ($id: ID!, $t: String!) { updateConversation(id: $id, input: {title: $t}) { updatedAt } }
"""
DELETE_CONVERSATION = "mutation ($id: ID!) { deleteConversation(id: $id) { deletedId } }"
TRANSFER = """
mutation ($c: ID!, $u: ID!) {
  transferConversation(input: {conversationId: $c, toUserId: $u}) { updatedAt }
}
"""
SEND = """
mutation ($c: ID!, $content: String!, $clientId: String) {
  sendMessage(input: {conversationId: $c, content: $content, clientId: $clientId}) {
    id createdAt conversation { updatedAt }
  }
}
"""
IMPORT = """
mutation ($c: ID!, $messages: [MessageInput!]!) {
  importMessages(input: {conversationId: $c, messages: $messages}) {
    importedCount conversation { updatedAt }
  }
}
"""


async def feed(sm: Sessionmaker, user_id: int) -> list[tuple[int, str, str, int | None, str]]:
    """The user's whole feed: (position, kind, conversation id, message id, at)."""
    async with sm() as session:
        rows = await read_changes(session, user_id=user_id, after=0, limit=100_000)
    return [
        (row.position, row.kind, row.conversation_id, row.message_id, stamp(row.at)) for row in rows
    ]


async def message_ids(sm: Sessionmaker, conversation_id: str) -> list[int]:
    """The ids of a conversation's stored messages, in id order."""
    async with sm() as session:
        statement = select(Message.id).where(Message.conversation_id == conversation_id)
        statement = statement.order_by(Message.id)
        return list((await session.execute(statement)).scalars())


def key(global_id: str) -> str:
    """The key of a global id (what the feed stores)."""
    return base64.b64decode(global_id).decode().partition(":")[2]


async def test_creating_and_renaming_record_their_changes_at_updated_at(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    token = token_for(user)
    created = (await api.data(CREATE, {"t": "First"}, token=token))["createConversation"]
    conversation = key(created["id"])
    renamed = (await api.data(RENAME, {"id": created["id"], "t": "Second"}, token=token))[
        "updateConversation"
    ]
    # The same title again changes nothing, and records nothing.
    await api.data(RENAME, {"id": created["id"], "t": "Second"}, token=token)
    assert await feed(sessionmaker, user) == [
        (1, "CONVERSATION_CREATED", conversation, None, created["updatedAt"]),
        (2, "CONVERSATION_UPDATED", conversation, None, renamed["updatedAt"]),
    ]


async def test_deleting_a_conversation_records_one_change_not_one_per_message(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user, other = await make_user(sessionmaker), await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    await make_messages(sessionmaker, conversation_id=conversation, count=5)
    variables = {"id": gid("Conversation", conversation)}
    refused = await api.error(DELETE_CONVERSATION, variables, token=token_for(other))
    assert refused["extensions"]["code"] == "NOT_FOUND"
    await api.data(DELETE_CONVERSATION, variables, token=token_for(user))
    again = await api.error(DELETE_CONVERSATION, variables, token=token_for(user))
    assert again["extensions"]["code"] == "NOT_FOUND"
    [(position, kind, named, message, _)] = await feed(sessionmaker, user)
    assert (position, kind, named, message) == (1, "CONVERSATION_DELETED", conversation, None)
    assert await feed(sessionmaker, other) == []


async def test_an_admin_deleting_records_in_the_owners_feed(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user, admin = await make_user(sessionmaker), await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    await api.data(
        DELETE_CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(admin)
    )
    assert [change[1:4] for change in await feed(sessionmaker, user)] == [
        ("CONVERSATION_DELETED", conversation, None)
    ]
    assert await feed(sessionmaker, admin) == []


async def test_a_transfer_is_out_last_for_the_old_owner_and_in_for_the_new(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    old, new = await make_user(sessionmaker), await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=old, updated_at=BASE_TIME)
    c = gid("Conversation", conversation)
    sent = (await api.data(SEND, {"c": c, "content": "before"}, token=token_for(old)))[
        "sendMessage"
    ]
    moved = (await api.data(TRANSFER, {"c": c, "u": gid("User", new)}, token=token_for(old)))[
        "transferConversation"
    ]
    assert moved["updatedAt"] > sent["createdAt"]
    # The old owner can no longer reach it; the new owner's writes go to the new feed.
    refused = await api.error(SEND, {"c": c, "content": "late"}, token=token_for(old))
    assert refused["extensions"]["code"] == "NOT_FOUND"
    after = (await api.data(SEND, {"c": c, "content": "after"}, token=token_for(new)))[
        "sendMessage"
    ]
    # Transferring to the owner changes nothing and records nothing.
    await api.data(TRANSFER, {"c": c, "u": gid("User", new)}, token=token_for(new))
    sent_id, after_id = int(key(sent["id"])), int(key(after["id"]))
    assert await feed(sessionmaker, old) == [
        (1, "MESSAGE_ADDED", conversation, sent_id, sent["createdAt"]),
        (2, "CONVERSATION_TRANSFERRED_OUT", conversation, None, moved["updatedAt"]),
    ]
    assert await feed(sessionmaker, new) == [
        (1, "CONVERSATION_TRANSFERRED_IN", conversation, None, moved["updatedAt"]),
        (2, "MESSAGE_ADDED", conversation, after_id, after["createdAt"]),
    ]


async def test_a_send_records_one_change_and_a_resent_client_id_none(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user, admin = await make_user(sessionmaker), await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    c = gid("Conversation", conversation)
    first = (
        await api.data(SEND, {"c": c, "content": "hi", "clientId": "k"}, token=token_for(user))
    )["sendMessage"]
    again = (
        await api.data(SEND, {"c": c, "content": "other", "clientId": "k"}, token=token_for(user))
    )["sendMessage"]
    assert again == first
    # An admin's send goes to the owner's feed.
    by_admin = (await api.data(SEND, {"c": c, "content": "admin"}, token=token_for(admin)))[
        "sendMessage"
    ]
    assert await feed(sessionmaker, user) == [
        (1, "MESSAGE_ADDED", conversation, int(key(first["id"])), first["createdAt"]),
        (2, "MESSAGE_ADDED", conversation, int(key(by_admin["id"])), by_admin["createdAt"]),
    ]
    assert first["conversation"]["updatedAt"] == first["createdAt"]
    assert await feed(sessionmaker, admin) == []


async def test_an_import_records_one_change_per_message_and_bumps_updated_at_to_now(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    old = BASE_TIME.replace(year=2020)
    messages: list[dict[str, Any]] = [
        {"role": "USER", "content": f"old {i}", "createdAt": old.isoformat()} for i in range(3)
    ]
    c = gid("Conversation", conversation)
    data = await api.data(IMPORT, {"c": c, "messages": messages}, token=token_for(user))
    updated_at = data["importMessages"]["conversation"]["updatedAt"]
    assert updated_at > BASE_TIME.isoformat()
    ids = await message_ids(sessionmaker, conversation)
    assert len(ids) == 3
    assert await feed(sessionmaker, user) == [
        (n + 1, "MESSAGE_ADDED", conversation, ids[n], updated_at) for n in range(3)
    ]
    # A refused import records nothing.
    bad = await api.error(
        IMPORT,
        {"c": gid("Conversation", conversation), "messages": [{"role": "USER", "content": ""}]},
        token=token_for(user),
    )
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"
    assert len(await feed(sessionmaker, user)) == 3


EDIT = """
mutation ($id: ID!, $content: String!, $expected: Int) {
  editMessage(id: $id, input: {content: $content, expectedRevision: $expected}) {
    id content createdAt revision editedAt revisions { revision content createdAt }
    conversation { updatedAt }
  }
}
"""
DELETE_MESSAGE = "mutation ($id: ID!) { deleteMessage(id: $id) { deletedId } }"
MESSAGES = """
query ($id: ID!) {
  conversation(id: $id) {
    updatedAt messageCount lastMessage { id content }
    messages(first: 100) { edges { node { id content revision editedAt } } }
  }
}
"""
NODES = """
query ($ids: [ID!]!, $id: ID!) { node(id: $id) { id } nodes(ids: $ids) { id } }
"""


async def revision_rows(sm: Sessionmaker) -> list[tuple[int, int, str]]:
    async with sm() as session:
        statement = select(
            MessageRevision.message_id, MessageRevision.revision, MessageRevision.content
        ).order_by(MessageRevision.message_id, MessageRevision.revision)
        return [tuple(row) for row in (await session.execute(statement)).all()]  # type: ignore[misc]


async def test_edits_keep_every_revision_set_edited_at_and_bump_updated_at(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    first, second = await make_messages(sessionmaker, conversation_id=conversation, count=2)
    m = gid("Message", first)
    token = token_for(user)
    created = stamp(BASE_TIME)
    one = (await api.data(EDIT, {"id": m, "content": "v2", "expected": 1}, token=token))[
        "editMessage"
    ]
    two = (await api.data(EDIT, {"id": m, "content": "v3"}, token=token))["editMessage"]
    assert one == {
        "id": m,
        "content": "v2",
        "createdAt": created,
        "revision": 2,
        "editedAt": one["editedAt"],
        "revisions": [
            {"revision": 1, "content": "message 0", "createdAt": created},
            {"revision": 2, "content": "v2", "createdAt": one["editedAt"]},
        ],
        "conversation": {"updatedAt": one["editedAt"]},
    }
    assert two == {
        "id": m,
        "content": "v3",
        "createdAt": created,
        "revision": 3,
        "editedAt": two["editedAt"],
        "revisions": [
            {"revision": 1, "content": "message 0", "createdAt": created},
            {"revision": 2, "content": "v2", "createdAt": one["editedAt"]},
            {"revision": 3, "content": "v3", "createdAt": two["editedAt"]},
        ],
        "conversation": {"updatedAt": two["editedAt"]},
    }
    assert created < one["editedAt"] <= two["editedAt"]
    # The same content again changes nothing and records nothing.
    same = (await api.data(EDIT, {"id": m, "content": "v3", "expected": 3}, token=token))[
        "editMessage"
    ]
    assert same == two
    # The message keeps its place.
    page = (await api.data(MESSAGES, {"id": gid("Conversation", conversation)}, token=token))[
        "conversation"
    ]
    assert page["messages"]["edges"] == [
        {"node": {"id": m, "content": "v3", "revision": 3, "editedAt": two["editedAt"]}},
        {
            "node": {
                "id": gid("Message", second),
                "content": "message 1",
                "revision": 1,
                "editedAt": None,
            }
        },
    ]
    assert page["updatedAt"] == two["editedAt"]
    assert await feed(sessionmaker, user) == [
        (1, "MESSAGE_EDITED", conversation, first, one["editedAt"]),
        (2, "MESSAGE_EDITED", conversation, first, two["editedAt"]),
    ]


async def test_a_stale_expected_revision_is_conflict_and_changes_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    [message] = await make_messages(sessionmaker, conversation_id=conversation, count=1)
    m, token = gid("Message", message), token_for(user)
    await api.data(EDIT, {"id": m, "content": "v2", "expected": 1}, token=token)
    before = await api.data(MESSAGES, {"id": gid("Conversation", conversation)}, token=token)
    for stale in (1, 3, 0, -1):
        error = await api.error(EDIT, {"id": m, "content": "v3", "expected": stale}, token=token)
        assert error["extensions"] == {
            "code": "CONFLICT",
            "fields": {"expectedRevision": "the message is at revision 2"},
            "currentRevision": 2,
        }
    assert await api.data(MESSAGES, {"id": gid("Conversation", conversation)}, token=token) == (
        before
    )
    assert await revision_rows(sessionmaker) == [(message, 1, "message 0")]
    assert [change[1] for change in await feed(sessionmaker, user)] == ["MESSAGE_EDITED"]


async def test_bad_edits_are_refused_and_change_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user, other = await make_user(sessionmaker), await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    [message] = await make_messages(sessionmaker, conversation_id=conversation, count=1)
    m = gid("Message", message)
    cases = [
        ({"id": m, "content": ""}, user, "BAD_USER_INPUT"),
        ({"id": m, "content": "x" * 32_001}, user, "BAD_USER_INPUT"),
        ({"id": m, "content": "a\x00b"}, user, "BAD_USER_INPUT"),
        ({"id": gid("Conversation", conversation), "content": "x"}, user, "BAD_USER_INPUT"),
        ({"id": "nonsense", "content": "x"}, user, "BAD_USER_INPUT"),
        ({"id": gid("Message", message + 1000), "content": "x"}, user, "NOT_FOUND"),
        ({"id": m, "content": "x"}, other, "NOT_FOUND"),
    ]
    for variables, who, code in cases:
        error = await api.error(EDIT, variables, token=token_for(who))
        assert error["extensions"]["code"] == code, (variables, error)
    content = await api.error(EDIT, {"id": m, "content": ""}, token=token_for(user))
    assert content["extensions"]["fields"] == {"content": "must be 1-32000 characters"}
    anonymous = await api.error(EDIT, {"id": m, "content": "x"})
    assert anonymous["extensions"]["code"] == "UNAUTHENTICATED"
    refused = await api.error(DELETE_MESSAGE, {"id": m}, token=token_for(other))
    assert refused["extensions"]["code"] == "NOT_FOUND"
    page = await api.data(
        MESSAGES, {"id": gid("Conversation", conversation)}, token=token_for(user)
    )
    assert page["conversation"]["messages"]["edges"] == [
        {"node": {"id": m, "content": "message 0", "revision": 1, "editedAt": None}}
    ]
    assert await revision_rows(sessionmaker) == []
    assert await feed(sessionmaker, user) == [] and await feed(sessionmaker, other) == []


async def test_an_admin_edits_and_deletes_into_the_owners_feed(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user, admin = await make_user(sessionmaker), await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    first, second = await make_messages(sessionmaker, conversation_id=conversation, count=2)
    edited = (
        await api.data(EDIT, {"id": gid("Message", first), "content": "x"}, token=token_for(admin))
    )["editMessage"]
    deleted = await api.data(DELETE_MESSAGE, {"id": gid("Message", second)}, token=token_for(admin))
    assert deleted == {"deleteMessage": {"deletedId": gid("Message", second)}}
    changes = await feed(sessionmaker, user)
    assert [change[:4] for change in changes] == [
        (1, "MESSAGE_EDITED", conversation, first),
        (2, "MESSAGE_DELETED", conversation, second),
    ]
    assert changes[0][4] == edited["editedAt"]
    assert await feed(sessionmaker, admin) == []


async def test_a_deleted_message_is_gone_from_every_read_but_the_feed(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    first, last = await make_messages(sessionmaker, conversation_id=conversation, count=2)
    token, c, m = token_for(user), gid("Conversation", conversation), gid("Message", last)
    await api.data(EDIT, {"id": m, "content": "edited"}, token=token)
    assert len(await revision_rows(sessionmaker)) == 1
    data = await api.data(DELETE_MESSAGE, {"id": m}, token=token)
    assert data == {"deleteMessage": {"deletedId": m}}
    page = (await api.data(MESSAGES, {"id": c}, token=token))["conversation"]
    changes = await feed(sessionmaker, user)
    assert [change[:4] for change in changes] == [
        (1, "MESSAGE_EDITED", conversation, last),
        (2, "MESSAGE_DELETED", conversation, last),
    ]
    assert page == {
        "updatedAt": changes[1][4],
        "messageCount": 1,
        "lastMessage": {"id": gid("Message", first), "content": "message 0"},
        "messages": {
            "edges": [
                {
                    "node": {
                        "id": gid("Message", first),
                        "content": "message 0",
                        "revision": 1,
                        "editedAt": None,
                    }
                }
            ]
        },
    }
    assert changes[1][4] > changes[0][4]
    nodes = await api.data(NODES, {"id": m, "ids": [m, gid("Message", first)]}, token=token)
    assert nodes == {"node": None, "nodes": [None, {"id": gid("Message", first)}]}
    assert await revision_rows(sessionmaker) == []
    again = await api.error(DELETE_MESSAGE, {"id": m}, token=token)
    assert again["extensions"]["code"] == "NOT_FOUND"
    edit = await api.error(EDIT, {"id": m, "content": "back"}, token=token)
    assert edit["extensions"]["code"] == "NOT_FOUND"
    assert len(await feed(sessionmaker, user)) == 2


async def test_concurrent_edits_expecting_one_revision_let_exactly_one_through(
    api: Api, sessionmaker: Sessionmaker, database_url: str
) -> None:
    """The conversation's row lock makes edits take turns: each reads the revision the one
    before it committed, so of ten edits expecting revision 1, one succeeds and nine are
    CONFLICT (on PostgreSQL they truly overlap; SQLite has one writer at a time)."""
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    [message] = await make_messages(sessionmaker, conversation_id=conversation, count=1)
    m, token = gid("Message", message), token_for(user)
    results = await asyncio.gather(
        *(
            api.run(EDIT, {"id": m, "content": f"edit {n}", "expected": 1}, token=token)
            for n in range(10)
        )
    )
    won = [result["data"]["editMessage"] for result in results if not result.get("errors")]
    lost = [codes(result) for result in results if result.get("errors")]
    assert len(won) == 1 and lost == [["CONFLICT"]] * 9
    assert won[0]["revision"] == 2
    assert await revision_rows(sessionmaker) == [(message, 1, "message 0")]
    assert [change[1:4] for change in await feed(sessionmaker, user)] == [
        ("MESSAGE_EDITED", conversation, message)
    ]


# `conversation` keeps the page on rows (not JSON) with or without `revisions`.
REVISIONS = """
query ($id: ID!) {
  conversation(id: $id) {
    messages(first: 100) { edges { node { id revision editedAt conversation { id } %s } } }
  }
}
"""


def data_statements(statements: StatementCounter) -> int:
    """The statements that read data: on PostgreSQL the viewer's own lookup is skipped when its
    check rides in a JSON page's statement (`schema.context.ViewerCache`), and not otherwise."""
    return sum(1 for text in statements.seen if not text.startswith("SELECT users."))


async def test_a_page_selecting_revisions_costs_one_statement_more(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    ids = await make_messages(sessionmaker, conversation_id=conversation, count=30)
    token, c = token_for(user), gid("Conversation", conversation)
    for message in ids[::3]:
        for n in range(2):
            await api.data(EDIT, {"id": gid("Message", message), "content": f"e{n}"}, token=token)
    statements.reset()
    await api.data(REVISIONS % "", {"id": c}, token=token)
    without = data_statements(statements)
    statements.reset()
    data = await api.data(REVISIONS % "revisions { revision content }", {"id": c}, token=token)
    assert data_statements(statements) == without + 1
    edges = data["conversation"]["messages"]["edges"]
    assert [len(edge["node"]["revisions"]) for edge in edges] == [
        3 if n % 3 == 0 else 1 for n in range(30)
    ]
    assert edges[0]["node"]["revisions"] == [
        {"revision": 1, "content": "message 0"},
        {"revision": 2, "content": "e0"},
        {"revision": 3, "content": "e1"},
    ]
    # A page of messages never edited needs no statement for them.
    other = await make_conversation(sessionmaker, owner_id=user)
    await make_messages(sessionmaker, conversation_id=other, count=5)
    statements.reset()
    await api.data(REVISIONS % "", {"id": gid("Conversation", other)}, token=token)
    without = data_statements(statements)
    statements.reset()
    await api.data(
        REVISIONS % "revisions { revision }", {"id": gid("Conversation", other)}, token=token
    )
    assert data_statements(statements) == without


def kind(statement: str, prefixes: list[str]) -> str:
    """The first of `prefixes` the statement starts with (whitespace aside), else itself."""
    normal = " ".join(statement.split())
    return next((prefix for prefix in prefixes if normal.startswith(prefix)), normal)


async def test_a_send_adds_one_statement_for_the_feed(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter, database_url: str
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    c, token = gid("Conversation", conversation), token_for(user)
    query = 'mutation ($c: ID!) { sendMessage(input: {conversationId: $c, content: "x"}) { id } }'
    await api.data(query, {"c": c}, token=token)
    statements.reset()
    await api.data(query, {"c": c}, token=token)
    # The statements of a send, the feed's last before the commit: five (issue 14's W1). On
    # PostgreSQL the NOTIFY that tells the conversation's subscribers rides in the feed's
    # statement (`db.notifications`), no statement of its own.
    before = [
        "SELECT users",  # the viewer
        *(["BEGIN IMMEDIATE"] if database_url.startswith("sqlite") else []),
        "SELECT conversations",  # the lock
        "INSERT INTO messages",
        "UPDATE conversations",
    ]
    feed_write = "INSERT INTO changes" if database_url.startswith("sqlite") else "WITH head AS"
    expected = [*before, feed_write]
    assert [kind(statement, expected) for statement in statements.seen] == expected
    assert "AS v(channel, payload)" in statements.seen[-1] or database_url.startswith("sqlite")
    # A thousand imported messages are one statement for the feed too.
    messages = [{"role": "USER", "content": f"m{i}"} for i in range(1000)]
    statements.reset()
    await api.data(IMPORT, {"c": c, "messages": messages}, token=token)
    assert [kind(s, [feed_write]) for s in statements.seen].count(feed_write) == 1
    assert len(await feed(sessionmaker, user)) == 1002


async def test_each_server_prunes_old_changes_in_the_background(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    """With `CHATQL_CHANGE_RETENTION=1`, a change is gone about a second after it was
    written, and `pruned_through` says so; the feed goes on after its head."""
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    c, token = gid("Conversation", conversation), token_for(user)
    async with serve(settings.model_copy(update={"change_retention": 1})) as short:
        await short.data(SEND, {"c": c, "content": "one"}, token=token)
        await short.data(SEND, {"c": c, "content": "two"}, token=token)
        async with asyncio.timeout(10):
            while True:
                async with sessionmaker() as session:
                    state = await feed_state(session, user_id=user)
                if state.pruned_through == 2:
                    break
                await asyncio.sleep(0.1)
        assert await feed(sessionmaker, user) == []
        assert state == FeedState(head=2, pruned_through=2)
    # Retention 0 keeps everything, however old.
    async with sessionmaker() as session, session.begin():
        old = NewChange(user, ChangeKind.CONVERSATION_UPDATED, conversation)
        await record(session, [old], at=BASE_TIME.replace(year=2000))
    async with running(settings.model_copy(update={"change_retention": 0})):
        await asyncio.sleep(0.5)
    assert [change[:2] for change in await feed(sessionmaker, user)] == [
        (3, "CONVERSATION_UPDATED")
    ]


async def test_a_transfer_racing_sends_is_the_last_change_in_the_old_feed(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    """Sends by the owner and by an admin race a transfer: every stored message is in exactly
    one feed, the old owner's changes of it end with OUT, the new owner's begin with IN."""
    old, new = await make_user(sessionmaker), await make_user(sessionmaker)
    admin = await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=old)
    c = gid("Conversation", conversation)
    sends = [
        api.run(SEND, {"c": c, "content": f"{who} {n}"}, token=token_for(who))
        for n in range(8)
        for who in (old, admin)
    ]
    transfer = api.run(TRANSFER, {"c": c, "u": gid("User", new)}, token=token_for(admin))
    results = await asyncio.gather(*sends[:8], transfer, *sends[8:])
    assert not results[8].get("errors"), results[8]
    sent = {
        int(key(result["data"]["sendMessage"]["id"]))
        for result in results
        if "sendMessage" in (result.get("data") or {})
    }
    assert all(codes(result) in ([], ["NOT_FOUND"]) for result in results)
    old_feed = [change[1:4] for change in await feed(sessionmaker, old)]
    new_feed = [change[1:4] for change in await feed(sessionmaker, new)]
    assert old_feed[-1] == ("CONVERSATION_TRANSFERRED_OUT", conversation, None)
    assert new_feed[0] == ("CONVERSATION_TRANSFERRED_IN", conversation, None)
    added = old_feed[:-1] + new_feed[1:]
    assert all(change[:2] == ("MESSAGE_ADDED", conversation) for change in added)
    assert sorted(change[2] or 0 for change in added) == sorted(sent)
    assert sorted(sent) == await message_ids(sessionmaker, conversation)


SCREEN = """
query ($id: ID!) {
  conversation(id: $id) {
    title
    messages(last: 50) {
      pageInfo { hasPreviousPage startCursor }
      edges { cursor node { id content createdAt %s } }
    }
  }
}
"""


@pytest.mark.parametrize(
    ("more", "json"),
    [
        ("", True),
        ("revision editedAt", True),
        ("revision editedAt revisions { revision content createdAt }", False),
        ("revisions { __typename revision }", False),
    ],
    ids=["plain", "revision", "revisions", "some-revisions"],
)
async def test_message_pages_with_revision_fields_run_on_the_plan_in_fixed_statements(
    api: Api,
    sessionmaker: Sessionmaker,
    settings: Settings,
    statements: StatementCounter,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    more: str,
    json: bool,
) -> None:
    """`revision` and `editedAt` cost nothing more than the page (on PostgreSQL the database
    still writes the page as JSON, with the conversation's row); `revisions` one statement
    more than a page built from rows, for the whole page; the answer is Strawberry's, and the
    plan serves it."""
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    ids = await make_messages(sessionmaker, conversation_id=conversation, count=40)
    token, c = token_for(user), gid("Conversation", conversation)
    for message in ids[::7]:
        for n in range(2):
            await api.data(EDIT, {"id": gid("Message", message), "content": f"e{n}"}, token=token)
    query = SCREEN % more
    caplog.set_level(logging.DEBUG, logger="chatql.plan")
    statements.reset()
    planned = await api.data(query, {"id": c}, token=token)
    # The viewer, the conversation and its page (one statement for both when PostgreSQL
    # writes the page as JSON), and the revisions of the page's edited messages.
    if json:
        expected = 2 if database_url.startswith("postgresql") else 3
    else:
        expected = 3 + 1
    assert statements.count == expected, statements.seen
    assert not [record for record in caplog.records if record.message == PLAN_MISSED]
    plain_settings = settings.model_copy(update={"query_plan": False, "document_cache": 0})
    async with serve(plain_settings) as plain:
        assert await plain.data(query, {"id": c}, token=token) == planned
    if more:
        nodes = [edge["node"] for edge in planned["conversation"]["messages"]["edges"]]
        assert [node.get("revision", len(node.get("revisions", ()))) for node in nodes] == [
            3 if n % 7 == 0 else 1 for n in range(40)
        ]
