"""Errors the data layer raises, so that callers never see a driver's exception type.

DataError
 └── Conflict      a unique value is taken (decided by the database's constraint)
"""

from __future__ import annotations


class DataError(Exception):
    pass


class Conflict(DataError):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field

    def __str__(self) -> str:
        return f"{self.field} is already taken"


UNIQUE_FIELDS = {
    # PostgreSQL names the index, SQLite the indexed column.
    "uq_users_username_key": "username",
    "users.username_key": "username",
    "uq_users_email_key": "email",
    "users.email_key": "email",
}


def conflicting_field(exc: BaseException) -> str | None:
    """The input field behind a unique violation, read from the constraint it names."""
    text = str(getattr(exc, "orig", exc))
    for constraint, name in UNIQUE_FIELDS.items():
        if constraint in text:
            return name
    return None
