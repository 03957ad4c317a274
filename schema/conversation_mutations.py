"""Conversation mutations: create, update (title, archived, pinned, tags), mark read, delete and
transfer. Owner or admin, one transaction each; someone else's conversation is NOT_FOUND, as if
it did not exist. Each write that changes something records it in the owner's change feed
(`db.changes.record`), as the transaction's last statement, at the moment it gives the
conversation's `updatedAt`; one that changes nothing (a rename to the same title, a transfer to
the owner, the same tags, an earlier read mark) records nothing. Organizing (archived, pinned,
tags) and read marks add CONVERSATION_UPDATED but leave `updatedAt` alone: the list's order
follows messages and titles (RULES.md, "Organize")."""

from __future__ import annotations

from typing import Any

import orjson
import strawberry
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from db import conversations as conversation_data
from db import messages as message_data
from db import users as user_data
from db.changes import ChangeKind, NewChange, record
from db.engine import write_transaction
from db.models import utcnow
from loaders import Viewer
from schema.errors import BadUserInput, NotFound
from schema.inputs import (
    CreateConversationInput,
    TransferConversationInput,
    UpdateConversationInput,
)
from schema.permissions import require_viewer
from schema.relay import decode_conversation_id, decode_id, decode_user_id, to_global_id
from schema.types import Conversation, DeletePayload, Info
from schema.validation import clean_tags, raise_for, title_problem, trimmed

INACTIVE_TARGET = "this user is deactivated"


def owner_scope(viewer: Viewer) -> int | None:
    """Whose conversations a viewer may change: their own, or anyone's (None) for an admin."""
    return None if viewer.is_admin else viewer.id


async def lock_conversation(
    session: AsyncSession, *, conversation_id: str, viewer: Viewer
) -> Row[Any]:
    """The conversation the viewer may change, row-locked until the transaction ends; another
    user's looks exactly like a missing one (NOT_FOUND)."""
    row = await conversation_data.get_conversation_for_update(
        session, conversation_id=conversation_id, owner_id=owner_scope(viewer)
    )
    if row is None:
        raise NotFound()
    return row


def clean_title(title: str) -> str:
    cleaned = trimmed(title)
    raise_for({"title": title_problem(cleaned)})
    return cleaned


def remember(info: Info, row: Row[Any]) -> Conversation:
    """Refresh the request's loaders after a write, so the payload shows the new state."""
    loaders = info.context.loaders
    loaders.forget_conversation(row.id)
    loaders.conversation_by_id.put(row.id, row)
    return Conversation.from_row(row)


