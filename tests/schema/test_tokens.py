"""Tokens are verified once and their times checked on every use."""

from __future__ import annotations

import jwt
import pytest

from schema.auth import TokenSubject, read_token
from schema.config import Config
from tests.factories import TEST_SECRET

CONFIG = Config(secret_key=TEST_SECRET)


SEVEN = TokenSubject(user_id=7, account_key="k7", expires=2000)


def token(**claims: object) -> str:
    return jwt.encode(
        {"sub": "7", "key": "k7", "iat": 1000, "exp": 2000, **claims}, TEST_SECRET, "HS256"
    )


@pytest.mark.parametrize(
    ("claims", "moments", "expected"),
    [
        ({}, [999, 1000, 1999.9, 2000, 1500], [None, SEVEN, SEVEN, None, SEVEN]),
        ({"nbf": 1500}, [1000, 1499, 1500, 1000], [None, None, SEVEN, None]),
        ({"iat": "soon"}, [1500], [None]),
        ({"sub": 7}, [1500], [None]),
        ({"sub": "seven"}, [1500], [None]),
        ({"key": None}, [1500], [None]),
        ({"key": 7}, [1500], [None]),
    ],
    ids=[
        "valid between iat and exp",
        "not before nbf",
        "bad iat",
        "sub not a string",
        "bad sub",
        "null key",
        "key not a string",
    ],
)
def test_each_use_of_a_token_checks_its_times(
    claims: dict[str, object], moments: list[float], expected: list[TokenSubject | None]
) -> None:
    issued = token(**claims)
    assert [read_token(CONFIG, issued, now=now) for now in moments] == expected


def test_a_forged_or_garbled_token_is_refused() -> None:
    forged = jwt.encode({"sub": "7", "iat": 1000, "exp": 2000}, "x" * 32, "HS256")
    assert [read_token(CONFIG, each, now=1500) for each in (forged, "garbage", "a" * 600)] == [
        None,
        None,
        None,
    ]


def test_a_token_without_an_expiry_is_refused() -> None:
    endless = jwt.encode({"sub": "7", "key": "k7", "iat": 1000}, TEST_SECRET, "HS256")
    assert read_token(CONFIG, endless, now=1500) is None


def test_a_token_from_before_account_keys_is_refused() -> None:
    """Tokens issued before they carried `key` name an id alone: they must log in again."""
    old = jwt.encode({"sub": "7", "iat": 1000, "exp": 2000}, TEST_SECRET, "HS256")
    assert read_token(CONFIG, old, now=1500) is None
