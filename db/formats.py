"""How keys and times look on the wire: Relay ids, keyset cursors and timestamps.

They are the API's formats, but `db.page_json` writes them too (PostgreSQL builds them in
SQL, see there), so they live below the schema, in one place.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

Keyset = tuple[Any, ...]


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
