"""The change feed: one per user, positions in commit order.

Why not a timestamp or a sequence: two transactions that draw 7 and 8 from a sequence may commit
8 first; a reader that has seen 8 and remembers "after 8" never sees 7. Hasura's streaming
subscriptions have exactly this hole. Here each user has one `feeds` row whose `head` is the
position of their last change. A write takes its positions by raising `head` in the same
statement that stores its changes, and the row lock that UPDATE takes is held until the
transaction ends: a second writer for the same user waits for the first to commit (or roll
back) before it can read `head`. So for one user, position order *is* commit order, and a reader
that sees position P can never later see a new change below P. SQLite has one writer at a time,
which gives the same guarantee.

The price is that one user's writes are serialised from the moment they record their changes
to their commit, so `record` should be the last statement before the commit (it is cheap: one
statement per user, whatever the number of changes). Writes of different users never wait for
each other.

Storage: `feeds(user_id, head, pruned_through)` and `changes(user_id, position, kind,
conversation_id, message_id, at)` keyed by `(user_id, position)`. A change names what it is
about by id only (no foreign keys): it outlives a deleted conversation or message, as the
tombstone of that deletion. Retention removes changes older than a cutoff and raises
`pruned_through`, so a reader can tell a cursor whose successors are gone (`CURSOR_EXPIRED`).

Announcing. A feed's readers are told "user U's feed has grown to position P" once the write
commits, and then read the feed after the last position they delivered: the announcement is a
wake-up, never the content. On PostgreSQL the recording statement itself calls
`pg_notify(FEED_CHANNEL, 'U:P')` (NOTIFY is delivered at commit, in commit order, never for a
rolled-back write), so a write still costs one statement per user. On SQLite (one process) the
functions registered with `on_local_commit` for the database are called after the commit.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any, cast

from sqlalchemy import BigInteger, Integer, Row, String, Table, bindparam, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TextualSelect

from db.models import Change, Feed, UTCDateTime, utcnow
from db.notifications import take_pending

changes = cast(Table, Change.__table__)
feeds = cast(Table, Feed.__table__)


class ChangeKind(enum.StrEnum):
    CONVERSATION_CREATED = "CONVERSATION_CREATED"
    CONVERSATION_UPDATED = "CONVERSATION_UPDATED"
    CONVERSATION_DELETED = "CONVERSATION_DELETED"
    CONVERSATION_TRANSFERRED_IN = "CONVERSATION_TRANSFERRED_IN"
    CONVERSATION_TRANSFERRED_OUT = "CONVERSATION_TRANSFERRED_OUT"
    MESSAGE_ADDED = "MESSAGE_ADDED"
    MESSAGE_EDITED = "MESSAGE_EDITED"
    MESSAGE_DELETED = "MESSAGE_DELETED"
    MESSAGE_FINISHED = "MESSAGE_FINISHED"
    BRANCH_SELECTED = "BRANCH_SELECTED"


@dataclass(frozen=True)
class NewChange:
    """A change to record in `user_id`'s feed."""

    user_id: int
    kind: ChangeKind
    conversation_id: str
    message_id: int | None = None


# The PostgreSQL channel on which a write announces `<user id>:<head>` at commit.
FEED_CHANNEL = "chatql_feeds"

# PostgreSQL: raise the head (row-locked until commit), store the changes and announce the new
# head, one statement. `announced` calls a volatile function, so it is evaluated once.
_RECORD_POSTGRES = text(
    f"""
    WITH head AS (
        INSERT INTO feeds (user_id, head, pruned_through) VALUES (:user_id, :count, 0)
        ON CONFLICT (user_id) DO UPDATE SET head = feeds.head + excluded.head
        RETURNING user_id, head
    ),
    stored AS (
        INSERT INTO changes (user_id, position, kind, conversation_id, message_id, at)
        SELECT :user_id, head.head - :count + v.k, v.kind, v.conversation_id, v.message_id, :at
        FROM head,
             unnest(CAST(:kinds AS text[]), CAST(:conversation_ids AS text[]),
                    CAST(:message_ids AS bigint[])) WITH ORDINALITY
                 AS v(kind, conversation_id, message_id, k)
        RETURNING position
    ),
    announced AS (
        SELECT pg_notify('{FEED_CHANNEL}', CAST(user_id AS text) || ':' || CAST(head AS text))
            AS done
        FROM head
    ),
    sent AS (
        SELECT count(pg_notify(v.channel, v.payload)) AS done
        FROM unnest(CAST(:channels AS text[]), CAST(:payloads AS text[])) AS v(channel, payload)
    )
    SELECT stored.position FROM stored, announced, sent
    """
).bindparams(bindparam("at", type_=UTCDateTime()))
# SQLite (one writer at a time): positions follow the head; the trigger `changes_raise_head`
# (migration 0006) raises it for every stored change.
_RECORD_SQLITE = text(
    """
    INSERT INTO changes (user_id, position, kind, conversation_id, message_id, at)
    SELECT :user_id,
           COALESCE((SELECT head FROM feeds WHERE user_id = :user_id), 0) + v.key + 1,
           json_extract(v.value, '$[0]'), json_extract(v.value, '$[1]'),
           json_extract(v.value, '$[2]'), :at
    FROM json_each(:items) AS v
    ORDER BY v.key
    RETURNING position
    """
).bindparams(bindparam("at", type_=UTCDateTime()))


