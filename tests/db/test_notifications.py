"""Queued notifications (`db.notifications`): sent with the transaction they belong to, and
only with it: not lost to a savepoint's rollback, not carried into a session's next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from sqlalchemy import text

from db.notifications import notify
from realtime.postgres import asyncpg_dsn
from tests.factories import Sessionmaker

pytestmark = pytest.mark.postgres_only

CHANNEL = "chatql_review_test"


@asynccontextmanager
async def listening(database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    heard: asyncio.Queue[str] = asyncio.Queue()
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    await connection.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        yield heard
    finally:
        await connection.close()


async def heard_all(heard: asyncio.Queue[str]) -> list[str]:
    await asyncio.sleep(0.3)
    payloads = []
    while not heard.empty():
        payloads.append(heard.get_nowait())
    return payloads


async def test_a_savepoints_rollback_keeps_what_was_queued_before_it(
    database_url: str, sessionmaker: Sessionmaker
) -> None:
    async with listening(database_url) as heard:
        async with sessionmaker() as session, session.begin():
            await notify(session, channel=CHANNEL, payloads=["before"])
            nested = await session.begin_nested()
            await notify(session, channel=CHANNEL, payloads=["inside"])
            await nested.rollback()
            await notify(session, channel=CHANNEL, payloads=["after"])
        assert await heard_all(heard) == ["before", "after"]


async def test_an_inner_savepoints_release_does_not_send_into_an_outer_one_rolled_back(
    database_url: str, sessionmaker: Sessionmaker
) -> None:
    async with listening(database_url) as heard:
        async with sessionmaker() as session, session.begin():
            await notify(session, channel=CHANNEL, payloads=["before"])
            outer = await session.begin_nested()
            async with session.begin_nested():
                await session.execute(text("SELECT 1"))
            await outer.rollback()
        assert await heard_all(heard) == ["before"]


async def test_a_transaction_closed_unfinished_leaves_nothing_for_the_sessions_next(
    database_url: str, sessionmaker: Sessionmaker
) -> None:
    async with listening(database_url) as heard:
        session = sessionmaker()
        await session.execute(text("SELECT 1"))  # autobegin
        await notify(session, channel=CHANNEL, payloads=["never committed"])
        await session.close()  # rolled back, without a rollback() of the session's
        async with session.begin():
            await notify(session, channel=CHANNEL, payloads=["committed"])
        await session.close()
        assert await heard_all(heard) == ["committed"]
