"""Retention of the change feed (`db.retention.prune_changes`): old changes go in batches,
each user's feed stays contiguous and `pruned_through` says where it now starts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from db.changes import ChangeKind, FeedState, NewChange, feed_state, read_changes, record
from db.models import Change, utcnow
from db.retention import prune_changes
from tests.factories import Sessionmaker, make_user

OLD = utcnow() - timedelta(days=40)
CUTOFF = utcnow() - timedelta(days=30)


async def write(
    sm: Sessionmaker, user: int, count: int, *, days_ago: float, kind: ChangeKind
) -> None:
    at = utcnow() - timedelta(days=days_ago)
    items = [NewChange(user, kind, "c", n) for n in range(count)]
    async with sm() as session, session.begin():
        await record(session, items, at=at)


async def positions(sm: Sessionmaker, user: int) -> list[int]:
    async with sm() as session:
        rows = await read_changes(session, user_id=user, after=0, limit=100_000)
    return [row.position for row in rows]


async def test_old_changes_are_pruned_in_batches_and_pruned_through_raised(
    sessionmaker: Sessionmaker,
) -> None:
    alice, bob, carol = [await make_user(sessionmaker) for _ in range(3)]
    await write(sessionmaker, alice, 25, days_ago=40, kind=ChangeKind.MESSAGE_ADDED)
    await write(sessionmaker, bob, 3, days_ago=35, kind=ChangeKind.MESSAGE_DELETED)
    await write(sessionmaker, alice, 4, days_ago=1, kind=ChangeKind.MESSAGE_EDITED)
    await write(sessionmaker, bob, 2, days_ago=0, kind=ChangeKind.MESSAGE_ADDED)
    await write(sessionmaker, carol, 2, days_ago=2, kind=ChangeKind.CONVERSATION_CREATED)
    # 28 old changes, 7 per batch: four batches, then one that finds nothing.
    assert await prune_changes(sessionmaker, CUTOFF, batch_size=7) == 28
    assert await positions(sessionmaker, alice) == [26, 27, 28, 29]
    assert await positions(sessionmaker, bob) == [4, 5]
    assert await positions(sessionmaker, carol) == [1, 2]
    async with sessionmaker() as session:
        assert await feed_state(session, user_id=alice) == FeedState(head=29, pruned_through=25)
        assert await feed_state(session, user_id=bob) == FeedState(head=5, pruned_through=3)
        assert await feed_state(session, user_id=carol) == FeedState(head=2, pruned_through=0)
    # Again: nothing left to prune, and nothing moves back.
    assert await prune_changes(sessionmaker, CUTOFF) == 0
    async with sessionmaker() as session:
        assert await feed_state(session, user_id=alice) == FeedState(head=29, pruned_through=25)
    # A later cutoff takes the rest; new writes go on after the head.
    assert await prune_changes(sessionmaker, utcnow() + timedelta(seconds=1)) == 8
    await write(sessionmaker, alice, 1, days_ago=0, kind=ChangeKind.MESSAGE_ADDED)
    assert await positions(sessionmaker, alice) == [30]
    async with sessionmaker() as session:
        assert await feed_state(session, user_id=alice) == FeedState(head=30, pruned_through=29)


async def test_a_feed_stays_contiguous_when_positions_do_not_follow_times(
    sessionmaker: Sessionmaker,
) -> None:
    """A writer takes `at` before it waits for the feed's lock, so a later position may carry
    an earlier time. Pruning removes everything up to the last old position, never leaving a
    hole: what is kept is exactly `pruned_through + 1 .. head`."""
    alice = await make_user(sessionmaker)
    await write(sessionmaker, alice, 2, days_ago=40, kind=ChangeKind.MESSAGE_ADDED)  # 1, 2
    await write(sessionmaker, alice, 1, days_ago=29, kind=ChangeKind.MESSAGE_ADDED)  # 3
    await write(sessionmaker, alice, 1, days_ago=31, kind=ChangeKind.MESSAGE_ADDED)  # 4
    await write(sessionmaker, alice, 1, days_ago=1, kind=ChangeKind.MESSAGE_ADDED)  # 5
    assert await prune_changes(sessionmaker, CUTOFF, batch_size=1) == 4
    assert await positions(sessionmaker, alice) == [5]
    async with sessionmaker() as session:
        assert await feed_state(session, user_id=alice) == FeedState(head=5, pruned_through=4)
        assert (await session.execute(select(func.count()).select_from(Change))).scalar() == 1


async def test_one_batch_spanning_many_users_prunes_each_through_its_own_position(
    sessionmaker: Sessionmaker,
) -> None:
    # 60 users in one batch: each loses exactly its old changes (the statement once compared
    # positions through one CASE over every user of the batch, which held its locks for
    # seconds on 1,000 users; now an index range per user).
    users = [await make_user(sessionmaker) for _ in range(60)]
    for number, user in enumerate(users):
        await write(sessionmaker, user, 1 + number % 4, days_ago=40, kind=ChangeKind.MESSAGE_ADDED)
        await write(sessionmaker, user, 2, days_ago=1, kind=ChangeKind.MESSAGE_EDITED)
    old = sum(1 + number % 4 for number in range(60))
    assert await prune_changes(sessionmaker, CUTOFF, batch_size=1000) == old
    for number, user in enumerate(users):
        through = 1 + number % 4
        assert await positions(sessionmaker, user) == [through + 1, through + 2]
        async with sessionmaker() as session:
            state = await feed_state(session, user_id=user)
        assert state == FeedState(head=through + 2, pruned_through=through)
