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
    `pg_notify` over the `unnest` of the two arrays); none are queued after."""
    pending: list[tuple[str, str]] = session.info.pop(PENDING, None) or []
    return [channel for channel, _ in pending], [payload for _, payload in pending]


@event.listens_for(Session, "before_commit")
def _send_pending(session: Session) -> None:
    channels, payloads = take_pending(session)
    if channels:
        session.execute(_SEND, {"channels": channels, "payloads": payloads})


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, previous_transaction: Any) -> None:
    session.info.pop(PENDING, None)
