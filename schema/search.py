"""`Query.searchMessages` (the contract's "organize" extension) and its types.

The query syntax, the SQL and the ranking are `db.search`'s; snippets and highlight ranges
are `db.snippets`'. Cursors are keyset cursors like every connection's, `["s", rank, id]`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Awaitable
from typing import Any, NamedTuple

import strawberry
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from db import search
from db.engine import idempotent_read
from db.formats import is_key
from db.models import MessageRole
from db.pagination import Page
from db.reads import DriverReads, GuardedReads, Reads
from db.snippets import snippet
from schema.errors import BadUserInput, NotFound, Unauthenticated
from schema.fields import REQUIRED, Args, Column, Failed, Level, Paged, define, plain
from schema.pagination import MAX_CURSOR_LENGTH
from schema.relay import decode_conversation_id
from schema.resolvers import Wrapper, defined
from schema.types import Message, PageInfo


def decode_search_cursor(cursor: str) -> tuple[float, int]:
    bad = BadUserInput.one("after", "not a valid cursor for this connection")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode("ascii"))
        if raw.count(b"[") != 1 or b"{" in raw:
            raise ValueError
        values = json.loads(raw)
    except (binascii.Error, UnicodeError, ValueError):
        raise bad from None
    if not isinstance(values, list) or len(values) != 3 or values[0] != "s":
        raise bad
    _, rank, key = values
    if type(rank) not in (int, float) or not math.isfinite(rank) or not is_key(key):
        raise bad
    return float(rank), key


class Hit(NamedTuple):
    """A search hit, as `SearchHit`'s definitions read it: the message's row, its snippet,
    and the rank and id its cursor is made of."""

    message: Row[Any]
    snippet: str
    highlights: list[tuple[int, int]]
    rank: float
    id: int


class Range(NamedTuple):
    start: int
    length: int


def _hit(row: Row[Any], words: list[str]) -> Hit:
    found = snippet(row.content, words)
    return Hit(row, found.text, [Range(*pair) for pair in found.highlights], row.rank, row.id)


@define("SearchHit.message")
def search_hit_message(level: Level, args: Args) -> Column:
    return [hit.message for hit in level.rows]


plain(
    "SearchHit.snippet",
    "snippet",
    description="Plain text: the best-matching passage of the message, at most 200 characters.",
)


@define("SearchHit.highlights", description="Where the matched words are in `snippet`.")
def search_hit_highlights(level: Level, args: Args) -> Column:
    return [hit.highlights for hit in level.rows]


plain("TextRange.start", "start", description="Offset in characters (Unicode code points).")
plain("TextRange.length", "length")


@define(
    "Query.searchMessages",
    description="The viewer's messages that match `query`, best match first: words (all "
    'must match, any form of the word), "quoted phrases", -excluded words, `or`.',
    arguments={
        "query": (str, REQUIRED),
        "conversation_id": (strawberry.ID | None, None),
        "role": (MessageRole | None, None),
        "first": (int | None, None),
        "after": (str | None, None),
    },
)
async def query_search_messages(level: Level, args: Args) -> Column:
    context = level.context
    viewer = context.viewer
    if viewer is None:
        return [Failed(Unauthenticated())]
    config = context.config
    first, after = args.get("first"), args.get("after")
    if first is not None and not 1 <= first <= config.max_page_size:
        raise BadUserInput.one("first", f"must be between 1 and {config.max_page_size}")
    try:
        parsed = search.parse_query(args["query"])
    except search.QueryProblem as problem:
        raise BadUserInput.one("query", str(problem)) from None
    keyset = decode_search_cursor(after) if after is not None else None
    conversation_key = None
    conversation_id = args.get("conversation_id")
    if conversation_id is not None:
        conversation_key = decode_conversation_id(conversation_id, field="conversationId")
        if await level.loaders.conversation_by_id.get(conversation_key) is None:
            return [Failed(NotFound())]
    size = first or config.default_page_size
    reads: DriverReads | GuardedReads | Reads | None = context.services.driver_reads
    if isinstance(reads, DriverReads):
        # PostgreSQL on asyncpg: the shape's statement compiled once, straight on the driver,
        # with the check of a viewer taken from the process's cache in it (as the loaders'
        # reads do: `db.reads.GuardedReads`), so a search is one statement.
        if context.guard is not None:
            reads = GuardedReads(reads, context.guard)
        sql, arguments = search.postgres_sql(
            query=parsed,
            owner_id=viewer.id,
            conversation_id=conversation_key,
            role=args.get("role"),
            first=size,
            after=keyset,
        )
        rows = list(await reads.all_sql(sql, arguments))
        found = search.SearchPage(rows=rows[:size], has_next=len(rows) > size)
    else:

        async def fetch(session: AsyncSession) -> search.SearchPage:
            return await search.search_messages(
                session,
                query=parsed,
                owner_id=viewer.id,
                conversation_id=conversation_key,
                role=args.get("role"),
                first=size,
                after=keyset,
            )

        found = await idempotent_read(context.services.read_sessionmaker, fetch)
    words = parsed.words
    page = Page(
        rows=[_hit(row, words) for row in found.rows],  # type: ignore[misc]
        has_next=found.has_next,
        has_previous=after is not None,
    )
    return [Paged(page, "search", _no_count)]


def _no_count() -> Awaitable[int]:
    raise AssertionError("search results have no totalCount")


@strawberry.type
class TextRange(Wrapper):
    start: int = defined("TextRange.start")
    length: int = defined("TextRange.length")


@strawberry.type
class SearchHit(Wrapper):
    message: Message = defined("SearchHit.message")
    snippet: str = defined("SearchHit.snippet")
    highlights: list[TextRange] = defined("SearchHit.highlights")


@strawberry.type
class SearchHitEdge(Wrapper):
    cursor: str = defined("Edge.cursor")
    node: SearchHit = defined("Edge.node")


@strawberry.type
class SearchHitConnection(Wrapper):
    edges: list[SearchHitEdge] = defined("Connection.edges")
    page_info: PageInfo = defined("Connection.pageInfo")


@strawberry.type
class SearchFields:
    search_messages: SearchHitConnection = defined("Query.searchMessages")