async def record(
    session: AsyncSession, items: Sequence[NewChange], *, at: datetime | None = None
) -> dict[int, list[int]]:
    """Store `items` in their users' feeds, in the order given; returns each user's new
    positions. One statement per user (users in id order, so two writes that touch the same
    two feeds lock them in the same order and never deadlock). Call it last in the
    transaction (see the module docstring)."""
    moment = at or utcnow()
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    positions: dict[int, list[int]] = {}
    ordered = sorted(enumerate(items), key=lambda pair: (pair[1].user_id, pair[0]))
    for user_id, group in groupby(ordered, key=lambda pair: pair[1].user_id):
        batch = [item for _, item in group]
        params: dict[str, Any] = {"user_id": user_id, "at": moment}
        if postgres:
            # The transaction's queued notifications (`db.notifications`: the broker's) ride
            # in the first user's statement: one statement fewer a write.
            channels, payloads = take_pending(session)
            params |= {
                "channels": channels,
                "payloads": payloads,
                "count": len(batch),
                "kinds": [item.kind.value for item in batch],
                "conversation_ids": [item.conversation_id for item in batch],
                "message_ids": [item.message_id for item in batch],
            }
            statement = _RECORD_POSTGRES
        else:
            rows = [[item.kind.value, item.conversation_id, item.message_id] for item in batch]
            params["items"] = json.dumps(rows)
            statement = _RECORD_SQLITE
        result = await session.execute(statement, params)
        positions[user_id] = sorted(int(position) for (position,) in result.all())
    if not postgres:
        _announce_after_commit(session, positions)
    return positions


# SQLite: what to call, per database URL, when a transaction that recorded changes commits.
FeedListener = Callable[[int, int], None]
_local_listeners: dict[str, list[FeedListener]] = {}
_PENDING_HEADS = "chatql.feed.pending"


@contextmanager
def on_local_commit(database_url: str, listener: FeedListener) -> Iterator[None]:
    """While the block runs, `listener(user_id, head)` is called after every commit, in this
    process, of a transaction that recorded changes on the SQLite database `database_url`
    (PostgreSQL announces through `FEED_CHANNEL` instead). Never on rollback."""
    key = _url_key(database_url)
    _local_listeners.setdefault(key, []).append(listener)
    try:
        yield
    finally:
        _local_listeners[key].remove(listener)
        if not _local_listeners[key]:
            del _local_listeners[key]


