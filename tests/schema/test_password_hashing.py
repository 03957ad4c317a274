"""Argon2 hashes take memory while they run: no more run at once than the budget allows."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from argon2 import PasswordHasher

from tests.conftest import ApiFactory
from tests.factories import PASSWORD, Sessionmaker, make_user
from tests.helpers import codes
from tests.schema.test_rate_limits import LOG_IN, SIGN_UP, log_in, sign_up, stored_attempts

BUSY = "Too many logins and sign-ups at once; try again shortly."


@dataclass
class Meter:
    """How many Argon2 computations run at once, seen from inside argon2-cffi itself."""

    seconds: float
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(self.seconds)
                return method(*args, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1

        return measured

    def reset(self) -> None:
        self.most = self.running


def metered(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Meter:
    meter = Meter(seconds)
    monkeypatch.setattr(PasswordHasher, "hash", meter.wrap(PasswordHasher.hash))
    monkeypatch.setattr(PasswordHasher, "verify", meter.wrap(PasswordHasher.verify))
    return meter


async def test_concurrent_logins_and_sign_ups_hash_no_more_at_once_than_the_budget(
    other_app: ApiFactory, sessionmaker: Sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = metered(monkeypatch, seconds=0.05)
    for i in range(4):
        await make_user(sessionmaker, username=f"known{i}")
    # Hashes of 1024 KiB (the tests' cost) in a budget of 2048: two at once.
    async with other_app(argon2_memory_budget=2048) as api:
        meter.reset()
        results = await asyncio.gather(
            *(api.run(LOG_IN, log_in(f"known{i}", PASSWORD)) for i in range(4)),
            *(api.run(LOG_IN, log_in(f"unknown{i}", PASSWORD)) for i in range(3)),
            *(api.run(SIGN_UP, sign_up(f"new{i}")) for i in range(3)),
        )
    assert [codes(result) for result in results] == [[]] * 4 + [["UNAUTHENTICATED"]] * 3 + [[]] * 3
    assert meter.most == 2


async def test_hashes_beyond_the_waiting_room_are_refused_and_counted_as_nothing(
    other_app: ApiFactory, sessionmaker: Sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = metered(monkeypatch, seconds=0.5)
    for i in range(5):
        await make_user(sessionmaker, username=f"crowd{i}")
    # One at a time, one waiting: of five at once, two go through.
    async with other_app(argon2_memory_budget=1024, argon2_max_waiting=1) as api:
        meter.reset()
        results = await asyncio.gather(
            *(api.run(LOG_IN, log_in(f"crowd{i}", PASSWORD)) for i in range(5))
        )
    assert Counter(tuple(codes(result)) for result in results) == {(): 2, ("RATE_LIMITED",): 3}
    refusals = [result["errors"][0] for result in results if codes(result)]
    assert {(error["message"], error["path"][0]) for error in refusals} == {(BUSY, "logIn")}
    # The ones waiting ahead of it take a second: so might its turn.
    assert {error["extensions"]["retryAfterSeconds"] for error in refusals} <= {1, 2}
    assert meter.most == 1
    # A refusal is no failure: only the two logins are stored.
    assert [kind for _, _, kind in await stored_attempts(sessionmaker)] == ["login", "login"]
