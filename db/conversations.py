"""Data access for conversations. Ownership is part of every query."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Row, Select, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Conversation, Message, new_conversation_id, utcnow
from db.pagination import Ordering, Page, PageRequest, fetch_pages
from db.reads import Reads, one_of

conversations = cast(Table, Conversation.__table__)
messages = cast(Table, Message.__table__)
CONVERSATION_ORDER = Ordering(
    keys=(conversations.c.updated_at, conversations.c.id), descending=True
)


def visible_conversations(viewer_id: int | None) -> Any:
    """Conversations a viewer may see: their own, or every one when `viewer_id` is None (admin)."""
    statement = select(conversations)
    if viewer_id is not None:
        statement = statement.where(conversations.c.user_id == viewer_id)
    return statement


@cache
def _by_ids(dialect: str, scoped: bool) -> Select[Any]:
    statement = select(conversations).where(one_of(conversations.c.id, "ids", dialect))
    if scoped:
        statement = statement.where(conversations.c.user_id == bindparam("owner_id"))
    return statement


async def conversations_by_ids(
    reads: Reads, *, ids: Sequence[str], owner_id: int | None
) -> dict[str, Row[Any]]:
    """`owner_id` None means an admin, who sees every conversation."""
    statement = _by_ids(reads.dialect, owner_id is not None)
    rows = await reads.all(statement, {"ids": list(ids), "owner_id": owner_id})
    return {row.id: row for row in rows}


async def conversation_pages_by_user(
    session: AsyncSession,
    *,
    user_ids: Sequence[int],
    request: PageRequest,
    with_message_counts: bool = False,
) -> dict[Hashable, Page]:
    """With `with_message_counts`, each row also has `message_count`."""
    base = select(conversations)
    if with_message_counts:
        count = (
            select(func.count())
            .where(messages.c.conversation_id == conversations.c.id)
            .scalar_subquery()
        )
        base = base.add_columns(count.label("message_count"))
    return await fetch_pages(
        session,
        base=base,
        partition=conversations.c.user_id,
        parents=user_ids,
        ordering=CONVERSATION_ORDER,
        request=request,
    )


async def conversation_counts_by_user(
    session: AsyncSession, *, user_ids: Sequence[int]
) -> dict[int, int]:
    statement = (
        select(conversations.c.user_id, func.count())
        .where(conversations.c.user_id.in_(user_ids))
        .group_by(conversations.c.user_id)
    )
    counts = {user_id: int(count) for user_id, count in (await session.execute(statement)).all()}
    return {user_id: counts.get(user_id, 0) for user_id in user_ids}


async def create_conversation(session: AsyncSession, *, owner_id: int, title: str) -> Row[Any]:
    now = utcnow()
    statement = (
        insert(conversations)
        .values(
            id=new_conversation_id(), user_id=owner_id, title=title, created_at=now, updated_at=now
        )
        .returning(*conversations.c)
    )
    return (await session.execute(statement)).one()


async def get_conversation_for_update(
    session: AsyncSession, *, conversation_id: str, owner_id: int | None
) -> Row[Any] | None:
    """The conversation, row-locked until the transaction ends (PostgreSQL; SQLite has one
    writer at a time anyway). `owner_id` None means an admin."""
    statement = visible_conversations(owner_id).where(conversations.c.id == conversation_id)
    return (await session.execute(statement.with_for_update())).first()


async def update_conversation(
    session: AsyncSession, *, conversation_id: str, values: dict[str, Any]
) -> Row[Any]:
    """Set columns of one conversation (locked by the caller) and return the new row."""
    statement = (
        update(conversations)
        .where(conversations.c.id == conversation_id)
        .values(**values)
        .returning(*conversations.c)
    )
    return (await session.execute(statement)).one()


async def touch_conversation(
    session: AsyncSession, *, conversation: Row[Any], at: datetime | None = None
) -> Row[Any]:
    """Bump `updated_at` of a locked conversation to `at`, the moment of the write (default
    now), never backwards: the processes that write may not share one clock exactly."""
    moment = max(conversation.updated_at, at or utcnow())
    if moment == conversation.updated_at:
        return conversation
    return await update_conversation(
        session, conversation_id=conversation.id, values={"updated_at": moment}
    )


async def delete_conversation(
    session: AsyncSession, *, conversation_id: str, owner_id: int | None
) -> int | None:
    """Delete a visible conversation; its messages go with it (ON DELETE CASCADE). Returns the
    id of the user who owned it, or None when there was no such conversation to delete."""
    statement = delete(conversations).where(conversations.c.id == conversation_id)
    if owner_id is not None:
        statement = statement.where(conversations.c.user_id == owner_id)
    result = await session.execute(statement.returning(conversations.c.user_id))
    owner = result.scalar_one_or_none()
    return None if owner is None else int(owner)