def _url_key(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def _announce_after_commit(session: AsyncSession, positions: dict[int, list[int]]) -> None:
    pending: dict[int, int] | None = session.info.get(_PENDING_HEADS)
    if pending is None:
        pending = session.info[_PENDING_HEADS] = {}
        sync_session = session.sync_session

        def deliver(committed: Session) -> None:
            heads = dict(pending)
            pending.clear()
            listeners = _local_listeners.get(_url_key(str(committed.get_bind().engine.url)), ())
            for user_id, head in heads.items():
                for listener in list(listeners):
                    listener(user_id, head)

        def forget(_: Session) -> None:
            pending.clear()

        event.listen(sync_session, "after_commit", deliver)
        event.listen(sync_session, "after_rollback", forget)
    for user_id, stored in positions.items():
        if stored:
            pending[user_id] = max(stored[-1], pending.get(user_id, 0))


@dataclass(frozen=True)
class FeedState:
    """`head`: the position of the user's last change (0: none yet); `pruned_through`: every
    change at or before it may have been removed by retention."""

    head: int
    pruned_through: int


async def feed_state(session: AsyncSession, *, user_id: int) -> FeedState:
    row = (
        await session.execute(
            select(feeds.c.head, feeds.c.pruned_through).where(feeds.c.user_id == user_id)
        )
    ).first()
    return (
        FeedState(head=int(row.head), pruned_through=int(row.pruned_through))
        if row
        else (FeedState(head=0, pruned_through=0))
    )


async def read_changes(
    session: AsyncSession, *, user_id: int, after: int, limit: int
) -> list[Row[Any]]:
    """Up to `limit` changes of `user_id`'s feed after position `after`, oldest first."""
    statement = (
        select(changes)
        .where(changes.c.user_id == user_id, changes.c.position > after)
        .order_by(changes.c.position)
        .limit(limit)
    )
    return list((await session.execute(statement)).all())


@dataclass(frozen=True)
class FeedPage:
    """A page of a feed, read in one statement with the feed's state at that moment: `rows`
    are changes (`position`, `kind`, `conversation_id`, `message_id`, `at`) oldest first."""

    state: FeedState
    rows: list[Row[Any]]


_READ_FEED = text(
    """
    SELECT f.head AS feed_head, f.pruned_through AS feed_pruned_through,
           c.position, c.kind, c.conversation_id, c.message_id, c.at
    FROM (SELECT CAST(:user_id AS INTEGER) AS user_id) AS me
    LEFT JOIN feeds AS f ON f.user_id = me.user_id
    LEFT JOIN (
        SELECT position, kind, conversation_id, message_id, at FROM changes
        WHERE user_id = :user_id AND position > :after
          AND position > COALESCE(
              (SELECT pruned_through FROM feeds WHERE user_id = :user_id), 0)
        ORDER BY position
        LIMIT :limit
    ) AS c ON 1 = 1
    ORDER BY c.position
    """
).columns(
    feed_head=BigInteger(),
    feed_pruned_through=BigInteger(),
    position=BigInteger(),
    kind=String(),
    conversation_id=String(),
    message_id=Integer(),
    at=UTCDateTime(),
)


def _feeds_statement(count: int) -> TextualSelect:
    """`_READ_FEED` for `count` (user, after) pairs at once: one branch each, tagged `k`."""
    branches = [
        f"""
        SELECT * FROM (
            SELECT {i} AS k, f.head AS feed_head, f.pruned_through AS feed_pruned_through,
                   c.position, c.kind, c.conversation_id, c.message_id, c.at
            FROM (SELECT CAST(:u{i} AS INTEGER) AS user_id) AS me
            LEFT JOIN feeds AS f ON f.user_id = me.user_id
            LEFT JOIN (
                SELECT position, kind, conversation_id, message_id, at FROM changes
                WHERE user_id = :u{i} AND position > :a{i}
                  AND position > COALESCE(
                      (SELECT pruned_through FROM feeds WHERE user_id = :u{i}), 0)
                ORDER BY position
                LIMIT :limit
            ) AS c ON 1 = 1
        ) AS b{i}"""
        for i in range(count)
    ]
    return text(" UNION ALL ".join(branches) + " ORDER BY k, position").columns(
        k=Integer(),
        feed_head=BigInteger(),
        feed_pruned_through=BigInteger(),
        position=BigInteger(),
        kind=String(),
        conversation_id=String(),
        message_id=Integer(),
        at=UTCDateTime(),
    )


_FEEDS_STATEMENTS: dict[int, TextualSelect] = {}


async def read_feeds(
    session: AsyncSession, *, keys: Sequence[tuple[int, int]], limit: int
) -> dict[tuple[int, int], FeedPage]:
    """`read_feed` for many (user id, after) pairs in one statement (each its own snapshot-
    consistent page and state): what a process's feed subscribers woken together read."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    statement = _FEEDS_STATEMENTS.get(len(keys))
    if statement is None:
        statement = _FEEDS_STATEMENTS[len(keys)] = _feeds_statement(len(keys))
    params: dict[str, int] = {"limit": limit}
    for i, (user_id, after) in enumerate(keys):
        params[f"u{i}"], params[f"a{i}"] = user_id, after
    grouped: dict[int, list[Row[Any]]] = {}
    for row in (await session.execute(statement, params)).all():
        grouped.setdefault(row.k, []).append(row)
    pages: dict[tuple[int, int], FeedPage] = {}
    for i, key in enumerate(keys):
        rows = grouped[i]
        state = FeedState(
            head=int(rows[0].feed_head or 0),
            pruned_through=int(rows[0].feed_pruned_through or 0),
        )
        pages[key] = FeedPage(state=state, rows=[row for row in rows if row.position is not None])
    return pages


async def read_feed(session: AsyncSession, *, user_id: int, after: int, limit: int) -> FeedPage:
    """Up to `limit` changes of `user_id`'s feed after position `after`, oldest first, and the
    feed's head and `pruned_through` as of the same snapshot: one statement, so a caller can
    tell whether changes after `after` were pruned without a second round trip. Changes at or
    before `pruned_through` are never returned, even while retention is still deleting them."""
    result = await session.execute(_READ_FEED, {"user_id": user_id, "after": after, "limit": limit})
    rows = list(result.all())
    first = rows[0]
    state = FeedState(
        head=int(first.feed_head or 0), pruned_through=int(first.feed_pruned_through or 0)
    )
    return FeedPage(state=state, rows=[row for row in rows if row.position is not None])
