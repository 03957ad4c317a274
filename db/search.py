"""Full-text search over messages: one query syntax, each database's own index.

The syntax is PostgreSQL's `websearch_to_tsquery` (Google's, roughly): words (all must match),
`"quoted phrases"`, `-excluded` words or phrases, and `or` between two terms. It is parsed here
once, in Python, and then written for each database, so both read a query the same way:

- PostgreSQL: a canonical websearch string (every term quoted) for `websearch_to_tsquery` on
  the generated `tsvector` column (migration 0008), ranked by `ts_rank_cd` (cover density;
  it depends on the message alone).
- SQLite: an FTS5 MATCH expression in which every term is a quoted string (FTS5 syntax typed
  by the user is text, never operators: no injection), ranked by `-bm25()` (higher is
  better, as on PostgreSQL; bm25 weighs words by how rare they are in the whole index, so a
  write between two pages can move ranks on SQLite).

Each database tokenizes a term's text its own way, as it tokenized the messages. Pages are
keyset pages by (rank descending, id descending); the rank is the cursor's first value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    FromClause,
    Integer,
    Row,
    Select,
    String,
    Table,
    and_,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    union_all,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Conversation, Message, MessageRole
from db.reads import Prepared
from db.streams import MESSAGE_COLUMNS, STREAMING, content_of

POSTGRES_CONFIG = "english"
SEARCH_VECTOR = "search_vector"  # PostgreSQL: the generated column on messages
SEARCH_INDEX = "ix_messages_search"  # PostgreSQL: its GIN index
SEARCH_TABLE = "messages_fts"  # SQLite: the FTS5 table (and its shadow tables' prefix)
# SQLite: a connection's own FTS5 table holding, for one search, the text so far of the
# viewer's streaming messages (`_stage_streaming`).
LIVE_TABLE = "messages_fts_live"
SQLITE_TOKENIZER = "porter unicode61 remove_diacritics 0"  # as migration 0008's table

MAX_QUERY_LENGTH = 1000
MAX_TERMS = 32

messages = cast(Table, Message.__table__)
conversations = cast(Table, Conversation.__table__)

_TOKEN = re.compile(r'(-?)"([^"]*)"?|([^\s"]+)')
_WORD = re.compile(r"[^\W_]+")  # letters and digits: what both tokenizers keep


def sqlite_triggers() -> list[str]:
    """The triggers that keep the FTS5 table in step with `messages` (FTS5's own recipe for
    external-content tables, sqlite.org/fts5.html#external_content_tables)."""
    t = SEARCH_TABLE
    remove = f"INSERT INTO {t}({t}, rowid, content) VALUES ('delete', old.id, old.content);"
    add = f"INSERT INTO {t}(rowid, content) VALUES (new.id, new.content);"
    return [
        f"CREATE TRIGGER {t}_insert AFTER INSERT ON messages BEGIN {add} END",
        f"CREATE TRIGGER {t}_delete AFTER DELETE ON messages BEGIN {remove} END",
        f"CREATE TRIGGER {t}_update AFTER UPDATE OF content ON messages BEGIN {remove} {add} END",
    ]


def is_search_object(name: str | None) -> bool:
    """Whether a table, column or index is search's, which the models leave out (each
    database has its own, made by migration 0008)."""
    return name is not None and (
        name == SEARCH_VECTOR or name.startswith((SEARCH_TABLE, SEARCH_INDEX))
    )


class QueryProblem(ValueError):
    """A query that cannot be searched; the message is fit for the client."""


@dataclass(frozen=True)
class SearchQuery:
    """`groups` must all match, each by any of its terms; no `excluded` term may. A term is the
    text of a word or a phrase as the user wrote it (without quotes), at least one letter or
    digit in it."""

    groups: tuple[tuple[str, ...], ...]
    excluded: tuple[str, ...]

    @property
    def words(self) -> list[str]:
        """The words of every term that must or may match, for highlighting."""
        return [word for group in self.groups for term in group for word in _WORD.findall(term)]

    def websearch(self) -> str:
        """For PostgreSQL's `websearch_to_tsquery`."""
        parts = [" or ".join(f'"{term}"' for term in group) for group in self.groups]
        parts += [f'-"{term}"' for term in self.excluded]
        return " ".join(parts)

    def fts5(self) -> str:
        """For SQLite's FTS5 MATCH: every term a string literal, explicit parentheses."""

        def quoted(term: str) -> str:
            return '"' + term.replace('"', '""') + '"'

        expression = " AND ".join(
            "(" + " OR ".join(map(quoted, group)) + ")" for group in self.groups
        )
        for term in self.excluded:
            expression = f"({expression}) NOT {quoted(term)}"
        return expression


def parse_query(raw: str) -> SearchQuery:
    """Raise `QueryProblem` when nothing is left to search for (no word or phrase with a
    letter or digit outside an exclusion) or the query is too long."""
    if len(raw) > MAX_QUERY_LENGTH:
        raise QueryProblem(f"at most {MAX_QUERY_LENGTH} characters")
    if "\x00" in raw:
        raise QueryProblem("must not contain NUL characters (U+0000)")
    groups: list[list[str]] = []
    excluded: list[str] = []
    joining = False  # the previous token was `or` after a term
    for match in _TOKEN.finditer(raw):
        negated, phrase, word = match.groups()
        if word is not None and word.lower() == "or" and groups:
            joining = True
            continue
        if word is not None and word.startswith("-") and len(word) > 1:
            negated, word = "-", word[1:]
        term = " ".join((phrase if phrase is not None else word).split())
        if not _WORD.search(term):
            continue
        if negated:
            excluded.append(term)
        elif joining:
            groups[-1].append(term)
        else:
            groups.append([term])
        joining = False
    if not groups:
        raise QueryProblem("nothing to search for: give a word or a phrase")
    if sum(map(len, groups)) + len(excluded) > MAX_TERMS:
        raise QueryProblem(f"at most {MAX_TERMS} words and phrases")
    return SearchQuery(tuple(map(tuple, groups)), tuple(excluded))


@dataclass(frozen=True)
class SearchPage:
    rows: list[Row[Any]]  # message rows, each with its `rank`
    has_next: bool


async def search_messages(
    session: AsyncSession,
    *,
    query: SearchQuery,
    owner_id: int,
    conversation_id: str | None,
    role: MessageRole | None,
    first: int,
    after: tuple[float, int] | None,
) -> SearchPage:
    """The messages of `owner_id`'s conversations that match, best first: one statement (on
    SQLite, one more that finds the viewer's streaming messages, and while there are any, the
    statements that stage their text: `_stage_streaming`)."""
    dialect = session.get_bind().dialect.name
    live = dialect == "sqlite" and await _stage_streaming(session, owner_id)
    statement = search_statement(
        dialect,
        query=query,
        owner_id=owner_id,
        conversation_id=conversation_id,
        role=role,
        first=first,
        after=after,
        live=live,
    )
    try:
        rows = list((await session.execute(statement)).all())
    finally:
        if live:
            await session.execute(sql_text(f"DELETE FROM temp.{LIVE_TABLE}"))
    return SearchPage(rows=rows[:first], has_next=len(rows) > first)


async def _stage_streaming(session: AsyncSession, owner_id: int) -> bool:
    """SQLite: put the text so far of `owner_id`'s streaming messages in this connection's
    `LIVE_TABLE` (an FTS5 table in its `temp` schema, with the index's tokenizer), so that the
    search sees an append as soon as it commits, as on PostgreSQL. The FTS5 index proper holds
    what is finished: indexing a stream's text at each append would redo it all each time, the
    O(n^2) that `db.streams` exists to avoid; here it is done once a search, for the streams
    live at that moment (few, each at most CHATQL_MAX_STREAMED_CHARS). False when there are
    none (nothing staged). The caller empties the table after its statement."""
    owned = messages.join(conversations, conversations.c.id == messages.c.conversation_id)
    streaming = (
        await session.execute(
            select(messages.c.id, content_of())
            .select_from(owned)
            .where(conversations.c.user_id == owner_id, messages.c.status == STREAMING)
        )
    ).all()
    if not streaming:
        return False
    await session.execute(
        sql_text(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{LIVE_TABLE} "
            f"USING fts5(content, tokenize='{SQLITE_TOKENIZER}')"
        )
    )
    await session.execute(sql_text(f"DELETE FROM temp.{LIVE_TABLE}"))
    await session.execute(
        sql_text(f"INSERT INTO temp.{LIVE_TABLE}(rowid, content) VALUES (:id, :content)"),
        [{"id": key, "content": content} for key, content in streaming],
    )
    return True


def search_statement(
    dialect: str,
    *,
    query: SearchQuery,
    owner_id: int,
    conversation_id: str | None = None,
    role: MessageRole | None = None,
    first: int,
    after: tuple[float, int] | None = None,
    live: bool = False,
) -> Select[Any]:
    """The page's statement (one row more than `first`, which tells whether more follow), each
    row a message with its `rank`. The bench hands it to pgbench as the limit. `live` (SQLite):
    `LIVE_TABLE` holds the streaming messages' text, to be searched too."""
    # The query's text goes into the statement as a literal (escaped by SQLAlchemy), not as a
    # parameter: after five runs of a prepared statement PostgreSQL may keep a generic plan,
    # which cannot know how common the words are, and picked a GIN scan per conversation that
    # took 600 ms where 1 ms does (bench/search, 1,000,000 messages). Each distinct query is
    # then a statement of its own in the driver's statement cache.
    text: ColumnElement[str] = (
        literal(query.websearch(), literal_execute=True)
        if dialect == "postgresql"
        else literal(query.fts5())
    )
    return _statement(
        dialect,
        text=text,
        owner_id=owner_id,
        conversation_id=conversation_id,
        role=role,
        limit=first + 1,
        after=after,
        live=live,
    )


# Where the query's text goes in a compiled PostgreSQL statement (`postgres_sql`).
_TEXT = "chatql_search_text"


@lru_cache(maxsize=8)
def _postgres_template(by_conversation: bool, by_role: bool, after: bool) -> Prepared:
    """The PostgreSQL statement of one shape of search, compiled once: `$n` placeholders for
    its values (by name) and `_TEXT` where the query's text goes."""
    statement = _statement(
        "postgresql",
        text=literal_column(_TEXT),
        owner_id=bindparam("owner_id", type_=Integer),
        conversation_id=bindparam("conversation_id", type_=String) if by_conversation else None,
        role=bindparam("role", type_=String) if by_role else None,
        limit=bindparam("limit", type_=Integer),
        after=(bindparam("after_rank", type_=Float), bindparam("after_id", type_=Integer))
        if after
        else None,
    )
    return Prepared.of(statement, postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]


def postgres_sql(
    *,
    query: SearchQuery,
    owner_id: int,
    conversation_id: str | None,
    role: MessageRole | None,
    first: int,
    after: tuple[float, int] | None,
) -> tuple[str, list[Any]]:
    """`search_statement`'s SQL and arguments for asyncpg, without building and compiling it
    for each request: the shape's compiled text with the query's text spliced in as an
    escaped literal (an E'' string: backslashes and quotes doubled, whatever
    `standard_conforming_strings` is; `parse_query` refused NULs)."""
    prepared = _postgres_template(conversation_id is not None, role is not None, after is not None)
    values: dict[str, Any] = {
        "owner_id": owner_id,
        "conversation_id": conversation_id,
        "role": None if role is None else role.value,
        "limit": first + 1,
        "after_rank": after[0] if after else None,
        "after_id": after[1] if after else None,
    }
    escaped = query.websearch().replace("\\", "\\\\").replace("'", "''")
    sql = prepared.sql.replace(_TEXT, f"E'{escaped}'")
    return sql, [values.get(name, default) for name, default in prepared.parameters]


def _statement(
    dialect: str,
    *,
    text: ColumnElement[str],
    owner_id: Any,
    conversation_id: Any,
    role: Any,
    limit: Any,
    after: tuple[Any, Any] | None,
    live: bool = False,
) -> Select[Any]:
    owned = messages.join(conversations, conversations.c.id == messages.c.conversation_id)
    if dialect == "postgresql":
        tsquery = func.websearch_to_tsquery(literal_column(f"'{POSTGRES_CONFIG}'::regconfig"), text)
        vector: ColumnElement[Any] = literal_column(f"messages.{SEARCH_VECTOR}")
        rank: ColumnElement[float] = func.ts_rank_cd(vector, tsquery).cast(Float)
        matches: ColumnElement[bool] = vector.op("@@")(tsquery)
        source: FromClause = owned
    else:
        fts = table(SEARCH_TABLE, column("rowid"))
        rank = -func.bm25(literal_column(SEARCH_TABLE), type_=Float)
        matches = literal_column(SEARCH_TABLE).op("MATCH")(text)
        source = fts.join(owned, messages.c.id == fts.c.rowid)
    statement = (
        select(messages, rank.label("rank"))
        .select_from(source)
        .where(conversations.c.user_id == owner_id, matches)
    )
    if dialect == "postgresql":
        # Streaming messages (their text is their chunks: `db.streams`), each matched on its
        # text so far through the partial index of STREAMING rows; a finished row's vector is
        # its content's, and a streaming row's content is empty, so no row is in both.
        live_vector = func.to_tsvector(
            literal_column(f"'{POSTGRES_CONFIG}'::regconfig"), content_of()
        )
        live_rows = (
            select(*MESSAGE_COLUMNS, func.ts_rank_cd(live_vector, tsquery).cast(Float))
            .select_from(owned)
            .where(
                conversations.c.user_id == owner_id,
                messages.c.status == STREAMING,
                live_vector.op("@@")(tsquery),
            )
        )
        both = union_all(statement, live_rows).subquery("found")
        statement = select(both)
        rank, messages_c = both.c.rank, both.c
    elif live:
        # The streaming messages' text so far, staged in this connection's `LIVE_TABLE`
        # (`_stage_streaming`); a streaming row's content is empty, so no row is in both.
        staged = table(LIVE_TABLE, column("rowid"))
        live_part = (
            select(*MESSAGE_COLUMNS, -func.bm25(literal_column(LIVE_TABLE), type_=Float))
            .select_from(staged.join(owned, messages.c.id == staged.c.rowid))
            .where(
                conversations.c.user_id == owner_id,
                messages.c.status == STREAMING,
                literal_column(LIVE_TABLE).op("MATCH")(text),
            )
        )
        both = union_all(statement, live_part).subquery("found")
        statement = select(both)
        rank, messages_c = both.c.rank, both.c
    else:
        messages_c = messages.c
    if conversation_id is not None:
        statement = statement.where(messages_c.conversation_id == conversation_id)
    if role is not None:
        statement = statement.where(messages_c.role == role)
    if after is not None:
        after_rank, after_id = after
        statement = statement.where(
            or_(rank < after_rank, and_(rank == after_rank, messages_c.id < after_id))
        )
    return statement.order_by(rank.desc(), messages_c.id.desc()).limit(limit)
