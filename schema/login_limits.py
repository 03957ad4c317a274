"""Failed-login limits, per login name and per client address, shared through the database.

Each attempt is written down as a failure, and committed, before its password is checked; only
then are the failures counted. Of any number of attempts racing on any number of processes,
no more than the limit get their password checked: each counts every attempt that committed
before it. A password that turns out right takes its row back, and so does an attempt that was
refused because of the limit (so that refusals do not extend the lock-out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from db import login_failures
from db.engine import read_session, write_transaction
from db.folding import fold
from db.models import utcnow
from schema.context import Services
from schema.errors import RateLimited

UNKNOWN_ADDRESS = "unknown"


@dataclass(frozen=True)
class LoginAttempt:
    failure_id: int


def _address(client_address: str | None) -> str:
    # The column holds 64 characters; an IPv6 address with a zone needs fewer.
    return (client_address or UNKNOWN_ADDRESS)[:64]


async def begin_login_attempt(
    services: Services, *, login: str, client_address: str | None
) -> LoginAttempt:
    """Record the attempt as a failure, or raise RATE_LIMITED when over a limit."""
    config = services.config
    window = timedelta(seconds=config.login_failure_window)
    now = utcnow()
    # Keyed as logins are matched (caselessly), so every spelling of a name shares its limit;
    # the column holds 100 characters.
    name, address = fold(login)[:100], _address(client_address)
    async with write_transaction(services.sessionmaker) as session:
        await login_failures.prune_login_failures(session, before=now - window)
        failure_id = await login_failures.record_login_failure(
            session, login=name, client_address=address, at=now
        )
    async with read_session(services.sessionmaker) as session:
        by_name, by_address = await login_failures.count_login_failures(
            session, login=name, client_address=address, since=now - window
        )
    ends = [
        count.oldest + window
        for count, limit in (
            (by_name, config.login_failures_per_name),
            (by_address, config.login_failures_per_address),
        )
        if count.count > limit and count.oldest is not None
    ]
    attempt = LoginAttempt(failure_id=failure_id)
    if ends:
        await end_login_attempt(services, attempt)
        wait = (max(ends) - utcnow()).total_seconds()
        raise RateLimited(max(1, math.ceil(wait)))
    return attempt


async def end_login_attempt(services: Services, attempt: LoginAttempt) -> None:
    """Take back an attempt that was no failure after all."""
    async with write_transaction(services.sessionmaker) as session:
        await login_failures.forget_login_failure(session, failure_id=attempt.failure_id)