@strawberry.type
class ConversationMutations:
    @strawberry.mutation(description="A new conversation owned by the viewer.")
    async def create_conversation(self, info: Info, input: CreateConversationInput) -> Conversation:
        viewer = require_viewer(info.context)
        title = clean_title(input.title)
        async with write_transaction(info.context.sessionmaker) as session:
            row = await conversation_data.create_conversation(
                session, owner_id=viewer.id, title=title
            )
            await record(
                session,
                [NewChange(viewer.id, ChangeKind.CONVERSATION_CREATED, row.id)],
                at=row.updated_at,
            )
        return remember(info, row)

    @strawberry.mutation(
        description="Rename, archive, pin or tag a conversation (omitted fields stay as they "
        "are); owner or admin. Only a new title bumps updatedAt."
    )
    async def update_conversation(
        self, info: Info, id: strawberry.ID, input: UpdateConversationInput
    ) -> Conversation:
        viewer = require_viewer(info.context)
        conversation_id = decode_conversation_id(id)
        # Omitted and null alike leave a field as it is: none of them can be null.
        title = clean_title(input.title) if isinstance(input.title, str) else None
        tags = clean_tags(input.tags) if isinstance(input.tags, list) else None
        async with write_transaction(info.context.sessionmaker) as session:
            row = await lock_conversation(session, conversation_id=conversation_id, viewer=viewer)
            values: dict[str, Any] = {}
            if isinstance(title, str) and row.title != title:
                values["title"] = title
            for name in ("archived", "pinned"):
                value = getattr(input, name)
                if isinstance(value, bool) and getattr(row, name) != value:
                    values[name] = value
            if isinstance(tags, list):
                written = orjson.dumps(tags).decode()
                if row.tags != written:
                    values["tags"] = written
                    await conversation_data.set_tags(
                        session, conversation_id=conversation_id, tags=tags
                    )
            if values:
                at = utcnow()
                if "title" in values:
                    values["updated_at"] = at = max(row.updated_at, at)
                row = await conversation_data.update_conversation(
                    session, conversation_id=conversation_id, values=values
                )
                await record(
                    session,
                    [NewChange(row.user_id, ChangeKind.CONVERSATION_UPDATED, row.id)],
                    at=at,
                )
        return remember(info, row)

    @strawberry.mutation(
        description="Mark the conversation read up to `messageId` (omitted: its last "
        "message); owner or admin. Never moves back (by createdAt, then id): an earlier mark "
        "changes nothing. A message of another conversation is NOT_FOUND."
    )
    async def mark_conversation_read(
        self, info: Info, id: strawberry.ID, message_id: strawberry.ID | None = None
    ) -> Conversation:
        viewer = require_viewer(info.context)
        conversation_id = decode_conversation_id(id)
        message_key = None
        if message_id is not None:
            key = decode_id(message_id, "Message", field="messageId")
            assert isinstance(key, int)
            message_key = key
        async with write_transaction(info.context.sessionmaker) as session:
            row = await lock_conversation(session, conversation_id=conversation_id, viewer=viewer)
            if message_key is None:
                message = await message_data.last_message(session, conversation_id=conversation_id)
            else:
                message = await message_data.get_message(session, message_id=message_key)
                if message is None or message.conversation_id != conversation_id:
                    raise NotFound()
            mark = (row.last_read_at, row.last_read_message_id)
            if message is not None and (mark[0] is None or (message.created_at, message.id) > mark):
                row = await conversation_data.update_conversation(
                    session,
                    conversation_id=conversation_id,
                    values={
                        "last_read_message_id": message.id,
                        "last_read_at": message.created_at,
                    },
                )
                await record(
                    session, [NewChange(row.user_id, ChangeKind.CONVERSATION_UPDATED, row.id)]
                )
        return remember(info, row)

    @strawberry.mutation(description="Delete a conversation and its messages; owner or admin.")
    async def delete_conversation(self, info: Info, id: strawberry.ID) -> DeletePayload:
        viewer = require_viewer(info.context)
        conversation_id = decode_conversation_id(id)
        async with write_transaction(info.context.sessionmaker) as session:
            owner = await conversation_data.delete_conversation(
                session, conversation_id=conversation_id, owner_id=owner_scope(viewer)
            )
            if owner is not None:
                # Its subscribers end (NOT_FOUND) at once, not at a message that never comes.
                await info.context.services.broker.publish(
                    session, conversation_id=conversation_id, message_ids=[]
                )
                # One change for the conversation, none per message it held.
                await record(
                    session,
                    [NewChange(owner, ChangeKind.CONVERSATION_DELETED, conversation_id)],
                )
        if owner is None:
            raise NotFound()
        info.context.loaders.forget_conversation(conversation_id)
        deleted_id = to_global_id("Conversation", conversation_id)
        return DeletePayload(deleted_id=strawberry.ID(deleted_id))

    @strawberry.mutation(
        description="Give a conversation and its messages to another user; owner or admin."
    )
    async def transfer_conversation(
        self, info: Info, input: TransferConversationInput
    ) -> Conversation:
        viewer = require_viewer(info.context)
        conversation_id = decode_conversation_id(input.conversation_id, field="conversationId")
        target_id = decode_user_id(input.to_user_id, field="toUserId")
        async with write_transaction(info.context.sessionmaker) as session:
            # The row lock makes concurrent transfers take turns; each re-reads the owner
            # once the one before it has committed, so a former owner finds nothing.
            row = await lock_conversation(session, conversation_id=conversation_id, viewer=viewer)
            target = await user_data.get_user_for_share(session, user_id=target_id)
            if target is None:
                raise NotFound()
            if not target.is_active:
                raise BadUserInput.one("toUserId", INACTIVE_TARGET)
            if row.user_id != target_id:
                former = row.user_id
                row = await conversation_data.update_conversation(
                    session,
                    conversation_id=conversation_id,
                    values={"user_id": target_id, "updated_at": max(row.updated_at, utcnow())},
                )
                # The former owner's subscribers to it end (NOT_FOUND) at this commit.
                await info.context.services.broker.publish(
                    session, conversation_id=conversation_id, message_ids=[]
                )
                # OUT is the last change of it in the former owner's feed: nothing they do
                # can reach it after this commit.
                await record(
                    session,
                    [
                        NewChange(former, ChangeKind.CONVERSATION_TRANSFERRED_OUT, row.id),
                        NewChange(target_id, ChangeKind.CONVERSATION_TRANSFERRED_IN, row.id),
                    ],
                    at=row.updated_at,
                )
        info.context.loaders.user_by_id.put(target.id, target)
        return remember(info, row)
