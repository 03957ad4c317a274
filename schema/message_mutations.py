"""Message mutations: send one (idempotent on its clientId) or import many (all or none).

Both lock the conversation row, bump its `updatedAt` to the time of the write (not the times
of imported messages, which may be older, and are never later), and publish the new messages
through the broker inside the transaction; the broker delivers them once it has committed.
Last, each records one MESSAGE_ADDED per new message in the owner's change feed, at the moment
it gives `updatedAt` (a resent clientId stores nothing and records nothing).
"""

from __future__ import annotations

import strawberry

from db import conversations as conversation_data
from db import messages as message_data
from db.branches import link_imported
from db.changes import ChangeKind, NewChange, record
from db.engine import write_transaction
from db.messages import NewMessage
from db.models import MessageRole, utcnow
from schema.branches import check_branch_input, place, settle
from schema.conversation_mutations import lock_conversation, remember
from schema.errors import BadUserInput
from schema.inputs import ImportMessagesInput, SendMessageInput
from schema.permissions import require_viewer
from schema.relay import decode_conversation_id
from schema.types import ImportMessagesPayload, Info, Message
from schema.validation import (
    client_id_problem,
    content_problem,
    created_at_problem,
    model_problem,
    raise_for,
)


async def add_one(
    info: Info,
    *,
    conversation_id: str,
    role: MessageRole,
    content: str,
    client_id: str | None,
    model: str | None,
    parent_id: strawberry.ID | None = None,
    alternative_to: strawberry.ID | None = None,
    streaming: bool = False,
) -> Message:
    """`sendMessage`, and `startMessage` (`streaming`: an empty STREAMING message; its content
    is not checked). Owner or admin. BAD_USER_INPUT for content, model or clientId; NOT_FOUND
    for a conversation the viewer may not write.

    A `clientId` is the conversation's idempotency key whichever of the two mutations used it
    (one unique index): a key already used returns the message stored under it, as stored now
    (RULES.md: "returns the stored message ... never CONFLICT"), even when the other mutation
    stored it or the input differs; nothing is written, published or recorded again. The
    caller tells by the answer's `status` (and `content`) what it got.
    """
    viewer = require_viewer(info.context)
    conversation_pk = decode_conversation_id(conversation_id, field="conversationId")
    raise_for(
        {
            "content": None if streaming else content_problem(content),
            "model": model_problem(model),
            "clientId": client_id_problem(client_id) if client_id is not None else None,
        }
    )
    check_branch_input(parent_id, alternative_to)
    services = info.context.services
    async with write_transaction(services.sessionmaker) as session:
        conversation = await lock_conversation(
            session, conversation_id=conversation_pk, viewer=viewer
        )
        placement = await place(
            session,
            conversation=conversation,
            parent_id=parent_id,
            alternative_to=alternative_to,
        )
        row, created = await message_data.add_message(
            session,
            conversation_id=conversation_pk,
            role=role,
            content=content,
            client_id=client_id,
            model=model,
            streaming=streaming,
            parent_id=placement.parent_id,
        )
        if created:
            await settle(session, conversation=conversation, placement=placement)
            conversation = await conversation_data.touch_conversation(
                session, conversation=conversation, at=row.created_at, leaf=row.id
            )
            await services.broker.publish(
                session, conversation_id=conversation_pk, message_ids=[row.id]
            )
            await record(
                session,
                [
                    NewChange(
                        conversation.user_id, ChangeKind.MESSAGE_ADDED, conversation_pk, row.id
                    )
                ],
                at=conversation.updated_at,
            )
    remember(info, conversation)
    info.context.loaders.message_by_id.put(row.id, row)
    return Message.from_row(row)


@strawberry.type
class MessageMutations:
    @strawberry.mutation(
        description="Add a message; resending a clientId returns the first message."
    )
    async def send_message(self, info: Info, input: SendMessageInput) -> Message:
        return await add_one(
            info,
            conversation_id=input.conversation_id,
            role=input.role or MessageRole.USER,
            content=input.content,
            client_id=input.client_id,
            model=input.model,
            parent_id=input.parent_id,
            alternative_to=input.alternative_to,
        )

    @strawberry.mutation(description="Add 1-1000 messages at once: all are stored or none.")
    async def import_messages(
        self, info: Info, input: ImportMessagesInput
    ) -> ImportMessagesPayload:
        viewer = require_viewer(info.context)
        conversation_id = decode_conversation_id(input.conversation_id, field="conversationId")
        most = info.context.config.max_import_messages
        if not 1 <= len(input.messages) <= most:
            raise BadUserInput.one("messages", f"must hold 1-{most} messages")
        now = utcnow()
        problems: dict[str, str | None] = {}
        for index, item in enumerate(input.messages):
            problems[f"messages.{index}.content"] = content_problem(item.content)
            problems[f"messages.{index}.createdAt"] = created_at_problem(item.created_at, now=now)
            problems[f"messages.{index}.model"] = model_problem(item.model)
        raise_for(problems)
        items = [
            NewMessage(
                role=item.role,
                content=item.content,
                created_at=item.created_at or now,
                model=item.model,
            )
            for item in input.messages
        ]
        services = info.context.services
        async with write_transaction(services.sessionmaker) as session:
            conversation = await lock_conversation(
                session, conversation_id=conversation_id, viewer=viewer
            )
            rows = await message_data.insert_messages(
                session, conversation_id=conversation_id, items=items
            )
            # They continue after currentLeaf, each after the one before it.
            await link_imported(
                session, ids=[row.id for row in rows], after=conversation.current_leaf_id
            )
            # The time of this write, however old the history it brings.
            conversation = await conversation_data.touch_conversation(
                session, conversation=conversation, at=now, leaf=rows[-1].id
            )
            await services.broker.publish(
                session, conversation_id=conversation_id, message_ids=[row.id for row in rows]
            )
            owner = conversation.user_id
            await record(
                session,
                [
                    NewChange(owner, ChangeKind.MESSAGE_ADDED, conversation_id, row.id)
                    for row in rows
                ],
                at=conversation.updated_at,
            )
        loaders = info.context.loaders
        for row in rows:
            loaders.message_by_id.put(row.id, row)
        return ImportMessagesPayload(
            conversation=remember(info, conversation), imported_count=len(rows)
        )
