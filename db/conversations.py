"""Data access for conversations. Ownership is part of every query."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Literal, NamedTuple, cast

import orjson
from sqlalchemy import (
    Row,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db.folding import fold
from db.models import (
    Conversation,
    ConversationTag,
    Message,
    MessageRole,
    new_conversation_id,
    utcnow,
)
from db.pagination import Ordering, Page, PageRequest, fetch_pages
from db.reads import Reads, one_of

conversations = cast(Table, Conversation.__table__)
messages = cast(Table, Message.__table__)
conversation_tags = cast(Table, ConversationTag.__table__)


class ConversationFilter(NamedTuple):
    """Which of a user's conversations a list or count takes (RULES.md, "Organize"):
    `archived` False (the default list) leaves archived ones out, True takes them alone, None
    both; `pinned` likewise (None: both); `tag_key` the caseless key (`fold`) of a tag they
    must have, or None. Hashable: it is part of a loader's key."""

    archived: bool | None = False
    pinned: bool | None = None
    tag_key: str | None = None


DEFAULT_FILTER = ConversationFilter()


def filtered(statement: Select[Any], wanted: ConversationFilter) -> Select[Any]:
    """`statement` (over `conversations`) narrowed to the conversations `wanted` takes."""
    if wanted.archived is not None:
        statement = statement.where(conversations.c.archived == wanted.archived)
    if wanted.pinned is not None:
        statement = statement.where(conversations.c.pinned == wanted.pinned)
    if wanted.tag_key is not None:
        statement = statement.where(
            exists().where(
                conversation_tags.c.conversation_id == conversations.c.id,
                conversation_tags.c.tag_key == wanted.tag_key,
            )
        )
    return statement


def tag_list(row: Any) -> list[str]:
    """A conversation row's tags, as the JSON column holds them (sorted)."""
    value = row.tags
    return [] if value == "[]" else cast(list[str], orjson.loads(value))


def sorted_tags(tags: Sequence[str]) -> list[str]:
    """Tags sorted case-insensitively (by caseless key, then as written: a stable order)."""
    return sorted(tags, key=lambda tag: (fold(tag), tag))


async def set_tags(session: AsyncSession, *, conversation_id: str, tags: Sequence[str]) -> None:
    """Replace the conversation's `conversation_tags` rows by `tags` (already unique by key);
    the caller sets its `tags` column in the same transaction."""
    await session.execute(
        delete(conversation_tags).where(conversation_tags.c.conversation_id == conversation_id)
    )
    if tags:
        await session.execute(
            insert(conversation_tags),
            [{"conversation_id": conversation_id, "tag_key": fold(t), "tag": t} for t in tags],
        )


async def tags_by_user(session: AsyncSession, *, user_ids: Sequence[int]) -> dict[int, list[str]]:
    """Every tag on each user's conversations, one spelling per caseless key (the smallest
    by code point, chosen here: databases order text by their own collations), sorted
    case-insensitively; one statement for all the users."""
    statement = (
        select(conversations.c.user_id, conversation_tags.c.tag_key, conversation_tags.c.tag)
        .distinct()
        .join(conversations, conversations.c.id == conversation_tags.c.conversation_id)
        .where(conversations.c.user_id.in_(user_ids))
    )
    found: dict[int, dict[str, str]] = {user_id: {} for user_id in user_ids}
    for user_id, key, tag in (await session.execute(statement)).all():
        spellings = found[user_id]
        spellings[key] = min(spellings.get(key, tag), tag)
    return {user_id: sorted_tags(list(tags.values())) for user_id, tags in found.items()}


async def unread_counts(reads: Reads, *, conversation_ids: Sequence[str]) -> dict[str, int]:
    """Each conversation's messages after its read mark (by `createdAt`, then id; all of
    them before the first mark) whose role is not USER, on the active branch (`db.branches`);
    one statement for all of them, built once and run through `reads` (on PostgreSQL straight
    on asyncpg, as the list's other hot reads)."""
    rows = await reads.all(_unread(reads.dialect), {"ids": list(conversation_ids)})
    counts = {row[0]: int(row[1]) for row in rows}  # (a guarded read adds columns after)
    return {key: counts.get(key, 0) for key in conversation_ids}


@cache
def _unread(dialect: str) -> Select[Any]:
    """The ids bound both tables: with them on `messages` alone, PostgreSQL's generic plan of
    the prepared statement (its choice after five runs) read every conversation to hash-join
    them, 42 ms a call on 20,000 conversations where 1 ms does (bench/organize.py)."""
    after_mark = or_(
        conversations.c.last_read_at.is_(None),
        messages.c.created_at > conversations.c.last_read_at,
        and_(
            messages.c.created_at == conversations.c.last_read_at,
            messages.c.id > conversations.c.last_read_message_id,
        ),
    )
    return (
        select(messages.c.conversation_id, func.count())
        .join(conversations, conversations.c.id == messages.c.conversation_id)
        .where(
            one_of(messages.c.conversation_id, "ids", dialect),
            one_of(conversations.c.id, "ids", dialect),
            messages.c.on_branch == true(),
            messages.c.role != literal_column(f"'{MessageRole.USER.value}'"),
            after_mark,
        )
        .group_by(messages.c.conversation_id)
    )


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
    wanted: ConversationFilter = DEFAULT_FILTER,
) -> dict[Hashable, Page]:
    """The conversations `wanted` takes (part of the page query: the keyset pages stay);
    with `with_message_counts`, each row also has `message_count`."""
    base = filtered(select(conversations), wanted)
    if with_message_counts:
        count = (
            select(func.count())
            .where(messages.c.conversation_id == conversations.c.id, messages.c.on_branch == true())
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
    session: AsyncSession, *, user_ids: Sequence[int], wanted: ConversationFilter = DEFAULT_FILTER
) -> dict[int, int]:
    statement = filtered(
        select(conversations.c.user_id, func.count()).where(conversations.c.user_id.in_(user_ids)),
        wanted,
    ).group_by(conversations.c.user_id)
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
    session: AsyncSession,
    *,
    conversation: Row[Any],
    at: datetime | None = None,
    leaf: int | Literal[False] | None = False,
) -> Row[Any]:
    """Bump `updated_at` of a locked conversation to `at`, the moment of the write (default
    now), never backwards: the processes that write may not share one clock exactly. `leaf`
    (unless False): its new `current_leaf_id` (`db.branches`), in the same statement."""
    moment = max(conversation.updated_at, at or utcnow())
    values: dict[str, Any] = {}
    if moment != conversation.updated_at:
        values["updated_at"] = moment
    if leaf is not False and leaf != conversation.current_leaf_id:
        values["current_leaf_id"] = leaf
    if not values:
        return conversation
    return await update_conversation(session, conversation_id=conversation.id, values=values)


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
