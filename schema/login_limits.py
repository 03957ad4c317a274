"""Login and sign-up limits, per account or login name and per client address, shared through
the database.

Limits, each over the same window (`login_failure_window`):

    failed logins per login key       login_failures_per_name
    failed logins per client address  login_failures_per_address
    logins per client address         logins_per_address (failed or not)
    sign-ups per client address       signups_per_address

The login key is the account's when the login names one (`user:<id>`), so its username and
email share one limit; else the login as typed, case-folded (`name:<login>`), so that an unknown
login is limited exactly like a known one and the answers tell nothing of which it is.

Each attempt is written down (a login as a failure), and committed, before its password is
checked or its account made; only then are the attempts counted. Of any number of attempts
racing on any number of processes, no more than the limit go on: each counts every attempt
that committed before it. A login whose password turns out right becomes a `login`; an
attempt refused because of a limit, or because too many hashes were waiting, is taken back (so
that refusals do not extend the lock-out).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from db import login_failures as attempts
from db.engine import read_session, write_transaction
from db.folding import fold
from db.login_failures import FAILURE, LOGIN, SIGNUP, Tally
from db.models import utcnow
from schema.context import Services
from schema.errors import TOO_MANY_FAILURES, RateLimited

UNKNOWN_ADDRESS = "unknown"
TOO_MANY_LOGINS = "Too many logins from this address; try again later."
TOO_MANY_SIGNUPS = "Too many sign-ups from this address; try again later."
# The width of the key column.
MAX_KEY = 100


@dataclass(frozen=True)
class Attempt:
    """An attempt written down, and counted, by `begin_login_attempt` or `begin_sign_up`."""

    row_id: int


@dataclass(frozen=True)
class _Limit:
    tally: Tally
    allowed: int
    message: str


def login_key(*, user_id: int | None, login: str) -> str:
    """The key a login's failures are counted under: the account's, when there is one; else
    the name as logins match it (`db.folding.fold`), so every spelling shares one limit."""
    if user_id is not None:
        return f"user:{user_id}"
    key = f"name:{fold(login)}"
    # Folding may lengthen a name ("ß" is "ss"); a long one is kept as its digest.
    if len(key) > MAX_KEY:
        key = f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def _address(client_address: str | None) -> str:
    # The column holds 64 characters; an IPv6 address with a zone needs fewer.
    return (client_address or UNKNOWN_ADDRESS)[:64]


async def begin_login_attempt(
    services: Services, *, key: str, client_address: str | None
) -> Attempt:
    """Write the attempt down as a failure under `key` (see `login_key`), or raise
    RATE_LIMITED (`retryAfterSeconds`) when a login limit is reached."""
    config = services.config
    address = _address(client_address)
    return await _begin(
        services,
        kind=FAILURE,
        key=key,
        address=address,
        limits=[
            _Limit(Tally((FAILURE,), login=key), config.login_failures_per_name, TOO_MANY_FAILURES),
            _Limit(
                Tally((FAILURE,), client_address=address),
                config.login_failures_per_address,
                TOO_MANY_FAILURES,
            ),
            _Limit(
                Tally((FAILURE, LOGIN), client_address=address),
                config.logins_per_address,
                TOO_MANY_LOGINS,
            ),
        ],
    )


async def begin_sign_up(services: Services, *, client_address: str | None) -> Attempt:
    """Write a sign-up down, or raise RATE_LIMITED when the address made too many. It counts
    whether or not the account is made (a CONFLICT says a name or email is taken)."""
    address = _address(client_address)
    limit = _Limit(
        Tally((SIGNUP,), client_address=address),
        services.config.signups_per_address,
        TOO_MANY_SIGNUPS,
    )
    return await _begin(services, kind=SIGNUP, key="", address=address, limits=[limit])


async def _begin(
    services: Services, *, kind: str, key: str, address: str, limits: Sequence[_Limit]
) -> Attempt:
    window = timedelta(seconds=services.config.login_failure_window)
    now = utcnow()
    async with write_transaction(services.sessionmaker) as session:
        await attempts.prune_login_failures(session, before=now - window)
        row_id = await attempts.record_login_failure(
            session, login=key, client_address=address, at=now, kind=kind
        )
    async with read_session(services.sessionmaker) as session:
        counts = await attempts.count_login_failures(
            session, tallies=[limit.tally for limit in limits], since=now - window
        )
    over = [
        (count.oldest + window, limit.message)
        for count, limit in zip(counts, limits, strict=True)
        if count.count > limit.allowed and count.oldest is not None
    ]
    attempt = Attempt(row_id=row_id)
    if over:
        await take_back(services, attempt)
        ends, message = max(over)
        raise RateLimited(max(1, math.ceil((ends - utcnow()).total_seconds())), message)
    return attempt


async def end_login_attempt(services: Services, attempt: Attempt) -> None:
    """The password was right: the attempt counts as a login, no longer as a failure."""
    async with write_transaction(services.sessionmaker) as session:
        await attempts.mark_login_failure(session, failure_id=attempt.row_id, kind=LOGIN)


async def take_back(services: Services, attempt: Attempt) -> None:
    """Forget an attempt that was refused before it was made."""
    async with write_transaction(services.sessionmaker) as session:
        await attempts.forget_login_failure(session, failure_id=attempt.row_id)
