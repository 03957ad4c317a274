"""Cursors are the same bytes they always were: clients keep them across deployments."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from db.pagination import Keyset
from schema.pagination import CursorKind, decode_cursor, encode_cursor

STAMP = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
CONVERSATION_ID = "0f8b6f1e-6a3c-4a8e-9d5b-2f1c3e4d5a6b"


def first_formula(kind: CursorKind, keyset: Keyset) -> str:
    """How cursors were first written (json.dumps, then base64url without padding)."""
    values = [
        v.astimezone(UTC).isoformat(timespec="microseconds") if isinstance(v, datetime) else v
        for v in keyset
    ]
    raw = json.dumps([kind[0], *values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("kind", "keyset", "cursor"),
    [
        ("user", (1234,), "WyJ1IiwxMjM0XQ"),
        (
            "message",
            (STAMP, 42),
            "WyJtIiwiMjAyNS0wMy0wNFQwNTowNjowNy44OTEwMTErMDA6MDAiLDQyXQ",
        ),
        (
            "message",
            (datetime(2025, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2))), 7),
            "WyJtIiwiMjAyNS0wMy0wNFQwNTowNjowNy4wMDAwMDArMDA6MDAiLDdd",
        ),
        (
            "conversation",
            (STAMP.replace(microsecond=1), CONVERSATION_ID),
            "WyJjIiwiMjAyNS0wMy0wNFQwNTowNjowNy4wMDAwMDErMDA6MDAiLCIwZjhiNmYxZS02YTNjLTRhOGUt"
            "OWQ1Yi0yZjFjM2U0ZDVhNmIiXQ",
        ),
    ],
    ids=["user", "message", "message at a whole second, in another zone", "conversation"],
)
def test_each_kind_of_cursor_has_its_pinned_bytes(
    kind: CursorKind, keyset: Keyset, cursor: str
) -> None:
    assert (encode_cursor(kind, keyset), first_formula(kind, keyset)) == (cursor, cursor)


stamps = st.datetimes(
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(0))])
)
keysets: st.SearchStrategy[tuple[CursorKind, tuple[Any, ...]]] = st.one_of(
    st.tuples(st.just("user"), st.tuples(st.integers())),
    st.tuples(st.just("message"), st.tuples(stamps, st.integers())),
    st.tuples(st.just("conversation"), st.tuples(stamps, st.uuids().map(str) | st.text())),
)


@given(keysets)
def test_any_keyset_is_written_as_the_first_formula_wrote_it(
    case: tuple[CursorKind, tuple[Any, ...]],
) -> None:
    kind, keyset = case
    assert encode_cursor(kind, keyset) == first_formula(kind, keyset)


def test_a_cursor_reads_back_as_its_keyset() -> None:
    assert decode_cursor(
        "conversation", encode_cursor("conversation", (STAMP, CONVERSATION_ID)), field="after"
    ) == (STAMP, CONVERSATION_ID)
