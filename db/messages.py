"""Data access for messages."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, delete, func, insert, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Conversation, Message, MessageRevision, MessageRole, utcnow
from db.pagination import Ordering, Page, PageRequest, fetch_pages
from db.streams import MESSAGE_COLUMNS

messages = cast(Table, Message.__table__)
conversations = cast(Table, Conversation.__table__)
revisions = cast(Table, MessageRevision.__table__)
MESSAGE_ORDER = Ordering(keys=(messages.c.created_at, messages.c.id))
# The messages of the active branch (`db.branches`): what pages, counts and the last message
# read, through the partial index `ix_messages_branch`.
ON_BRANCH = messages.c.on_branch == true()


@dataclass(frozen=True)
class NewMessage:
    role: MessageRole
    content: str
    created_at: datetime
    model: str | None = None


async def messages_by_ids(
    session: AsyncSession, *, ids: Sequence[int], owner_id: int | None
) -> dict[int, Row[Any]]:
    """`owner_id` None means an admin; others see messages of their own conversations only."""
    statement = select(*MESSAGE_COLUMNS).where(messages.c.id.in_(ids))
    if owner_id is not None:
        statement = statement.join(
            conversations, conversations.c.id == messages.c.conversation_id
        ).where(conversations.c.user_id == owner_id)
    rows = (await session.execute(statement)).all()
    return {row.id: row for row in rows}


async def message_pages_by_conversation(
    session: AsyncSession, *, conversation_ids: Sequence[str], request: PageRequest
) -> dict[Hashable, Page]:
    return await fetch_pages(
        session,
        base=select(*MESSAGE_COLUMNS).where(ON_BRANCH),
        partition=messages.c.conversation_id,
        parents=conversation_ids,
        ordering=MESSAGE_ORDER,
        request=request,
    )


async def message_counts_by_conversation(
    session: AsyncSession, *, conversation_ids: Sequence[str]
) -> dict[str, int]:
    statement = (
        select(messages.c.conversation_id, func.count())
        .where(messages.c.conversation_id.in_(conversation_ids), ON_BRANCH)
        .group_by(messages.c.conversation_id)
    )
    rows = (await session.execute(statement)).all()
    counts = {conversation_id: int(count) for conversation_id, count in rows}
    return {conversation_id: counts.get(conversation_id, 0) for conversation_id in conversation_ids}


async def add_message(
    session: AsyncSession,
    *,
    conversation_id: str,
    role: MessageRole,
    content: str,
    client_id: str | None,
    model: str | None = None,
    streaming: bool = False,
    parent_id: int | None = None,
) -> tuple[Row[Any], bool]:
    """Store a message, or find the one already stored under the same `client_id`.
    `streaming`: started by startMessage (status STREAMING, its stream clock started).
    `parent_id`: the message before it on its branch (`db.branches`); it is on the active
    branch.

    Idempotency is decided by the unique index, not by a read before the write: of any number
    of racing senders exactly one inserts, and the others read that row back. Returns the row
    and whether it is new.
    """
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    now = utcnow()
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        upsert(messages)
        .values(
            conversation_id=conversation_id,
            role=role,
            content=content,
            client_id=client_id,
            created_at=now,
            model=model,
            status="STREAMING" if streaming else "COMPLETE",
            stream_touched_at=now if streaming else None,
            parent_id=parent_id,
        )
        .on_conflict_do_nothing(index_elements=["conversation_id", "client_id"])
        .returning(*messages.c)
    )
    row = (await session.execute(statement)).first()
    if row is not None:
        return row, True
    existing = select(*MESSAGE_COLUMNS).where(
        messages.c.conversation_id == conversation_id, messages.c.client_id == client_id
    )
    return (await session.execute(existing)).one(), False


async def insert_messages(
    session: AsyncSession, *, conversation_id: str, items: Sequence[NewMessage]
) -> list[Row[Any]]:
    """Store many messages with one multi-row INSERT; returns the rows in the order given."""
    statement = (
        insert(messages)
        .values(
            [
                {
                    "conversation_id": conversation_id,
                    "role": item.role,
                    "content": item.content,
                    "client_id": None,
                    "created_at": item.created_at,
                    "model": item.model,
                }
                for item in items
            ]
        )
        .returning(*messages.c)
    )
    rows = list((await session.execute(statement)).all())
    # Ids are drawn in VALUES order; RETURNING promises no order, so sort by them.
    rows.sort(key=lambda row: row.id)
    return rows


# Edits and deletes. Every write to a message locks its conversation's row first (as sends and
# imports do), so the writes to one conversation's messages take turns, and a conversation is
# locked before any of its messages (deleting a conversation locks it, then cascades): no two
# writers can lock the same rows in opposite orders.


async def lock_message_conversation(
    session: AsyncSession, *, message_id: int, owner_id: int | None
) -> Row[Any] | None:
    """The conversation of a message the owner may change, row-locked until the transaction
    ends (PostgreSQL; SQLite has one writer at a time). `owner_id` None means an admin. None
    when there is no such message, or it is not the owner's."""
    holder = select(messages.c.conversation_id).where(messages.c.id == message_id)
    statement = select(conversations).where(conversations.c.id == holder.scalar_subquery())
    if owner_id is not None:
        statement = statement.where(conversations.c.user_id == owner_id)
    return (await session.execute(statement.with_for_update())).first()


