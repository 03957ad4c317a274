"""The change feed's storage (`db.changes`): positions per user, contiguous and in commit order."""

from __future__ import annotations

import asyncio
import random

from db.changes import ChangeKind, FeedState, NewChange, feed_state, read_changes, record
from tests.factories import Sessionmaker, make_user


async def test_positions_follow_the_order_given_per_user_from_one(
    sessionmaker: Sessionmaker,
) -> None:
    alice, bob = await make_user(sessionmaker), await make_user(sessionmaker)
    items = [
        NewChange(bob, ChangeKind.CONVERSATION_TRANSFERRED_IN, "c1"),
        NewChange(alice, ChangeKind.MESSAGE_ADDED, "c1", 7),
        NewChange(alice, ChangeKind.CONVERSATION_TRANSFERRED_OUT, "c1"),
    ]
    async with sessionmaker() as session, session.begin():
        assert await record(session, items) == {alice: [1, 2], bob: [1]}
    async with sessionmaker() as session, session.begin():
        many = [NewChange(alice, ChangeKind.MESSAGE_ADDED, "c2", n) for n in range(1000)]
        assert await record(session, many) == {alice: list(range(3, 1003))}
    async with sessionmaker() as session:
        rows = await read_changes(session, user_id=alice, after=0, limit=5)
        assert [(r.position, r.kind, r.conversation_id, r.message_id) for r in rows] == [
            (1, "MESSAGE_ADDED", "c1", 7),
            (2, "CONVERSATION_TRANSFERRED_OUT", "c1", None),
            (3, "MESSAGE_ADDED", "c2", 0),
            (4, "MESSAGE_ADDED", "c2", 1),
            (5, "MESSAGE_ADDED", "c2", 2),
        ]
        last = await read_changes(session, user_id=alice, after=1000, limit=5)
        assert [(r.position, r.message_id) for r in last] == [(1001, 998), (1002, 999)]
        assert await feed_state(session, user_id=alice) == FeedState(head=1002, pruned_through=0)
        assert await feed_state(session, user_id=bob) == FeedState(head=1, pruned_through=0)


async def test_a_rolled_back_write_leaves_no_position_behind(sessionmaker: Sessionmaker) -> None:
    alice = await make_user(sessionmaker)
    async with sessionmaker() as session:
        async with session.begin():
            await record(session, [NewChange(alice, ChangeKind.CONVERSATION_CREATED, "c")])
            await session.rollback()
    async with sessionmaker() as session, session.begin():
        assert await record(session, [NewChange(alice, ChangeKind.CONVERSATION_CREATED, "d")]) == {
            alice: [1]
        }


async def test_concurrent_writers_commit_in_position_order(sessionmaker: Sessionmaker) -> None:
    """Writers that dawdle inside their transactions: whatever a reader polling the feed has
    seen is always a prefix of the final feed (no position appears after a later one)."""
    alice = await make_user(sessionmaker)
    done = asyncio.Event()
    seen: list[list[int]] = []

    async def writer(number: int) -> None:
        for _ in range(15):
            async with sessionmaker() as session, session.begin():
                await asyncio.sleep(random.random() / 500)
                await record(session, [NewChange(alice, ChangeKind.MESSAGE_ADDED, "c", number)])
                await asyncio.sleep(random.random() / 500)

    async def reader() -> None:
        while not done.is_set():
            async with sessionmaker() as session:
                rows = await read_changes(session, user_id=alice, after=0, limit=1000)
            seen.append([row.position for row in rows])
            await asyncio.sleep(0)

    polling = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(6)))
    done.set()
    await polling
    assert seen, "the reader never ran"
    for positions in seen:
        assert positions == list(range(1, len(positions) + 1))
    async with sessionmaker() as session:
        final = await read_changes(session, user_id=alice, after=0, limit=1000)
    assert [row.position for row in final] == list(range(1, 91))
