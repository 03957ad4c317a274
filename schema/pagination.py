"""Relay connections: argument rules and opaque keyset cursors (the connection, edge and
`pageInfo` fields are defined once in `schema.fields`)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any, Literal

from sqlalchemy import Row

from db.formats import encode_cursor as encode_cursor  # the cursors' format lives there
from db.formats import is_key, parse_stamp
from db.pagination import Keyset, PageRequest
from schema.config import Config
from schema.errors import BadUserInput

# "feed": a position in a user's change feed (`schema.feed`); "search": a hit (`schema.search`).
CursorKind = Literal["user", "conversation", "message", "feed", "search"]


def row_keyset(kind: CursorKind, row: Row[Any]) -> Keyset:
    if kind == "user":
        return (row.id,)
    if kind == "conversation":
        return (row.updated_at, row.id)
    if kind == "feed":
        return (row.user_id, row.position)
    if kind == "search":
        return (float(row.rank), row.id)
    return (row.created_at, row.id)


# Ours are at most 110 characters (a conversation's); anything much longer is not one.
MAX_CURSOR_LENGTH = 200


def cursor_values(cursor: str, *, tag: str, field: str) -> list[Any]:
    """The JSON list inside one of our cursors whose first value is `tag` (the values after
    it unchecked); anything else is BAD_USER_INPUT naming `field`."""
    bad = BadUserInput.one(field, "not a valid cursor for this connection")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        if raw.count(b"[") != 1 or b"{" in raw:
            raise ValueError
        values = json.loads(raw)
    except (binascii.Error, UnicodeError, ValueError):
        raise bad from None
    if not isinstance(values, list) or not values or values[0] != tag:
        raise bad
    return values


def decode_cursor(kind: CursorKind, cursor: str, *, field: str) -> Keyset:
    """The keyset of one of our cursors, each value within its column's domain; anything else
    is BAD_USER_INPUT naming `field`. The JSON inside is read only once it is short and flat
    (one list, no objects), so decoding never recurses."""
    bad = BadUserInput.one(field, "not a valid cursor for this connection")
    values = cursor_values(cursor, tag=kind[0], field=field)
    try:
        if kind == "user":
            (_, user_id) = values
            if not is_key(user_id):
                raise ValueError
            return (user_id,)
        (_, stamp, key) = values
        if not isinstance(stamp, str):
            raise ValueError
        moment = parse_stamp(stamp)
        if kind == "conversation":
            return (moment, str(uuid.UUID(key)))
        if not is_key(key):
            raise ValueError
        return (moment, key)
    except (ValueError, TypeError, AttributeError):
        raise bad from None


def page_request(
    config: Config,
    kind: CursorKind,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> PageRequest:
    """Check connection arguments against the contract's rules and normalise them."""
    problems: dict[str, str] = {}
    bounds = f"must be between 1 and {config.max_page_size}"
    if first is not None and not 1 <= first <= config.max_page_size:
        problems["first"] = bounds
    if last is not None and not 1 <= last <= config.max_page_size:
        problems["last"] = bounds
    if first is not None and last is not None:
        problems["last"] = "cannot be combined with first"
    if problems:
        raise BadUserInput(problems, "; ".join(f"{k}: {v}" for k, v in problems.items()))
    after_keys = decode_cursor(kind, after, field="after") if after is not None else None
    before_keys = decode_cursor(kind, before, field="before") if before is not None else None
    if first is None and last is None:
        first = config.default_page_size
    return PageRequest(first=first, last=last, after=after_keys, before=before_keys)