async def last_message(session: AsyncSession, *, conversation_id: str) -> Row[Any] | None:
    """The newest message of the conversation's active branch (by `created_at`, then id), or
    None."""
    statement = (
        select(messages)
        .where(messages.c.conversation_id == conversation_id, ON_BRANCH)
        .order_by(messages.c.created_at.desc(), messages.c.id.desc())
        .limit(1)
    )
    return (await session.execute(statement)).first()


async def get_message(session: AsyncSession, *, message_id: int) -> Row[Any] | None:
    """The message as committed now: read after its conversation's lock is held, so a writer
    that waited for the lock sees what the one before it wrote (READ COMMITTED takes a new
    snapshot per statement)."""
    statement = select(*MESSAGE_COLUMNS).where(messages.c.id == message_id)
    return (await session.execute(statement)).first()


async def edit_message(
    session: AsyncSession, *, message: Row[Any], content: str, at: datetime
) -> Row[Any]:
    """Give a message (its conversation locked by the caller) new content: its current
    content is kept as a revision (written at its `edited_at`, or `created_at` for the first),
    `revision` goes up by one and `edited_at` becomes `at`. Two statements; returns the new row."""
    await session.execute(
        insert(revisions).values(
            message_id=message.id,
            revision=message.revision,
            content=message.content,
            created_at=message.edited_at or message.created_at,
        )
    )
    statement = (
        update(messages)
        .where(messages.c.id == message.id)
        .values(content=content, revision=message.revision + 1, edited_at=at)
        .returning(*messages.c)
    )
    return (await session.execute(statement)).one()


async def delete_message(session: AsyncSession, *, message_id: int) -> Row[Any] | None:
    """Delete a message (its conversation locked by the caller); its revisions go with it
    (ON DELETE CASCADE). Its (id, parent_id, conversation_id), None when there was none."""
    statement = (
        delete(messages)
        .where(messages.c.id == message_id)
        .returning(messages.c.id, messages.c.parent_id, messages.c.conversation_id)
    )
    return cast("Row[Any] | None", (await session.execute(statement)).first())


async def revisions_by_message(
    session: AsyncSession, *, message_ids: Sequence[int]
) -> dict[int, list[Row[Any]]]:
    """The stored (earlier) revisions of each message, oldest first; one statement."""
    statement = (
        select(revisions)
        .where(revisions.c.message_id.in_(message_ids))
        .order_by(revisions.c.message_id, revisions.c.revision)
    )
    found: dict[int, list[Row[Any]]] = {message_id: [] for message_id in message_ids}
    for row in (await session.execute(statement)).all():
        found[row.message_id].append(row)
    return found


async def message_ids_after(
    session: AsyncSession, *, conversation_id: str, after: int | None
) -> list[int]:
    """The ids of the conversation's messages above `after`, lowest first; `after` None: the
    highest id alone (none for an empty conversation). Every write of messages holds the
    conversation's row lock until it commits, so within one conversation ids are given out in
    commit order: "above the last one seen" misses nothing that commits later."""
    if after is None:
        statement = select(func.max(messages.c.id)).where(
            messages.c.conversation_id == conversation_id
        )
        highest = (await session.execute(statement)).scalar()
        return [int(highest)] if highest is not None else []
    statement = (
        select(messages.c.id)
        .where(messages.c.conversation_id == conversation_id, messages.c.id > after)
        .order_by(messages.c.id)
    )
    return [int(i) for i in (await session.execute(statement)).scalars()]
