"""PostgreSQL notifications, sent inside the caller's transaction (delivered on its commit).

`notify` does not send at once: it queues the notifications on the session, and they go out
with the transaction's change-feed statement (`db.changes.record`, called last in every write
that records changes), or, in a transaction that records none, in one statement just before
its COMMIT (a `before_commit` hook). A send was thus one statement fewer (issue 14: W1 in 5).
NOTIFY is delivered at commit and never on rollback, however it was issued, so the moment it
is issued changes nothing a listener sees.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

PENDING = "chatql.notify.pending"  # session.info: [(channel, payload), ...] not yet sent

# Every pending notification, in order, in one statement.
_SEND = text(
    "SELECT count(pg_notify(v.channel, v.payload)) FROM "
    "unnest(CAST(:channels AS text[]), CAST(:payloads AS text[])) AS v(channel, payload)"
)


async def notify(session: AsyncSession, *, channel: str, payloads: list[str]) -> None:
    """`NOTIFY channel, payload` for each payload, in order, in the session's transaction:
    queued, and sent by the transaction's next feed statement or before its commit."""
    session.info.setdefault(PENDING, []).extend((channel, payload) for payload in payloads)


def take_pending(session: AsyncSession | Session) -> tuple[list[str], list[str]]:
    """The queued notifications (channels, payloads), for a statement that sends them (as
    `pg_notify` over the `unnest` of the two arrays); none are queued after. Inside a
    savepoint none are taken: a NOTIFY sent there would be lost with the savepoint's rollback,
    those queued before it included; they wait for the transaction's own statement."""
    if session.in_nested_transaction():
        return [], []
    pending: list[tuple[str, str]] = session.info.pop(PENDING, None) or []
    return [channel for channel, _ in pending], [payload for _, payload in pending]


MARKS = "chatql.notify.marks"  # session.info: {savepoint: how many were queued at its start}


@event.listens_for(Session, "before_commit")
def _send_pending(session: Session) -> None:
    # Also called as a savepoint is released: what it queued is its parent's now.
    channels, payloads = take_pending(session)
    if channels:
        session.execute(_SEND, {"channels": channels, "payloads": payloads})


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: Any) -> None:
    if transaction.nested:
        session.info.setdefault(MARKS, {})[transaction] = len(session.info.get(PENDING, ()))


@event.listens_for(Session, "after_soft_rollback")
def _forget_savepoints(session: Session, previous_transaction: Any) -> None:
    # A savepoint's rollback forgets what was queued since it began, and only that.
    mark = session.info.get(MARKS, {}).pop(previous_transaction, None)
    if previous_transaction.nested and mark is not None and PENDING in session.info:
        del session.info[PENDING][mark:]


@event.listens_for(Session, "after_transaction_end")
def _forget_pending(session: Session, transaction: Any) -> None:
    # The transaction is over, committed (all sent), rolled back or closed unfinished (by
    # `Session.close`, which emits no rollback event): nothing carries into the session's next.
    if transaction.parent is None:
        session.info.pop(PENDING, None)
        session.info.pop(MARKS, None)
