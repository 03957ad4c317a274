"""Passwords (Argon2id) and tokens (HS256 JWTs)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from schema.config import Config

ALGORITHM = "HS256"


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


def issue_token(config: Config, user_id: int) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + config.token_ttl}
    return jwt.encode(claims, config.secret_key, algorithm=ALGORITHM)


def read_token(config: Config, token: str) -> int | None:
    """The user id a token was issued to, or None when it is forged, malformed or expired."""
    try:
        claims = jwt.decode(
            token,
            config.secret_key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "iat", "exp"]},
        )
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.isdecimal():
            return None
        return int(subject)
    except (jwt.InvalidTokenError, ValueError):
        return None
