"""Data access for messages."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Conversation, Message, MessageRole, utcnow
from db.pagination import Ordering, Page, PageRequest, fetch_pages

messages = cast(Table, Message.__table__)
conversations = cast(Table, Conversation.__table__)
MESSAGE_ORDER = Ordering(keys=(messages.c.created_at, messages.c.id))


@dataclass(frozen=True)
class NewMessage:
    role: MessageRole
    content: str
    created_at: datetime


async def messages_by_ids(
    session: AsyncSession, *, ids: Sequence[int], owner_id: int | None
) -> dict[int, Row[Any]]:
    """`owner_id` None means an admin; others see messages of their own conversations only."""
    statement = select(messages).where(messages.c.id.in_(ids))
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
        base=select(messages),
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
        .where(messages.c.conversation_id.in_(conversation_ids))
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
) -> tuple[Row[Any], bool]:
    """Store a message, or find the one already stored under the same `client_id`.

    Idempotency is decided by the unique index, not by a read before the write: of any number
    of racing senders exactly one inserts, and the others read that row back. Returns the row
    and whether it is new.
    """
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        upsert(messages)
        .values(
            conversation_id=conversation_id,
            role=role,
            content=content,
            client_id=client_id,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["conversation_id", "client_id"])
        .returning(*messages.c)
    )
    row = (await session.execute(statement)).first()
    if row is not None:
        return row, True
    existing = select(messages).where(
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
