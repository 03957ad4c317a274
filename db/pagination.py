"""Keyset pages for many parents in one statement.

A page of children for every parent in a batch is one `UNION ALL` of up to three parts: the
page itself (one row past the requested size tells whether more follow), and, when a cursor
bounds the other end, the nearest row beyond that cursor, which tells whether anything
precedes (or follows) the page. `pageInfo` is thus exact in both directions while the whole
batch still costs one round trip.

Each part takes the first rows of every parent in order. On PostgreSQL that is a
`LATERAL (... ORDER BY ... LIMIT n)` per parent, which reads n rows from the index and stops;
SQLite has no LATERAL, so there a `ROW_NUMBER()` window over the parents' rows ranks them
and the ranks past n are dropped.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    func,
    literal,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import KeyedColumnElement

Keyset = tuple[Any, ...]


@dataclass(frozen=True)
class PageRequest:
    """A normalised Relay window: exactly one of `first` and `last` is set."""

    first: int | None = None
    last: int | None = None
    after: Keyset | None = None
    before: Keyset | None = None

    @property
    def size(self) -> int:
        size = self.first if self.first is not None else self.last
        assert size is not None
        return size


@dataclass
class Page:
    rows: list[Row[Any]] = field(default_factory=list)
    has_next: bool = False
    has_previous: bool = False


@dataclass(frozen=True)
class Ordering:
    """How a connection is ordered: its key columns, all ascending or all descending."""

    keys: tuple[KeyedColumnElement[Any], ...]
    descending: bool = False

    def beyond(self, keyset: Keyset) -> ColumnElement[bool]:
        """Items that come after `keyset` in this order."""
        row = tuple_(*self.keys)
        bound = tuple_(
            *(literal(value, key.type) for key, value in zip(self.keys, keyset, strict=True))
        )
        return row < bound if self.descending else row > bound

    def short_of(self, keyset: Keyset) -> ColumnElement[bool]:
        """Items that come before `keyset` in this order."""
        row = tuple_(*self.keys)
        bound = tuple_(
            *(literal(value, key.type) for key, value in zip(self.keys, keyset, strict=True))
        )
        return row > bound if self.descending else row < bound

    def order_by(self, *, forward: bool) -> list[ColumnElement[Any]]:
        ascending = forward != self.descending
        return [key.asc() if ascending else key.desc() for key in self.keys]


PAGE, PRECEDING, FOLLOWING = "page", "preceding", "following"


def _windowed(
    base: Select[Any],
    *,
    partition: KeyedColumnElement[Any] | None,
    parents: Sequence[Hashable],
    order: list[ColumnElement[Any]],
    where: Sequence[ColumnElement[bool]],
    limit: int,
    kind: str,
) -> Select[Any]:
    over = func.row_number().over(partition_by=partition, order_by=order)
    if partition is not None:
        base = base.where(partition.in_(parents))
    inner = base.where(*where).add_columns(
        over.label("page_rank"), literal(kind).label("page_part")
    )
    ranked = inner.subquery()
    return select(ranked).where(ranked.c.page_rank <= limit)


def _lateral(
    base: Select[Any],
    *,
    partition: KeyedColumnElement[Any] | None,
    parents: Sequence[Hashable],
    order: list[ColumnElement[Any]],
    where: Sequence[ColumnElement[bool]],
    limit: int,
    kind: str,
) -> Select[Any]:
    # The rank is numbered over rows already in index order, so it streams: the LIMIT
    # still stops the scan after `limit` rows of each parent.
    ranked = base.where(*where).add_columns(
        func.row_number().over(order_by=order).label("page_rank"),
        literal(kind).label("page_part"),
    )
    if partition is None:
        return select(ranked.order_by(*order).limit(limit).subquery())
    keys = (
        func.unnest(literal(list(parents), ARRAY(partition.type)))
        .table_valued("parent")
        .render_derived()
    )
    each = ranked.where(partition == keys.c.parent).order_by(*order).limit(limit).lateral()
    return select(each).select_from(keys.join(each, true()))


def page_statement(
    base: Select[Any],
    *,
    partition: KeyedColumnElement[Any] | None,
    parents: Sequence[Hashable],
    ordering: Ordering,
    request: PageRequest,
    lateral: bool = False,
) -> Select[Any]:
    """Build the statement behind `fetch_pages`; `base` selects the children of every parent,
    and is narrowed here to `parents` by the `partition` column."""
    bounds: list[ColumnElement[bool]] = []
    if request.after is not None:
        bounds.append(ordering.beyond(request.after))
    if request.before is not None:
        bounds.append(ordering.short_of(request.before))
    forward = request.first is not None
    build = _lateral if lateral else _windowed

    def part(
        *, forward: bool, where: list[ColumnElement[bool]], limit: int, kind: str
    ) -> Select[Any]:
        return build(
            base,
            partition=partition,
            parents=parents,
            order=ordering.order_by(forward=forward),
            where=where,
            limit=limit,
            kind=kind,
        )

    parts = [part(forward=forward, where=bounds, limit=request.size + 1, kind=PAGE)]
    if request.after is not None:
        not_after = [~ordering.beyond(request.after)]
        parts.append(part(forward=False, where=not_after, limit=1, kind=PRECEDING))
    if request.before is not None:
        not_before = [~ordering.short_of(request.before)]
        parts.append(part(forward=True, where=not_before, limit=1, kind=FOLLOWING))
    if len(parts) == 1:
        return parts[0]
    combined = union_all(*parts).subquery()
    return select(combined)


async def fetch_pages(
    session: AsyncSession,
    *,
    base: Select[Any],
    partition: KeyedColumnElement[Any] | None,
    parents: Sequence[Hashable],
    ordering: Ordering,
    request: PageRequest,
) -> dict[Hashable, Page]:
    """One page per parent; `partition` names the column that holds each row's parent."""
    dialect = session.bind.dialect.name if session.bind is not None else ""
    statement = page_statement(
        base,
        partition=partition,
        parents=parents,
        ordering=ordering,
        request=request,
        lateral=dialect == "postgresql",
    )
    result = await session.execute(statement)
    # Rows by position: attribute access on a Row costs more than the rest of this loop.
    keys = list(result.keys())
    rank_at, part_at = keys.index("page_rank"), keys.index("page_part")
    parent_at = keys.index(partition.key) if partition is not None else None
    pages: dict[Hashable, Page] = {parent: Page() for parent in parents}
    ranked: dict[Hashable, list[tuple[int, Row[Any]]]] = {parent: [] for parent in parents}
    for row in result.all():
        parent = row[parent_at] if parent_at is not None else None
        part = row[part_at]
        if part == PAGE:
            ranked[parent].append((row[rank_at], row))
        elif part == PRECEDING:
            pages[parent].has_previous = True
        else:
            pages[parent].has_next = True
    size = request.size
    for parent, items in ranked.items():
        items.sort(key=lambda item: item[0])
        overflow = len(items) > size
        chosen = [row for _, row in items[:size]]
        page = pages[parent]
        if request.first is not None:
            page.rows = chosen
            page.has_next = page.has_next or overflow
        else:
            chosen.reverse()
            page.rows = chosen
            page.has_previous = page.has_previous or overflow
    return pages
