"""Keyset pages against a reference: the Relay algorithm run in Python on the whole list."""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, select

from db.conversations import CONVERSATION_ORDER, conversation_pages_by_user, conversations
from db.messages import MESSAGE_ORDER, message_pages_by_conversation, messages
from db.pagination import Keyset, Ordering, Page, PageRequest
from db.users import users_page
from tests.factories import (
    BASE_TIME,
    Sessionmaker,
    make_conversation,
    make_messages,
    make_user,
)


def keyset(ordering: Ordering, row: Row[Any]) -> Keyset:
    return tuple(getattr(row, key.key) for key in ordering.keys)


def reference(rows: list[Row[Any]], ordering: Ordering, request: PageRequest) -> Page:
    """What the page must be: `rows` are every child of one parent, in connection order."""
    keys = [keyset(ordering, row) for row in rows]

    def before(a: Keyset, b: Keyset) -> bool:
        return a > b if ordering.descending else a < b

    window = [
        row
        for row, key in zip(rows, keys, strict=True)
        if (request.after is None or before(request.after, key))
        and (request.before is None or before(key, request.before))
    ]
    previous = request.after is not None and any(not before(request.after, k) for k in keys)
    following = request.before is not None and any(not before(k, request.before) for k in keys)
    if request.first is not None:
        chosen = window[: request.first]
        following = following or len(window) > request.first
    else:
        assert request.last is not None
        chosen = window[-request.last :]
        previous = previous or len(window) > request.last
    return Page(rows=chosen, has_next=following, has_previous=previous)


def requests(keysets: Sequence[Keyset], count: int, seed: int) -> list[PageRequest]:
    rng = random.Random(seed)
    cursors: list[Keyset | None] = [None, *keysets]
    found = []
    for _ in range(count):
        size = rng.choice([1, 2, 3, 5, 20])
        after, before_ = rng.choice(cursors), rng.choice(cursors)
        if rng.random() < 0.5:
            found.append(PageRequest(first=size, after=after, before=before_))
        else:
            found.append(PageRequest(last=size, after=after, before=before_))
    return found


def simple(page: Page) -> tuple[list[Any], bool, bool]:
    return [row.id for row in page.rows], page.has_next, page.has_previous


async def test_message_pages_match_the_relay_algorithm_for_every_parent(
    sessionmaker: Sessionmaker,
) -> None:
    owner = await make_user(sessionmaker)
    parents = [await make_conversation(sessionmaker, owner_id=owner) for _ in range(4)]
    for parent, count in zip(parents[1:], [1, 6, 12], strict=True):
        await make_messages(sessionmaker, conversation_id=parent, count=count)
    # Equal timestamps: the id breaks the tie.
    await make_messages(
        sessionmaker, conversation_id=parents[3], count=3, start=BASE_TIME, step=timedelta(0)
    )
    async with sessionmaker() as session:
        everything = (await session.execute(select(messages))).all()
    by_parent: dict[Hashable, list[Row[Any]]] = {parent: [] for parent in parents}
    for row in sorted(everything, key=lambda row: keyset(MESSAGE_ORDER, row)):
        by_parent[row.conversation_id].append(row)
    keysets = [keyset(MESSAGE_ORDER, row) for row in everything]
    for request in requests(keysets, 60, seed=7):
        async with sessionmaker() as session:
            pages = await message_pages_by_conversation(
                session, conversation_ids=parents, request=request
            )
        assert {p: simple(pages[p]) for p in parents} == {
            p: simple(reference(by_parent[p], MESSAGE_ORDER, request)) for p in parents
        }, request


async def test_conversation_pages_match_the_relay_algorithm_newest_first(
    sessionmaker: Sessionmaker,
) -> None:
    owners = [await make_user(sessionmaker) for _ in range(3)]
    moment = BASE_TIME
    for owner, count in zip(owners, [0, 4, 7], strict=True):
        for n in range(count):
            # Some conversations share an `updated_at`: the id decides.
            moment += timedelta(seconds=n % 2)
            await make_conversation(sessionmaker, owner_id=owner, updated_at=moment)
    async with sessionmaker() as session:
        everything = (await session.execute(select(conversations))).all()
    by_parent: dict[Hashable, list[Row[Any]]] = {owner: [] for owner in owners}
    ordered = sorted(everything, key=lambda row: keyset(CONVERSATION_ORDER, row), reverse=True)
    for row in ordered:
        by_parent[row.user_id].append(row)
    keysets = [keyset(CONVERSATION_ORDER, row) for row in everything]
    for request in requests(keysets, 50, seed=11):
        async with sessionmaker() as session:
            pages = await conversation_pages_by_user(session, user_ids=owners, request=request)
        assert {p: simple(pages[p]) for p in owners} == {
            p: simple(reference(by_parent[p], CONVERSATION_ORDER, request)) for p in owners
        }, request


async def test_the_users_page_matches_the_relay_algorithm(sessionmaker: Sessionmaker) -> None:
    ids = [await make_user(sessionmaker) for _ in range(7)]
    async with sessionmaker() as session:
        everything = list((await session.execute(select(users_table()).order_by("id"))).all())
    assert [row.id for row in everything] == ids
    order = Ordering(keys=(users_table().c.id,))
    for request in itertools.islice(requests([(i,) for i in ids], 40, seed=3), 40):
        async with sessionmaker() as session:
            page = await users_page(session, request=request, search=None)
        assert simple(page) == simple(reference(everything, order, request)), request


def users_table() -> Any:
    from db.users import users

    return users
