"""`Query.searchMessages` (the contract's "organize" extension) and its types.

The query syntax, the SQL and the ranking are `db.search`'s; snippets and highlight ranges
are `db.snippets`'. Cursors are keyset cursors like every connection's, `["s", rank, id]`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import strawberry
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from db import search
from db.engine import idempotent_read
from db.formats import encode_cursor, is_key
from db.models import MessageRole
from db.snippets import snippet
from schema.errors import BadUserInput, NotFound
from schema.pagination import MAX_CURSOR_LENGTH, PageInfo
from schema.permissions import require_viewer
from schema.relay import decode_conversation_id
from schema.types import Info, Message


@strawberry.type
class TextRange:
    start: int = strawberry.field(description="Offset in characters (Unicode code points).")
    length: int


@strawberry.type
class SearchHit:
    message: Message
    snippet: str = strawberry.field(
        description="Plain text: the best-matching passage of the message, at most 200 characters."
    )
    highlights: list[TextRange] = strawberry.field(
        description="Where the matched words are in `snippet`."
    )


@strawberry.type
class SearchHitEdge:
    cursor: str
    node: SearchHit


@strawberry.type
class SearchHitConnection:
    edges: list[SearchHitEdge]
    page_info: PageInfo


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


def _hit(row: Row[Any], words: list[str]) -> SearchHitEdge:
    found = snippet(row.content, words)
    return SearchHitEdge(
        cursor=encode_cursor("search", (float(row.rank), row.id)),
        node=SearchHit(
            message=Message.from_row(row),
            snippet=found.text,
            highlights=[TextRange(start=s, length=n) for s, n in found.highlights],
        ),
    )


@strawberry.type
class SearchFields:
    @strawberry.field(
        description="The viewer's messages that match `query`, best match first: words (all "
        'must match, any form of the word), "quoted phrases", -excluded words, `or`.'
    )
    async def search_messages(
        self,
        info: Info,
        query: str,
        conversation_id: strawberry.ID | None = None,
        role: MessageRole | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> SearchHitConnection:
        viewer = require_viewer(info.context)
        config = info.context.config
        if first is not None and not 1 <= first <= config.max_page_size:
            raise BadUserInput.one("first", f"must be between 1 and {config.max_page_size}")
        try:
            parsed = search.parse_query(query)
        except search.QueryProblem as problem:
            raise BadUserInput.one("query", str(problem)) from None
        keyset = decode_search_cursor(after) if after is not None else None
        conversation_key = None
        if conversation_id is not None:
            conversation_key = decode_conversation_id(conversation_id, field="conversationId")
            if await info.context.loaders.conversation_by_id.get(conversation_key) is None:
                raise NotFound()
        size = first or config.default_page_size

        async def fetch(session: AsyncSession) -> search.SearchPage:
            return await search.search_messages(
                session,
                query=parsed,
                owner_id=viewer.id,
                conversation_id=conversation_key,
                role=role,
                first=size,
                after=keyset,
            )

        page = await idempotent_read(info.context.services.read_sessionmaker, fetch)
        words = parsed.words
        edges = [_hit(row, words) for row in page.rows]
        return SearchHitConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )
