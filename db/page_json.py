"""Message pages delivered as finished JSON.

A nested page such as the last 20 messages of 500 conversations is 10,000 rows; turning each
into Python objects, then into dicts, then into JSON costs far more than reading it. When a
selection below `messages` asks only for plain message fields, the planner hands down its
`Shape` and gets each page's `edges` as JSON text, ready to be spliced into the response.

On PostgreSQL the database writes that text: one statement for every parent, each page read
by `LATERAL (... ORDER BY ... LIMIT n)` and folded into one string with `string_agg`. On SQLite
the rows are read as usual and the same text is written here with orjson. Both write exactly
the bytes the row-by-row path writes (the differential tests hold them to it): compact JSON,
keys in selection order, strings escaped as orjson escapes them, the formats of `db.formats`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import orjson
from sqlalchemy import BindParameter, Row, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import DateTime, Integer, String

from db.engine import read_session
from db.formats import encode_cursor, global_id, stamp
from db.messages import message_pages_by_conversation
from db.pagination import PageRequest
from db.reads import Reads, SessionReads

# What a message's JSON may hold: its plain fields, by the names of their columns.
MessageField = Literal[
    "id", "role", "content", "client_id", "created_at", "revision", "edited_at", "status", "model"
]
# A response key, or a type name written as a literal: GraphQL names, so nothing to escape.
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


@dataclass(frozen=True)
class Shape:
    """What each edge of a page looks like. `edge` and `node` list (response key, what) in
    selection order; an edge's `what` is "cursor", "node" or "typename", a node's is a
    `MessageField` or "typename" (the type names are `edge_type` and `node_type`)."""

    edge: tuple[tuple[str, str], ...]
    node: tuple[tuple[str, str], ...]
    edge_type: str = "MessageEdge"
    node_type: str = "Message"
    # Whether the cursors of the first and last edge are wanted (for `pageInfo`).
    ends: bool = False

    def __post_init__(self) -> None:
        names = [key for key, _ in (*self.edge, *self.node)] + [self.edge_type, self.node_type]
        if not all(NAME.fullmatch(name) for name in names):
            raise ValueError("response keys and type names must be GraphQL names")


class ConversationRow(NamedTuple):
    """A conversation as `select(conversations)` reads it."""

    id: str
    user_id: int
    title: str
    created_at: datetime
    updated_at: datetime
    archived: bool
    pinned: bool
    tags: str
    last_read_message_id: int | None
    last_read_at: datetime | None
    current_leaf_id: int | None


@dataclass
class JsonPage:
    edges: str | bytes = "[]"
    has_next: bool = False
    has_previous: bool = False
    start_cursor: str | None = None
    end_cursor: str | None = None
    # The row the database wrote the page in, which holds the conversation's columns too.
    written: Any = None

    @property
    def conversation(self) -> ConversationRow | None:
        """The page's conversation, where the database wrote the page (else None)."""
        row = self.written
        if row is None:
            return None
        return ConversationRow(
            row.parent, *(getattr(row, f"conversation_{c}") for c in CONVERSATION_COLUMNS[1:])
        )


async def message_json_pages(
    reads: Reads,
    *,
    conversation_ids: Sequence[str],
    request: PageRequest,
    shape: Shape,
    owner_id: int | None = None,
) -> dict[Hashable, JsonPage]:
    """One page of messages per conversation, its edges already JSON.

    On PostgreSQL only conversations of `owner_id` (None: any) get a page, and each page
    carries its conversation's row: one statement for both, where the conversation is the
    one the query asked for.
    """
    if reads.dialect == "postgresql":
        return await _written_by_postgres(reads, conversation_ids, request, shape, owner_id)
    assert isinstance(reads, SessionReads)
    async with read_session(reads.sessionmaker) as session:
        return await _written_here(session, conversation_ids, request, shape)


# ---- SQLite (and the reference): rows, then orjson ----------------------------------------


def _constant(value: str) -> Callable[[Row[Any]], Any]:
    return lambda row: value


def _node_values(what: str, type_name: str) -> Callable[[Row[Any]], Any]:
    if what == "typename":
        return _constant(type_name)
    if what == "id":
        return lambda row: global_id("Message", row.id)
    if what == "role":
        return lambda row: row.role.name
    if what == "created_at":
        return lambda row: stamp(row.created_at)
    if what == "edited_at":
        return lambda row: None if row.edited_at is None else stamp(row.edited_at)
    return lambda row: getattr(row, what)


