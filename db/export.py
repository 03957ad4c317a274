"""Reads for the export (`GET /export`, `GET /export/conversations/<id>.md`): a user's
conversations and messages in keyset batches, so that an export of any size holds one batch at
a time.

Why batches and not one streamed statement (a server-side cursor): each batch is one short
statement on a pooled connection, given back between batches, so a slow client neither holds a
connection nor a transaction open for the length of its download, nor runs into the statement
timeout. The price is that an export is not one snapshot: a message written while it runs may
be in it or not, and one edited meanwhile appears once, in one of its states.

- Conversations come in id order, `CONVERSATION_BATCH` at a time (`conversation_batches`).
- Messages of a batch of conversations come in (conversation id, `created_at`, id) order,
  `MESSAGE_BATCH` at a time: the order of the `ix_messages_conversation_created` index, read
  as ranges of it without a sort (`message_batches`); each batch brings the earlier contents
  of its edited messages with one more statement (`Revision`).

Memory is bounded by a batch: `MESSAGE_BATCH` messages of at most the largest content.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, func, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import idempotent_read
from db.models import Conversation, Message, MessageRevision
from db.streams import content_of

conversations = cast(Table, Conversation.__table__)
messages = cast(Table, Message.__table__)
revisions = cast(Table, MessageRevision.__table__)

CONVERSATION_BATCH = 200
MESSAGE_BATCH = 500
# What a message batch's rows hold, in this order.
MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.role,
    content_of(messages).label("content"),  # a streaming message's: its chunks so far
    messages.c.created_at,
    messages.c.edited_at,
    messages.c.revision,
    messages.c.model,
    messages.c.parent_id,  # every branch is exported: the tree (`db.branches`)
    messages.c.status,
    messages.c.input_tokens,
    messages.c.output_tokens,
)


@dataclass(frozen=True)
class Revision:
    """An earlier content of a message: `revision` (1 is as first written) and when it was
    written."""

    revision: int
    content: str
    created_at: datetime


@dataclass(frozen=True)
class MessageBatch:
    """Up to `MESSAGE_BATCH` message rows in export order, and the earlier contents of those
    that were edited, oldest first, by message id."""

    rows: list[Row[Any]]
    revisions: dict[int, list[Revision]]


Sessionmaker = async_sessionmaker[AsyncSession]


async def export_size(sessionmaker: Sessionmaker, *, user_id: int) -> tuple[int, int]:
    """(conversations, messages) a user owns: what an export of theirs will write. Two
    counting statements on the owner and conversation indexes."""
    owned = select(conversations.c.id).where(conversations.c.user_id == user_id)

    async def fetch(session: AsyncSession) -> tuple[int, int]:
        count = select(func.count()).select_from(conversations)
        found = (await session.execute(count.where(conversations.c.user_id == user_id))).scalar()
        written = select(func.count()).select_from(messages)
        sent = (
            await session.execute(written.where(messages.c.conversation_id.in_(owned)))
        ).scalar()
        return int(found or 0), int(sent or 0)

    return await idempotent_read(sessionmaker, fetch)


async def message_count(sessionmaker: Sessionmaker, *, conversation_id: str) -> int:
    """The messages of one conversation's active branch (what its Markdown will show)."""
    statement = select(func.count()).select_from(messages).where(messages.c.on_branch == true())
    rows = await _all(sessionmaker, statement.where(messages.c.conversation_id == conversation_id))
    return int(rows[0][0])


async def conversation_batches(
    sessionmaker: Sessionmaker, *, user_id: int
) -> AsyncIterator[list[Row[Any]]]:
    """The user's conversations (every column), in id order, `CONVERSATION_BATCH` a batch."""
    after: str | None = None
    while True:
        statement = select(conversations).where(conversations.c.user_id == user_id)
        if after is not None:
            statement = statement.where(conversations.c.id > after)
        statement = statement.order_by(conversations.c.id).limit(CONVERSATION_BATCH)
        rows = await _all(sessionmaker, statement)
        if not rows:
            return
        yield rows
        if len(rows) < CONVERSATION_BATCH:
            return
        after = rows[-1].id


async def one_conversation(
    sessionmaker: Sessionmaker, *, conversation_id: str, owner_id: int | None
) -> Row[Any] | None:
    """The conversation, when `owner_id` owns it (None: an admin, who may see any)."""
    statement = select(conversations).where(conversations.c.id == conversation_id)
    if owner_id is not None:
        statement = statement.where(conversations.c.user_id == owner_id)
    rows = await _all(sessionmaker, statement)
    return rows[0] if rows else None


async def message_batches(
    sessionmaker: Sessionmaker, *, conversation_ids: Sequence[str], active_branch: bool = False
) -> AsyncIterator[MessageBatch]:
    """The messages of these conversations (given in id order) in (conversation id,
    `created_at`, id) order, `MESSAGE_BATCH` a batch, each with its edited messages' earlier
    contents.

    Two kinds of statement, each one index range scan: the rest of the conversation a batch
    ended in (`conversation_id = :c AND (created_at, id) > (:t, :i)`), and the first messages of
    the conversations after it (`conversation_id IN (...)`, no row comparison). One statement
    with both (an IN list and a row comparison) is what PostgreSQL before 17 cannot start in
    the middle of: it read every earlier conversation's messages again for each batch.
    """
    ids = list(conversation_ids)
    after: Row[Any] | None = None  # the last message of a full batch
    following = 0  # the first conversation not started
    while True:
        if after is not None:
            statement = (
                select(*MESSAGE_COLUMNS)
                .where(
                    messages.c.conversation_id == after.conversation_id,
                    tuple_(messages.c.created_at, messages.c.id)
                    > tuple_(after.created_at, after.id),
                )
                .order_by(messages.c.created_at, messages.c.id)
            )
        elif following < len(ids):
            statement = (
                select(*MESSAGE_COLUMNS)
                .where(messages.c.conversation_id.in_(ids[following:]))
                .order_by(messages.c.conversation_id, messages.c.created_at, messages.c.id)
            )
        else:
            return
        if active_branch:  # the Markdown's: the active branch alone
            statement = statement.where(messages.c.on_branch == true())
        rows = await _all(sessionmaker, statement.limit(MESSAGE_BATCH))
        if rows:
            edited = [row.id for row in rows if row.revision > 1]
            yield MessageBatch(rows, await _revisions(sessionmaker, edited) if edited else {})
        if len(rows) == MESSAGE_BATCH:
            after = rows[-1]
            following = ids.index(after.conversation_id) + 1
        elif after is not None:
            after = None  # that conversation is done: on to the ones after it
        else:
            return  # every conversation left is done


async def _revisions(
    sessionmaker: Sessionmaker, message_ids: list[int]
) -> dict[int, list[Revision]]:
    statement = (
        select(revisions)
        .where(revisions.c.message_id.in_(message_ids))
        .order_by(revisions.c.message_id, revisions.c.revision)
    )
    found: dict[int, list[Revision]] = {}
    for row in await _all(sessionmaker, statement):
        found.setdefault(row.message_id, []).append(
            Revision(revision=row.revision, content=row.content, created_at=row.created_at)
        )
    return found


async def _all(sessionmaker: Sessionmaker, statement: Any) -> list[Row[Any]]:
    async def fetch(session: AsyncSession) -> list[Row[Any]]:
        return list((await session.execute(statement)).all())

    return await idempotent_read(sessionmaker, fetch)
