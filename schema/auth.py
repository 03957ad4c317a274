"""Passwords (Argon2id) and tokens (HS256 JWTs)."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from schema.config import Config
from schema.errors import RateLimited

ALGORITHM = "HS256"
MAX_CACHED_TOKEN = 512


BUSY = "Too many logins and sign-ups at once; try again shortly."
T = TypeVar("T")


class HashSlots:
    """At most `slots` Argon2 computations at once, and at most `max_waiting` more waiting for
    a turn; beyond that, RATE_LIMITED at once instead of an ever longer queue.

    Each computation holds its `memory_cost` for as long as it runs (24 logins at 64 MiB once
    took a process from 112 to 509 MB), so the slots are the memory budget divided by the cost.
    A slot is given back when the computation ends, even when its caller was cancelled before
    (the worker thread cannot be stopped). The counts are per process.
    """

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = max(1, slots)
        self.max_waiting = max(0, max_waiting)
        self.in_flight = 0
        self.most_in_flight = 0
        self._waiting = 0
        self._turns = asyncio.Semaphore(self.slots)
        # Seconds a computation takes, smoothed: the basis of `retryAfterSeconds`.
        self._seconds = 0.0

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a worker thread, in turn; RATE_LIMITED when the queue is full."""
        if self._turns.locked() and self._waiting >= self.max_waiting:
            turns_ahead = (self._waiting + self.slots) / self.slots
            raise RateLimited(max(1, math.ceil(turns_ahead * self._seconds)), BUSY)
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        started = time.monotonic()

        def done(finished: asyncio.Future[T]) -> None:
            self.in_flight -= 1
            self._seconds = 0.8 * self._seconds + 0.2 * (time.monotonic() - started)
            self._turns.release()
            if not finished.cancelled():
                finished.exception()  # retrieved, even when nobody waits for it any more

        running = asyncio.ensure_future(asyncio.to_thread(work, *args))
        running.add_done_callback(done)
        return await asyncio.shield(running)


@dataclass(frozen=True)
class Passwords:
    """Hashing runs in a worker thread, Argon2 being slow on purpose: it must not stall the
    loop. Every hash and check, the dummy check of an unknown login included, takes a turn of
    `slots` (RATE_LIMITED when too many wait)."""

    hasher: PasswordHasher
    dummy_hash: str
    slots: HashSlots

    @classmethod
    def from_config(cls, config: Config) -> Passwords:
        hasher = PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_cost,
            parallelism=config.argon2_parallelism,
            type=Type.ID,
        )
        slots = HashSlots(
            config.argon2_memory_budget // config.argon2_memory_cost,
            config.argon2_max_waiting,
        )
        return cls(hasher=hasher, dummy_hash=hasher.hash("not the password of anyone"), slots=slots)

    async def hash(self, password: str) -> str:
        return await self.slots.run(self.hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Checks against a dummy hash when there is no user, so both cases take as long."""
        try:
            return (
                await self.slots.run(self.hasher.verify, hashed or self.dummy_hash, password)
                and hashed is not None
            )
        except (VerificationError, InvalidHashError):
            return False


class TokenSubject(NamedTuple):
    """Whom a verified token was issued to: the account's id and its `account_key`.

    The key tells the account apart from any later one given the same id (a database restored,
    reseeded or with its ids reset): the viewer's row is refused unless both match.
    """

    user_id: int
    account_key: str
    # When the token stops working (seconds since the epoch): a subscription ends then.
    expires: float = math.inf


def issue_token(config: Config, user_id: int, account_key: str) -> str:
    """A JWT with `sub` (the id as a string), `iat`, `exp` and `key` (the account key)."""
    now = int(time.time())
    claims = {"sub": str(user_id), "key": account_key, "iat": now, "exp": now + config.token_ttl}
    return jwt.encode(claims, config.secret_key, algorithm=ALGORITHM)


def read_token(config: Config, token: str, *, now: float | None = None) -> TokenSubject | None:
    """Whom a token was issued to, or None when it is forged, malformed, from before account
    keys (no `key`) or expired (or not yet valid) at `now`, by default the current time."""
    # Ours are some 180 characters: longer ones are checked without taking room in the cache.
    verify = _verified if len(token) <= MAX_CACHED_TOKEN else _verify
    claims = verify(config.secret_key, token)
    if claims is None:
        return None
    subject, valid_from, expires = claims
    # The time checks of `jwt.decode` (no leeway), made on every use of a verified token.
    if now is None:
        now = datetime.now(tz=UTC).timestamp()
    return subject if valid_from <= now < expires else None


def _verify(secret_key: str, token: str) -> tuple[TokenSubject, int, int] | None:
    """Whom a token was issued to and the times it is valid between, once its signature and
    claims check out. Verifying is the same work for the same token on every request; only the
    time checks change, so they are left to `read_token`."""
    try:
        claims = jwt.decode(
            token,
            secret_key,
            algorithms=[ALGORITHM],
            options={
                "require": ["sub", "key", "iat", "exp"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        subject, key = claims["sub"], claims["key"]
        if not isinstance(subject, str) or not subject.isdecimal() or not isinstance(key, str):
            return None
        # Read as `jwt.decode` reads them when it checks the times.
        valid_from = int(claims["iat"])
        if "nbf" in claims:
            valid_from = max(valid_from, int(claims["nbf"]))
        expires = int(claims["exp"])
        return TokenSubject(int(subject), key, expires), valid_from, expires
    except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError):
        return None


_verified = functools.lru_cache(maxsize=1024)(_verify)
