from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event, text

from db.engine import make_engine, make_sessionmaker, write_transaction


async def test_sqlite_writers_that_read_first_take_turns_instead_of_failing(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    begun: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda *args: begun.append(args[2]) if args[2].startswith("BEGIN") else None,
    )
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE counter (n INTEGER)"))
        sm = make_sessionmaker(engine)

        async def read_then_write() -> None:
            async with write_transaction(sm) as session:
                seen = (await session.execute(text("SELECT count(*) FROM counter"))).scalar_one()
                await asyncio.sleep(0.01)
                await session.execute(text("INSERT INTO counter VALUES (:n)"), {"n": seen})

        # With a deferred BEGIN these fail with "database is locked": a reader whose snapshot
        # is stale cannot become a writer, and SQLite does not wait for it.
        await asyncio.gather(*(read_then_write() for _ in range(10)))
        async with sm() as session:
            rows = (await session.execute(text("SELECT n FROM counter ORDER BY n"))).scalars()
            values = list(rows)
    finally:
        await engine.dispose()
    # Each writer saw every one before it: they ran one after another.
    assert values == list(range(10))
    assert begun == ["BEGIN DEFERRED"] + ["BEGIN IMMEDIATE"] * 10 + ["BEGIN DEFERRED"]