async def _written_here(
    session: AsyncSession, conversation_ids: Sequence[str], request: PageRequest, shape: Shape
) -> dict[Hashable, JsonPage]:
    pages = await message_pages_by_conversation(
        session, conversation_ids=conversation_ids, request=request
    )
    node_values = [(key, _node_values(what, shape.node_type)) for key, what in shape.node]

    def node(row: Row[Any]) -> dict[str, Any]:
        return {key: value(row) for key, value in node_values}

    def cursor(row: Row[Any]) -> str:
        return encode_cursor("message", (row.created_at, row.id))

    edge_values: list[tuple[str, Callable[[Row[Any]], Any]]] = []
    for key, what in shape.edge:
        if what == "cursor":
            edge_values.append((key, cursor))
        elif what == "node":
            edge_values.append((key, node))
        else:
            edge_values.append((key, _constant(shape.edge_type)))
    result: dict[Hashable, JsonPage] = {}
    for parent, page in pages.items():
        rows = page.rows
        result[parent] = JsonPage(
            edges=orjson.dumps([{key: value(row) for key, value in edge_values} for row in rows]),
            has_next=page.has_next,
            has_previous=page.has_previous,
            start_cursor=cursor(rows[0]) if rows else None,
            end_cursor=cursor(rows[-1]) if rows else None,
        )
    return result


# ---- PostgreSQL: the database writes the text --------------------------------------------

_STAMP = "to_char({0}.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
_ID = "translate(encode(convert_to('Message:' || {0}.id, 'UTF8'), 'base64'), E'\\n', '')"
_CURSOR = (
    'rtrim(translate(encode(convert_to(\'["m","\' || '
    + _STAMP
    + " || '\",' || {0}.id || ']', 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')"
)
_NODE_SQL = {
    "id": "'\"' || " + _ID + " || '\"'",
    # Roles are stored by name (USER, ...), which is what GraphQL prints.
    "role": "'\"' || {0}.role || '\"'",
    # A streaming message's text is its chunks so far (`db.streams`).
    "content": "to_json(CASE WHEN {0}.status = 'STREAMING' THEN coalesce((SELECT "
    "string_agg(mc.delta, '' ORDER BY mc.seq) FROM message_chunks AS mc "
    "WHERE mc.message_id = {0}.id), '') ELSE {0}.content END)::text",
    "client_id": "coalesce(to_json({0}.client_id)::text, 'null')",
    "status": "'\"' || {0}.status || '\"'",
    "model": "coalesce(to_json({0}.model)::text, 'null')",
    "created_at": "'\"' || " + _STAMP + " || '\"'",
    "revision": "{0}.revision::text",
    # Null until edited: the concatenation is null then, and coalesce writes JSON's null.
    "edited_at": "coalesce('\"' || "
    + _STAMP.replace("created_at", "edited_at")
    + " || '\"', 'null')",
}


def _object_sql(parts: Sequence[tuple[str, str]]) -> str:
    """SQL that writes a JSON object of (key, SQL of the value's JSON) pairs."""
    if not parts:
        return "'{}'"
    pieces = []
    for index, (key, value) in enumerate(parts):
        opening = "{" if index == 0 else ","
        pieces += [f"'{opening}\"{key}\":'", value]
    pieces.append("'}'")
    return " || ".join(pieces)


def _edge_sql(shape: Shape, row: str) -> str:
    node = _object_sql(
        [
            (key, f"'\"{shape.node_type}\"'" if what == "typename" else _NODE_SQL[what].format(row))
            for key, what in shape.node
        ]
    )
    edge: list[tuple[str, str]] = []
    for key, what in shape.edge:
        if what == "cursor":
            edge.append((key, "'\"' || " + _CURSOR.format(row) + " || '\"'"))
        elif what == "node":
            edge.append((key, node))
        else:
            edge.append((key, f"'\"{shape.edge_type}\"'"))
    return _object_sql(edge)


STAMP = DateTime(timezone=True)
CONVERSATION_COLUMNS = ConversationRow._fields


