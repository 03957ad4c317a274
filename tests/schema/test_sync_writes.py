"""The write side of sync (RULES.md, "Sync"): every write records its changes in the owner's
feed, in the same transaction; edits keep revisions; deletes leave a tombstone in the feed
only; `updatedAt` is the time of the conversation's latest change."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select

from db.changes import read_changes
from db.formats import stamp
from db.models import Message
from tests.factories import (
    BASE_TIME,
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api

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
