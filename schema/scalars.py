"""The DateTime scalar: ISO 8601 with a timezone in, always UTC with microseconds out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from strawberry.types.scalar import ScalarDefinition

from db.formats import stamp

serialize_datetime = stamp


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date and time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("DateTime needs a timezone, such as +00:00 or Z")
    return parsed.astimezone(UTC)


DATETIME: ScalarDefinition = strawberry.scalar(
    name="DateTime",
    description='ISO 8601 with timezone, always UTC on output: "2026-11-26T08:00:00.123456+00:00"',
    serialize=serialize_datetime,
    parse_value=parse_datetime,
)
SCALARS: dict[object, ScalarDefinition] = {datetime: DATETIME}
