"""How keys and times look on the wire: Relay ids, keyset cursors and timestamps, and the
domain of each: the values both databases store.

They are the API's formats, but `db.page_json` writes them too (PostgreSQL builds them in
SQL, see there), so they live below the schema, in one place.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

Keyset = tuple[Any, ...]

# User and message ids are INTEGER columns: 32 bits on PostgreSQL, 64 on SQLite. The narrower
# decides, so that an id means the same on both (a larger one would fail in the driver).
KEY_MIN, KEY_MAX = 1, 2**31 - 1

# asyncpg sends Python's first and last instants as PostgreSQL's -infinity and infinity, and
# a zone's offset pushes an instant near them out of Python's range: a day's margin at each
# end keeps every stored time readable in any zone.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999_999, tzinfo=UTC)
OUT_OF_RANGE = "must be between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59.999999Z"


def is_key(value: object) -> bool:
    """Whether `value` can be a user or message id (`True` is no id)."""
    return type(value) is int and KEY_MIN <= value <= KEY_MAX


def parse_stamp(value: str) -> datetime:
    """An ISO 8601 time with its zone, as aware UTC within EARLIEST..LATEST; ValueError with
    a message fit for the client otherwise."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # a lone surrogate too: UnicodeEncodeError is a ValueError
        raise ValueError(f"not an ISO 8601 date and time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("needs a timezone, such as +00:00 or Z")
    try:
        moment = parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before Python's first instant
        raise ValueError(OUT_OF_RANGE) from None
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(OUT_OF_RANGE)
    return moment


def stamp(value: datetime) -> str:
    """UTC, always with microseconds: 2026-11-26T08:00:00.000000+00:00."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def global_id(type_name: str, key: int | str) -> str:
    """A Relay id: base64 of "Type:key"."""
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


def _cursor_value(value: Any) -> str:
    if isinstance(value, datetime):
        return f'"{stamp(value)}"'
    if type(value) is int:
        return str(value)
    return json.dumps(value)


def encode_cursor(kind: str, keyset: Keyset) -> str:
    """A keyset cursor: unpadded base64url of compact JSON, `["m","<stamp>",<id>]` for a
    message (the first letter of the kind, then the keyset)."""
    raw = f'["{kind[0]}",{",".join(map(_cursor_value, keyset))}]'
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
