"""Message edits and deletes ("sync" extension, RULES.md "Sync"): owner or admin, one
transaction each; someone else's message is NOT_FOUND, as if it did not exist.

Both lock the message's conversation first (`db.messages.lock_message_conversation`), as sends
and imports do, so the writes to one conversation's messages take turns: of two edits that
expect the same revision, the second reads the first's result once it has committed and is
refused with CONFLICT. Both bump the conversation's `updatedAt` to the moment of the write and,
last, record the change in the owner's feed at that moment.

- `editMessage` keeps the old content as a revision, raises `revision` and sets `editedAt`;
  the message keeps its place and `createdAt`. New content equal to the current one changes
  nothing and records nothing (as a rename to the same title). `expectedRevision`, when given
  and not the current revision, is CONFLICT (`extensions.currentRevision`), nothing changed.
- `deleteMessage` deletes the row (its revisions go with it): the message is out of every read
  by construction, and only MESSAGE_DELETED in the feed remains. Again is NOT_FOUND.
"""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from db import conversations as conversation_data
from db import messages as message_data
from db.branches import reparent
from db.changes import ChangeKind, NewChange, record
from db.engine import write_transaction
from db.models import utcnow
from db.streams import STREAMING
from loaders import Viewer
from schema.conversation_mutations import owner_scope, remember
from schema.errors import BadUserInput, NotFound, StaleRevision
from schema.permissions import require_viewer
from schema.relay import decode_id, to_global_id
from schema.types import DeletePayload, Info, Message
from schema.validation import content_problem, raise_for


@strawberry.input
class EditMessageInput:
    content: str = strawberry.field(description="1-32000 chars.")
    expected_revision: int | None = strawberry.field(
        default=None,
        description="When given and not the current revision: CONFLICT, nothing changes.",
    )


def decode_message_id(global_id: str) -> int:
    key = decode_id(global_id, "Message", field="id")
    assert isinstance(key, int)
    return key


async def lock_message(
    session: AsyncSession, *, message_id: int, viewer: Viewer
) -> tuple[Row[Any], Row[Any]]:
    """(conversation, message): the message the viewer may change, as committed now, with its
    conversation row-locked until the transaction ends. NOT_FOUND otherwise."""
    conversation = await message_data.lock_message_conversation(
        session, message_id=message_id, owner_id=owner_scope(viewer)
    )
    message = (
        await message_data.get_message(session, message_id=message_id) if conversation else None
    )
    if conversation is None or message is None or message.conversation_id != conversation.id:
        raise NotFound()
    return conversation, message


@strawberry.type
class MessageEditMutations:
    @strawberry.mutation(
        description="New content for a message, keeping the old as a revision; owner or admin."
    )
    async def edit_message(self, info: Info, id: strawberry.ID, input: EditMessageInput) -> Message:
        viewer = require_viewer(info.context)
        message_id = decode_message_id(id)
        raise_for({"content": content_problem(input.content)})
        async with write_transaction(info.context.sessionmaker) as session:
            conversation, row = await lock_message(session, message_id=message_id, viewer=viewer)
            if row.status == STREAMING:
                raise BadUserInput.one("id", "is still streaming: finish it first")
            expected = input.expected_revision
            if expected is not None and expected != row.revision:
                raise StaleRevision(row.revision)
            if row.content != input.content:
                conversation = await conversation_data.touch_conversation(
                    session, conversation=conversation, at=utcnow()
                )
                row = await message_data.edit_message(
                    session, message=row, content=input.content, at=conversation.updated_at
                )
                await record(
                    session,
                    [
                        NewChange(
                            conversation.user_id,
                            ChangeKind.MESSAGE_EDITED,
                            conversation.id,
                            message_id,
                        )
                    ],
                    at=conversation.updated_at,
                )
        remember(info, conversation)
        info.context.loaders.message_by_id.put(row.id, row)
        return Message.from_row(row)

    @strawberry.mutation(description="Delete a message and its revisions; owner or admin.")
    async def delete_message(self, info: Info, id: strawberry.ID) -> DeletePayload:
        viewer = require_viewer(info.context)
        message_id = decode_message_id(id)
        async with write_transaction(info.context.sessionmaker) as session:
            conversation, _ = await lock_message(session, message_id=message_id, viewer=viewer)
            deleted = await message_data.delete_message(session, message_id=message_id)
            if deleted is None:
                raise NotFound()
            # Its children take its parent; the leaf's place goes to its parent (db.branches).
            await reparent(
                session,
                conversation_id=conversation.id,
                message_id=message_id,
                parent_id=deleted.parent_id,
            )
            conversation = await conversation_data.touch_conversation(
                session,
                conversation=conversation,
                leaf=(
                    deleted.parent_id
                    if conversation.current_leaf_id == message_id
                    else conversation.current_leaf_id
                ),
            )
            await record(
                session,
                [
                    NewChange(
                        conversation.user_id,
                        ChangeKind.MESSAGE_DELETED,
                        conversation.id,
                        message_id,
                    )
                ],
                at=conversation.updated_at,
            )
        remember(info, conversation)
        info.context.loaders.message_by_id.put(message_id, None)
        return DeletePayload(deleted_id=strawberry.ID(to_global_id("Message", message_id)))