@lru_cache(maxsize=256)
def _statement(shape: Shape, forward: bool, after: bool, before: bool, scoped: bool) -> TextClause:
    """The statement for one shape of request; its values are bound parameters."""
    ascending = "m.created_at, m.id"
    descending = "m.created_at DESC, m.id DESC"
    fetch = ascending if forward else descending
    bounds = ""
    if after:
        bounds += " AND (m.created_at, m.id) > (:after_at, :after_id)"
    if before:
        bounds += " AND (m.created_at, m.id) < (:before_at, :before_id)"
    chosen = "FILTER (WHERE r.page_rank <= :size)"
    edges = _edge_sql(shape, "r")
    ends = ""
    if shape.ends:
        for end, order in (
            ("start", "r.created_at, r.id"),
            ("end", "r.created_at DESC, r.id DESC"),
        ):
            for column in ("created_at", "id"):
                ends += (
                    f",\n    (array_agg(r.{column} ORDER BY {order}) {chosen})[1] AS {end}_{column}"
                )
    beyond = []
    if after:
        beyond.append(
            "EXISTS (SELECT 1 FROM messages x WHERE x.conversation_id = k.parent AND x.on_branch"
            " AND (x.created_at, x.id) <= (:after_at, :after_id)) AS preceding"
        )
    if before:
        beyond.append(
            "EXISTS (SELECT 1 FROM messages x WHERE x.conversation_id = k.parent AND x.on_branch"
            " AND (x.created_at, x.id) >= (:before_at, :before_id)) AS following"
        )
    beyond += [f"c.{column} AS conversation_{column}" for column in CONVERSATION_COLUMNS[1:]]
    scope = " AND c.user_id = :owner_id" if scoped else ""
    sql = f"""
SELECT k.parent, p.*{"".join(", " + b for b in beyond)}
FROM unnest(:parents) AS k(parent)
JOIN conversations c ON c.id = k.parent{scope}
CROSS JOIN LATERAL (
  SELECT count(*) AS fetched,
    '[' || coalesce(string_agg({edges}, ',' ORDER BY r.created_at, r.id) {chosen}, '') || ']'
      AS edges{ends}
  FROM (
    SELECT m.*, row_number() OVER (ORDER BY {fetch}) AS page_rank
    FROM messages m WHERE m.conversation_id = k.parent AND m.on_branch{bounds}
    ORDER BY {fetch} LIMIT :size + 1
  ) r
) p"""
    params: list[BindParameter[Any]] = [
        bindparam("parents", type_=ARRAY(String())),
        bindparam("size", type_=Integer()),
    ]
    if after:
        params += [bindparam("after_at", type_=STAMP), bindparam("after_id", type_=Integer())]
    if before:
        params += [bindparam("before_at", type_=STAMP), bindparam("before_id", type_=Integer())]
    if scoped:
        params.append(bindparam("owner_id", type_=Integer()))
    return text(sql).bindparams(*params)


async def _written_by_postgres(
    reads: Reads,
    conversation_ids: Sequence[str],
    request: PageRequest,
    shape: Shape,
    owner_id: int | None,
) -> dict[Hashable, JsonPage]:
    forward = request.first is not None
    after, before = request.after is not None, request.before is not None
    statement = _statement(shape, forward, after, before, owner_id is not None)
    values: dict[str, Any] = {
        "parents": list(conversation_ids),
        "size": request.size,
        "owner_id": owner_id,
    }
    if request.after is not None:
        values["after_at"], values["after_id"] = request.after
    if request.before is not None:
        values["before_at"], values["before_id"] = request.before
    pages: dict[Hashable, JsonPage] = {}
    size = request.size
    for row in await reads.all(statement, values):
        overflow = row.fetched > size
        preceding = bool(row.preceding) if request.after is not None else False
        following = bool(row.following) if request.before is not None else False
        page = pages[row.parent] = JsonPage(
            edges=row.edges,
            has_next=following or (forward and overflow),
            has_previous=preceding or (not forward and overflow),
        )
        page.written = row
        if shape.ends and row.fetched:
            page.start_cursor = encode_cursor("message", (row.start_created_at, row.start_id))
            page.end_cursor = encode_cursor("message", (row.end_created_at, row.end_id))
    return pages
