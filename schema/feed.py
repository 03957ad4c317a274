"""The change feed's read side (`sync.graphql`): `changes`, `changesCursor`, and the `changes`
subscription.

Cursors. A feed cursor is `["f",<user id>,<position>]` as unpadded base64url JSON, like every
cursor (`db.formats.encode_cursor`); `Change.cursor` and its edge's cursor are the same string.
Position 0 is the start of a feed (`changesCursor` of a user who has no change yet). A cursor
that is not one of ours, names another user's feed, or lies beyond the feed's head is
BAD_USER_INPUT (field `after`); one before `pruned_through` (a change after it was pruned by
retention) is CURSOR_EXPIRED. A cursor *at* `pruned_through` is still good: every change after
it is kept.

Reads. A page is one statement that also reads the feed's head and `pruned_through`
(`db.changes.read_feed`), so the checks above cost nothing more. `conversation` and `message`
go through the request's loaders: a page of 100 changes with both selected costs three
statements (the page, the conversations, the messages) besides the viewer. Both are resolved
for the viewer's own feed: null once the conversation is deleted or no longer the viewer's (an
admin's too: a feed is its owner's alone), and `message` also once the message is gone.

The subscription (design after Hasura's cursor-based streaming subscriptions, with positions
in commit order, see `db.changes`). It registers with the hub BEFORE its first read, then
reads the feed after its cursor page by page (the replay), then waits for a wake-up beyond the
last position it delivered and reads again. A wake-up is only a hint (`realtime.hub`): queued
wake-ups are dropped before each read, which covers them, so a change is delivered once, in
position order, with no gap at the seam between replay and live. When the LISTEN connection
comes back, the hub wakes every subscriber (`RESYNC`), which reads from its last position:
nothing committed while it was down is lost. Each page gets fresh loaders (the subscription
lives for hours), whose conversations and messages are loaded for the whole page at once when
the selection asks for them, and reloads the viewer, as `messageAdded` does; it ends as
that one does: UNAUTHENTICATED when the token expires or the viewer is deactivated, and
SUBSCRIBER_TOO_SLOW when more wake-ups queue up than the subscription queue holds (the
client subscribes again with its last cursor and loses nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import strawberry
from sqlalchemy import Row
from strawberry.types.nodes import SelectedField, Selection

from db.changes import ChangeKind, FeedPage, feed_state, read_feed
from db.engine import idempotent_read
from db.formats import encode_cursor, is_key
from db.pagination import Page
from loaders import Loaders, Viewer, make_loaders
from realtime.hub import RESYNC, SubscriberTooSlow, ViewerGone
from schema.context import Context
from schema.errors import BAD_TOKEN, BadUserInput, CursorExpired, TooSlow, Unauthenticated
from schema.fields import Args, Column, Failed, Level, Paged, define, gather, load_all, plain
from schema.pagination import cursor_values
from schema.permissions import require_viewer
from schema.relay import to_global_id
from schema.resolvers import Wrapper, defined
from schema.subscriptions import until
from schema.types import Conversation, Info, Message, PageInfo

strawberry.enum(ChangeKind, name="ChangeKind")

FEED_CURSOR_KIND = "feed"  # tagged "f" in the cursor
# Positions are BIGINT.
MAX_POSITION = 2**63 - 1
# Changes a subscription reads at once.
SUBSCRIPTION_PAGE = 100
NOT_A_CURSOR = "not a valid cursor for this connection"


def encode_feed_cursor(user_id: int, position: int) -> str:
    return encode_cursor(FEED_CURSOR_KIND, (user_id, position))


def decode_feed_cursor(cursor: str, *, viewer_id: int, field: str = "after") -> int:
    """The position a cursor of `viewer_id`'s feed names; BAD_USER_INPUT naming `field` for
    anything else (another user's feed included)."""
    values = cursor_values(cursor, tag=FEED_CURSOR_KIND[0], field=field)
    if len(values) != 3:
        raise BadUserInput.one(field, NOT_A_CURSOR)
    _, user_id, position = values
    if not is_key(user_id) or type(position) is not int or not 0 <= position <= MAX_POSITION:
        raise BadUserInput.one(field, NOT_A_CURSOR)
    if user_id != viewer_id:
        raise BadUserInput.one(field, "a cursor of another user's feed")
    return int(position)


def check_position(page: FeedPage, position: int, *, field: str = "after") -> None:
    """Whether `position` can be read after, as of `page`'s snapshot of the feed."""
    if position > page.state.head:
        raise BadUserInput.one(field, NOT_A_CURSOR)
    if position < page.state.pruned_through:
        raise CursorExpired()


class ChangeRow(NamedTuple):
    """A change of `user_id`'s feed, as `Change`'s definitions read it."""

    user_id: int
    position: int
    kind: str
    conversation_id: str
    message_id: int | None
    at: datetime

    @classmethod
    def of(cls, row: Row[Any], user_id: int) -> ChangeRow:
        return cls(user_id, row.position, row.kind, row.conversation_id, row.message_id, row.at)


@define("Change.cursor", description="Opaque position in the feed: resume after it.")
def change_cursor(level: Level, args: Args) -> Column:
    return [encode_feed_cursor(row.user_id, row.position) for row in level.rows]


@define("Change.kind")
def change_kind(level: Level, args: Args) -> Column:
    return [ChangeKind(row.kind) for row in level.rows]


plain("Change.at", "at", description="When the change was committed.")


@define("Change.conversationId")
def change_conversation_id(level: Level, args: Args) -> Column:
    return [to_global_id("Conversation", row.conversation_id) for row in level.rows]


@define("Change.messageId", description="Set for MESSAGE_* kinds.")
def change_message_id(level: Level, args: Args) -> Column:
    return [
        None if row.message_id is None else to_global_id("Message", row.message_id)
        for row in level.rows
    ]


async def _own_conversations(level: Level) -> list[Row[Any] | None]:
    """Each change's conversation, while it is the feed owner's (else None)."""
    rows = level.rows
    found = await load_all(level.loaders.conversation_by_id, [r.conversation_id for r in rows])
    return [
        conversation if conversation is not None and conversation.user_id == row.user_id else None
        for row, conversation in zip(rows, found, strict=True)
    ]


@define(
    "Change.conversation",
    description="Its current state; null when deleted or no longer the viewer's.",
)
async def change_conversation(level: Level, args: Args) -> Column:
    return await _own_conversations(level)


@define("Change.message", description="Its current state; null when deleted or no longer visible.")
async def change_message(level: Level, args: Args) -> Column:
    rows = level.rows
    ids = [row.message_id for row in rows if row.message_id is not None]
    conversations, messages = await gather(
        _own_conversations(level), load_all(level.loaders.message_by_id, ids)
    )
    found = iter(messages)
    column: Column = []
    for row, conversation in zip(rows, conversations, strict=True):
        message = next(found) if row.message_id is not None else None
        visible = (
            message is not None
            and conversation is not None
            and message.conversation_id == conversation.id
        )
        column.append(message if visible else None)
    return column


@define(
    "Query.changes",
    description="The viewer's own change feed, oldest first, in commit order. `after` "
    "omitted: from the oldest change still kept.",
    arguments={"first": (int | None, None), "after": (str | None, None)},
)
async def query_changes(level: Level, args: Args) -> Column:
    context = level.context
    viewer = context.viewer
    if viewer is None:
        return [Failed(Unauthenticated())]
    config = context.config
    first, after = args.get("first"), args.get("after")
    if first is not None and not 1 <= first <= config.max_page_size:
        raise BadUserInput.one("first", f"must be between 1 and {config.max_page_size}")
    size = first if first is not None else config.default_page_size
    start = decode_feed_cursor(after, viewer_id=viewer.id) if after is not None else None
    read = await _read(context, viewer, after=start or 0, limit=size + 1)
    if start is not None:
        check_position(read, start)
    page = Page(
        rows=[ChangeRow.of(row, viewer.id) for row in read.rows[:size]],  # type: ignore[misc]
        has_next=len(read.rows) > size,
        # Kept changes are the positions after `pruned_through`, up to the head.
        has_previous=start is not None and start > read.state.pruned_through,
    )
    return [Paged(page, "feed", _no_count)]


def _no_count() -> Awaitable[int]:
    raise AssertionError("a feed has no totalCount")


@define(
    "Query.changesCursor",
    description="The end of the viewer's feed now. Take it BEFORE loading a snapshot; then "
    "read `changes(after:)` from it, and nothing that happened in between is missed.",
)
async def query_changes_cursor(level: Level, args: Args) -> Column:
    viewer = level.viewer
    if viewer is None:
        return [Failed(Unauthenticated())]
    state = await idempotent_read(
        level.context.services.read_sessionmaker,
        lambda session: feed_state(session, user_id=viewer.id),
    )
    return [encode_feed_cursor(viewer.id, state.head)]


@strawberry.type(description="One change in the viewer's feed.")
class Change(Wrapper):
    cursor: str = defined("Change.cursor")
    kind: ChangeKind = defined("Change.kind")
    at: datetime = defined("Change.at")
    conversation_id: strawberry.ID = defined("Change.conversationId")
    message_id: strawberry.ID | None = defined("Change.messageId")
    conversation: Conversation | None = defined("Change.conversation")
    message: Message | None = defined("Change.message")


@strawberry.type
class ChangeEdge(Wrapper):
    cursor: str = defined("Edge.cursor")
    node: Change = defined("Edge.node")


@strawberry.type
class ChangeConnection(Wrapper):
    edges: list[ChangeEdge] = defined("Connection.edges")
    page_info: PageInfo = defined("Connection.pageInfo")


def _selected_names(selections: Iterable[Selection]) -> set[str]:
    """The field names of a selection set, through fragments (directives not weighed: a field
    that `@skip` leaves out still counts, which costs a statement, never an answer)."""
    names: set[str] = set()
    for selection in selections:
        if isinstance(selection, SelectedField):
            names.add(selection.name)
        else:
            names |= _selected_names(selection.selections)
    return names


async def _preload(info: Info, loaders: Loaders, rows: Sequence[Row[Any]]) -> None:
    """Load, for a whole page of a subscription, the conversations and messages its selection
    asks for: one statement each, where each event would otherwise load its own."""
    wanted = _selected_names(
        selection for field in info.selected_fields for selection in field.selections
    )
    loads: list[Awaitable[Any]] = []
    if wanted & {"conversation", "message"}:
        loads.append(loaders.conversation_by_id.load_many([row.conversation_id for row in rows]))
    if "message" in wanted:
        ids = [row.message_id for row in rows if row.message_id is not None]
        loads.append(loaders.message_by_id.load_many(ids))
    if rows and loads:
        await asyncio.gather(*loads)


async def _read(context: Context, viewer: Viewer, *, after: int, limit: int) -> FeedPage:
    return await idempotent_read(
        context.services.read_sessionmaker,
        lambda session: read_feed(session, user_id=viewer.id, after=after, limit=limit),
    )


@strawberry.type
class FeedQuery:
    changes: ChangeConnection = defined("Query.changes")
    changes_cursor: str = defined("Query.changesCursor")


@strawberry.type
class FeedSubscription:
    @strawberry.subscription(
        description="The viewer's changes after `after` (omitted: from now), replayed from the "
        "database, then live: each change exactly once, in commit order, across reconnects."
    )
    async def changes(self, info: Info, after: str | None = None) -> AsyncGenerator[Change, None]:
        context = info.context
        viewer = require_viewer(context)
        start = decode_feed_cursor(after, viewer_id=viewer.id) if after is not None else None
        services = context.services
        # Registered before the first read: a change committed after that read wakes it.
        async with services.broker.hub.subscribe_feed(viewer_id=viewer.id) as subscription:
            try:
                if start is None:
                    state = await idempotent_read(
                        services.read_sessionmaker,
                        lambda session: feed_state(session, user_id=viewer.id),
                    )
                    start = state.head
                last = start
                first_read = True
                while True:
                    subscription.drain()  # the read below covers every wake-up so far
                    loaders = make_loaders(services.read_sessionmaker, viewer, services.reads)
                    page, viewer_row = await asyncio.gather(
                        _read(context, viewer, after=last, limit=SUBSCRIPTION_PAGE),
                        loaders.user_by_id.get(viewer.id),
                    )
                    if viewer_row is None or not viewer_row.is_active:
                        raise Unauthenticated(BAD_TOKEN)
                    if first_read:
                        check_position(page, last)
                        first_read = False
                    elif last < page.state.pruned_through:
                        raise CursorExpired()  # fell behind retention while subscribed
                    await _preload(info, loaders, page.rows)
                    context.loaders = loaders
                    for row in page.rows:
                        yield Change(row=ChangeRow.of(row, viewer.id))
                        last = row.position
                    if len(page.rows) == SUBSCRIPTION_PAGE:
                        continue  # more to replay
                    while True:  # caught up: wait for the feed to grow beyond `last`
                        try:
                            async with asyncio.timeout(until(context.token_expires)):
                                head = await subscription.next_head()
                        except TimeoutError as exc:  # the token it was opened with expired
                            raise Unauthenticated(BAD_TOKEN) from exc
                        if head == RESYNC or head > last:
                            break
            except SubscriberTooSlow as exc:
                raise TooSlow(exc.queue_size) from exc
            except ViewerGone as exc:
                raise Unauthenticated(BAD_TOKEN) from exc
