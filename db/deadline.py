"""A time limit that the caller sees on time, however long the work takes to give up.

`asyncio.timeout` (and `wait_for`) raise only once the cancelled work has unwound, and work
that waits on a stalled database unwinds slowly: SQLAlchemy closes an invalidated asyncpg
connection gracefully for up to 2 s, asyncpg waits for the server to confirm a cancelled
query. `/readyz` with a 2 s limit answered after 4 s that way, a request after a minute. Here
the work runs as a task of its own: at the deadline it is cancelled and left to finish
unwinding in the background, and the caller gets `Unavailable` at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from db.errors import Unavailable

T = TypeVar("T")

logger = logging.getLogger("chatql.deadline")

# Work no caller awaits but still running (`hold_until_done`): held here so that it is not
# garbage-collected, and so that the app's shutdown can wait for it.
_unwinding: set[asyncio.Future[Any]] = set()


async def within(
    seconds: float | None,
    work: Awaitable[T],
    *,
    committed: Callable[[], bool] = lambda: False,
) -> T:
    """`work`'s result, or `Unavailable` (`reason` "timed out after N s") once `seconds` have
    passed (None or 0: no limit). Past the deadline, while `committed()` is true (say, a
    response has begun), the work is not interrupted and is waited for to the end.

    Cancelling the caller cancels the work, without waiting for it.
    """
    if not seconds:
        return await work
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    gate: asyncio.Future[None] = loop.create_future()

    def open_gate(_: object = None) -> None:
        if not gate.done():
            gate.set_result(None)

    task.add_done_callback(open_gate)
    timer = loop.call_later(seconds, open_gate)
    try:
        await gate
        if not task.done() and committed():
            await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        timer.cancel()
    if task.done():
        return task.result()
    task.cancel()
    hold_until_done(task)
    raise Unavailable(f"timed out after {seconds:g} s")


def hold_until_done(task: asyncio.Future[Any]) -> None:
    """Hold `task`, work that no caller awaits any more (given up at a deadline, cancelled and
    left to unwind, a loader's batch), until it ends: it is not garbage-collected, and the
    app's shutdown waits for it (`unwound`)."""
    if not task.done() and task not in _unwinding:
        _unwinding.add(task)
        task.add_done_callback(_unwound)


async def unwound(seconds: float) -> None:
    """Wait up to `seconds` for the work held by `hold_until_done` (given up at a deadline,
    say) to end.

    The app's shutdown calls it before it closes its pool: a connection such work gives back
    to a pool already closed is never closed (SQLite's and asyncpg's warn of it when they are
    garbage-collected, at a random later moment)."""
    if _unwinding:
        await asyncio.wait(set(_unwinding), timeout=seconds)


def _unwound(task: asyncio.Future[Any]) -> None:
    _unwinding.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("work given up at its deadline failed", exc_info=task.exception())
