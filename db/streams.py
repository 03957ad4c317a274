"""Streamed answers (issue 15): start, append, finish, time out, and read what came after a seq.

Storage design, and why. PostgreSQL writes a whole new row version on every UPDATE, TOASTed
text included, so `UPDATE messages SET content = content || delta` per token costs O(n) per
append and O(n²) per answer (in WAL, I/O and vacuum). Appends therefore never rewrite stored
text: each is one INSERT into the append-only `message_chunks(message_id, seq, delta,
created_at)` table, beside one small UPDATE of the message's fixed-size stream state
(`stream_seq`, `stream_length`, `stream_touched_at`; its `content` is still empty, and none of
these columns is indexed, so PostgreSQL can make it a HOT update). That UPDATE is also the
serialisation point: it only matches when `stream_seq = seq - 1`, so of concurrent appends of
one seq exactly one matches (PostgreSQL's row lock makes the others wait, then see the new
`stream_seq`; SQLite has one writer at a time), and the losers read the stored state to answer
(a retry) or to name the error (a gap, a finished message, too much text). An append is two
statements; on PostgreSQL the chunk's INSERT carries the NOTIFY (`RETURNING pg_notify(...)`),
and the two run as one statement on its own (`append_at_once`: data-modifying CTEs, no BEGIN
or COMMIT, one round trip; atomic as any statement is), `append` in a transaction only for
what that did not store as new.

While a message streams, its `content` is the concatenation of its chunks, computed where
messages are read (`MESSAGE_COLUMNS`, `chunk_text`: `string_agg(delta, '' ORDER BY seq)` on
PostgreSQL; on SQLite `group_concat` over the primary key's index, which visits a message's
chunks in seq order), and only for rows whose status is STREAMING: other rows read `content`
as stored. Finishing folds the chunks into `messages.content` once (one rewrite per message,
O(n)). The chunks stay, so `messageStream(afterSeq:)` can resume after any seq of a finished
message too; they go with the message (ON DELETE CASCADE). Once finished, `content` is the
text and the chunks only say where each append ended: a finished message's text after seq k
is its `content` after the characters of appends 1..k, so a replay gives the current text
even after `editMessage` rewrote it (the chunks then hold the text as streamed, never read as
such again).

Wake-ups for `messageStream` go through the broker under the key `stream_key(message_id)`
with the seq as the id (`stream:<id>:<seq>`); subscribers never trust them for content: they
read the chunks after the last seq they delivered (`read_after`), so a merged, lost or repeated
wake-up costs nothing (a LISTEN reconnect sends every subscriber a resync).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Text

from db.models import Conversation, Message, MessageChunk, utcnow
from db.reads import Reads

messages = cast(Table, Message.__table__)
conversations = cast(Table, Conversation.__table__)
chunks = cast(Table, MessageChunk.__table__)


def _owned_scope() -> list[ColumnElement[bool]]:
    """The condition that a message is in a conversation of the `owner_id` parameter (a
    non-admin viewer's scope)."""
    return [
        messages.c.conversation_id.in_(
            select(conversations.c.id)
            .where(conversations.c.user_id == bindparam("owner_id", type_=Integer))
            .scalar_subquery()
        )
    ]


STREAMING = "STREAMING"
COMPLETE = "COMPLETE"
FINAL_STATUSES = frozenset({"COMPLETE", "FAILED", "CANCELLED"})
# Claims of one append tried before giving up (see `append`).
RETRIES = 5


def stream_key(message_id: int) -> str:
    """The broker key under which a message's appends and finish are announced."""
    return f"stream:{message_id}"


class chunk_text(FunctionElement[str]):
    """`chunk_text(message_id, after_seq)`: the message's chunks after `after_seq`, concatenated
    in seq order (NULL when there are none)."""

    type = Text()
    inherit_cache = True
    name = "chunk_text"


@compiles(chunk_text)
def _chunk_text_postgres(element: chunk_text, compiler: SQLCompiler, **kw: Any) -> str:
    message_id, after = (compiler.process(arg, **kw) for arg in element.clauses)
    return (
        "(SELECT string_agg(mc.delta, '' ORDER BY mc.seq) FROM message_chunks AS mc "
        f"WHERE mc.message_id = {message_id} AND mc.seq > {after})"
    )


@compiles(chunk_text, "sqlite")
def _chunk_text_sqlite(element: chunk_text, compiler: SQLCompiler, **kw: Any) -> str:
    message_id, after = (compiler.process(arg, **kw) for arg in element.clauses)
    # The lookup walks the primary key's index (message_id, seq): rows come in seq order.
    return (
        "(SELECT group_concat(mc.delta, '') FROM message_chunks AS mc "
        f"WHERE mc.message_id = {message_id} AND mc.seq > {after})"
    )


def content_of(table: Any = messages) -> ColumnElement[str]:
    """A message's readable content: the chunks so far while it streams, else as stored."""
    return case(
        (
            table.c.status == STREAMING,
            func.coalesce(chunk_text(table.c.id, literal(0)), ""),
        ),
        else_=table.c.content,
    )


# What reading a message selects: every column, `content` as readers see it.
MESSAGE_COLUMNS: list[ColumnElement[Any]] = [
    content_of().label("content") if column.name == "content" else column for column in messages.c
]


class StreamProblem(Exception):
    """A bad append or finish: `field` of the input, and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Appended:
    """The stored state after an append (or a retried one): the last seq and the length."""

    message_id: int
    conversation_id: str
    seq: int
    length: int
    new: bool


def _owned(owner_id: int | None) -> list[ColumnElement[bool]]:
    if owner_id is None:
        return []
    mine = select(conversations.c.id).where(conversations.c.user_id == owner_id)
    return [messages.c.conversation_id.in_(mine.scalar_subquery())]


def _append_statement(owned: bool) -> Any:
    """PostgreSQL: `append`'s claim and INSERT (and its NOTIFY) as one statement, built once
    (values: `message_id`, `seq`, `delta`, `size`, `now`, `max_chars`, `channel`, `payload`,
    with `owned` the owner's `owner_id`). A row when it stored the append, none when the
    claim failed (nothing written)."""
    message_id = bindparam("message_id", type_=Integer)
    seq = bindparam("seq", type_=Integer)
    size = bindparam("size", type_=Integer)
    now = bindparam("now", type_=messages.c.stream_touched_at.type)
    scope = _owned_scope() if owned else []
    claimed = (
        update(messages)
        .where(
            messages.c.id == message_id,
            messages.c.status == STREAMING,
            messages.c.stream_seq == seq - 1,
            messages.c.stream_length + size <= bindparam("max_chars", type_=Integer),
            *scope,
        )
        .values(
            stream_seq=seq, stream_length=messages.c.stream_length + size, stream_touched_at=now
        )
        .returning(messages.c.conversation_id, messages.c.stream_length)
        .cte("claimed")
    )
    stored = (
        insert(chunks)
        .from_select(
            ["message_id", "seq", "delta", "created_at"],
            select(message_id, seq, bindparam("delta", type_=Text), now).select_from(claimed),
        )
        .returning(
            func.pg_notify(
                bindparam("channel", type_=String),
                bindparam("payload", type_=String),
                type_=String,
            ).label("notified")
        )
        .cte("stored")
    )
    # Reading `stored` makes its RETURNING (the NOTIFY) certain to be computed.
    return select(
        claimed.c.conversation_id, claimed.c.stream_length, stored.c.notified
    ).select_from(claimed.join(stored, literal(True)))


_APPEND = {owned: _append_statement(owned) for owned in (True, False)}


async def append_at_once(
    reads: Reads,
    *,
    message_id: int,
    owner_id: int | None,
    seq: int,
    delta: str,
    max_chars: int,
    notify_channel: str,
) -> Appended | None:
    """PostgreSQL: store append `seq` in one statement on its own (no BEGIN or COMMIT: one
    round trip, on the driver's pool of `db.reads`), the NOTIFY with it; the Appended, or
    None when it was not stored as new (a retry, a gap, a finished or missing message, too
    much text, a race): then `append` says which, in a transaction. Issue 15, S1."""
    values: dict[str, Any] = {
        "message_id": message_id,
        "seq": seq,
        "delta": delta,
        "size": len(delta),
        "now": utcnow(),
        "max_chars": max_chars,
        "channel": notify_channel,
        "payload": f"{stream_key(message_id)}:{seq}",
    }
    if owner_id is not None:
        values["owner_id"] = owner_id
    row = await reads.first(_APPEND[owner_id is not None], values)
    if row is None:
        return None
    return Appended(message_id, row.conversation_id, seq, row.stream_length, True)


async def append(
    session: AsyncSession,
    *,
    message_id: int,
    owner_id: int | None,
    seq: int,
    delta: str,
    max_chars: int,
    notify_channel: str | None,
) -> Appended | None:
    """Store append `seq` of `message_id`: two statements when it is new. `owner_id` None is
    an admin. Returns None when there is no such message the caller may write; raises
    `StreamProblem` for a gap (`seq`), a finished or never-streamed message (`messageId`), or
    text past `max_chars` (`delta`). `notify_channel`: PostgreSQL's NOTIFY channel, sent by
    the chunk's INSERT (None: the caller announces the append itself)."""
    now = utcnow()
    size = len(delta)
    claim = (
        update(messages)
        .where(
            messages.c.id == message_id,
            messages.c.status == STREAMING,
            messages.c.stream_seq == seq - 1,
            messages.c.stream_length + size <= max_chars,
            *_owned(owner_id),
        )
        .values(
            stream_seq=seq, stream_length=messages.c.stream_length + size, stream_touched_at=now
        )
        .returning(messages.c.conversation_id, messages.c.stream_length)
    )
    state_of = select(
        messages.c.conversation_id,
        messages.c.status,
        messages.c.stream_seq,
        messages.c.stream_length,
        messages.c.stream_touched_at,
    ).where(messages.c.id == message_id, *_owned(owner_id))
    # The claim fails when another append got in first; the read after it (a newer snapshot)
    # says why. When that other append was this seq's predecessor, committed between the two,
    # the claim is simply tried again (a few times at most: each retry follows a commit).
    for _ in range(RETRIES):
        claimed = (await session.execute(claim)).first()
        if claimed is not None:
            statement = insert(chunks).values(
                message_id=message_id, seq=seq, delta=delta, created_at=now
            )
            if notify_channel is not None:
                payload = f"{stream_key(message_id)}:{seq}"
                statement = statement.returning(
                    func.pg_notify(notify_channel, payload, type_=String)
                )
            await session.execute(statement)
            return Appended(message_id, claimed.conversation_id, seq, claimed.stream_length, True)
        state = (await session.execute(state_of)).first()
        if state is None:
            return None
        if 1 <= seq <= state.stream_seq:
            return Appended(
                message_id, state.conversation_id, state.stream_seq, state.stream_length, False
            )
        if state.status != STREAMING:
            never = state.stream_touched_at is None and state.stream_seq == 0
            raise StreamProblem(
                "messageId", "was never streamed" if never else f"is finished ({state.status})"
            )
        if seq != state.stream_seq + 1:
            raise StreamProblem("seq", f"expected {state.stream_seq + 1}")
        if state.stream_length + size > max_chars:
            raise StreamProblem(
                "delta", f"would make the message longer than {max_chars} characters"
            )
    raise StreamProblem("seq", "other appends keep getting in first: send it again")


async def finish(
    session: AsyncSession,
    *,
    message_id: int,
    owner_id: int | None,
    status: str,
    input_tokens: int | None,
    output_tokens: int | None,
) -> Row[Any] | None:
    """End a streaming message with `status`, folding its chunks into `content` (its one
    rewrite). Returns the finished row (as `MESSAGE_COLUMNS` read it), None when there is no
    such message the caller may write; raises `StreamProblem` (`messageId`) when it is not
    streaming."""
    values: dict[str, Any] = {
        "status": status,
        "content": func.coalesce(chunk_text(messages.c.id, literal(0)), ""),
    }
    if input_tokens is not None and output_tokens is not None:
        values |= {"input_tokens": input_tokens, "output_tokens": output_tokens}
    row = (
        await session.execute(
            update(messages)
            .where(messages.c.id == message_id, messages.c.status == STREAMING, *_owned(owner_id))
            .values(**values)
            .returning(*messages.c)
        )
    ).first()
    if row is not None:
        return row
    exists = (
        await session.execute(
            select(messages.c.status).where(messages.c.id == message_id, *_owned(owner_id))
        )
    ).first()
    if exists is None:
        return None
    raise StreamProblem("messageId", f"is not streaming ({exists.status})")


async def expire(session: AsyncSession, *, silent_since: datetime) -> list[tuple[int, str, int]]:
    """Mark FAILED every stream with no append since `silent_since` (content folded as by
    `finish`); returns (message id, conversation id, owner's user id) of each, by id."""
    stale = and_(
        messages.c.status == STREAMING,
        func.coalesce(messages.c.stream_touched_at, messages.c.created_at) < silent_since,
    )
    ids = (await session.execute(select(messages.c.id).where(stale).order_by(messages.c.id))).all()
    if not ids:
        return []
    done = (
        await session.execute(
            update(messages)
            .where(messages.c.id.in_([row.id for row in ids]), messages.c.status == STREAMING)
            .values(
                status="FAILED", content=func.coalesce(chunk_text(messages.c.id, literal(0)), "")
            )
            .returning(messages.c.id, messages.c.conversation_id)
        )
    ).all()
    owners = dict(
        (
            await session.execute(
                select(conversations.c.id, conversations.c.user_id).where(
                    conversations.c.id.in_({row.conversation_id for row in done})
                )
            )
        ).all()
    )
    return sorted((row.id, row.conversation_id, owners[row.conversation_id]) for row in done)


@dataclass(frozen=True)
class StreamState:
    """What a `messageStream` subscriber reads: the text after a seq, the last seq, status."""

    status: str
    seq: int
    delta: str


def _read_after_statement(owned: bool) -> Any:
    """`read_after`'s one statement, built once (values: `message_id`, `after`, and with
    `owned` the owner's `owner_id`), so that PostgreSQL's driver reads prepare it once."""
    message_id, after = bindparam("message_id", type_=Integer), bindparam("after", type_=Integer)
    through = (
        select(func.coalesce(func.sum(func.length(chunks.c.delta)), 0))
        .where(chunks.c.message_id == messages.c.id, chunks.c.seq <= after)
        .scalar_subquery()
    )
    scope = _owned_scope() if owned else []
    return select(
        messages.c.status,
        messages.c.stream_seq,
        case((messages.c.stream_seq == 0, messages.c.content), else_=literal("")).label("plain"),
        case(
            (messages.c.status == STREAMING, chunk_text(messages.c.id, after)),
            # Finished: `content` (edits included) after what appends 1..after held.
            else_=func.substr(messages.c.content, through.cast(Integer) + 1),
        ).label("delta"),
    ).where(messages.c.id == message_id, *scope)


_READ_AFTER = {owned: _read_after_statement(owned) for owned in (True, False)}


async def read_after(
    reads: Reads, *, message_id: int, owner_id: int | None, after: int
) -> StreamState | None:
    """The message's status, last seq and text after seq `after`, in one statement (one
    snapshot), on the app's reads (`db.reads`: on PostgreSQL straight on the driver, prepared
    once, one round trip); None when the caller may not see it. A never-streamed message has
    seq 0 and all its content after seq 0. While it streams the text is its chunks after
    `after`; once finished, its `content` (edits included) after the characters appends
    1..`after` held."""
    values: dict[str, Any] = {"message_id": message_id, "after": after}
    if owner_id is not None:
        values["owner_id"] = owner_id
    row = await reads.first(_READ_AFTER[owner_id is not None], values)
    if row is None:
        return None
    if row.stream_seq == 0 and row.status != STREAMING:
        return StreamState(row.status, 0, row.plain if after <= 0 else "")
    return StreamState(row.status, row.stream_seq, row.delta or "")
