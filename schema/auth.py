"""Passwords (Argon2id) and tokens (HS256 JWTs)."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from schema.config import Config

ALGORITHM = "HS256"
MAX_CACHED_TOKEN = 512


@dataclass(frozen=True)
class Passwords:
    """Hashing runs in a worker thread: Argon2 is slow on purpose and must not stall the loop."""

    hasher: PasswordHasher
    dummy_hash: str

    @classmethod
    def from_config(cls, config: Config) -> Passwords:
        hasher = PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_cost,
            parallelism=config.argon2_parallelism,
            type=Type.ID,
        )
        return cls(hasher=hasher, dummy_hash=hasher.hash("not the password of anyone"))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Checks against a dummy hash when there is no user, so both cases take as long."""
        try:
            return (
                await asyncio.to_thread(self.hasher.verify, hashed or self.dummy_hash, password)
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
        return TokenSubject(int(subject), key), valid_from, int(claims["exp"])
    except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError):
        return None


_verified = functools.lru_cache(maxsize=1024)(_verify)
