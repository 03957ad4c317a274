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
    "uq_users_username_lower": "username",
    "uq_users_email_lower": "email",
}


def conflicting_field(exc: BaseException) -> str | None:
    """The input field behind a unique violation, read from the constraint it names."""
    text = str(getattr(exc, "orig", exc))
    for constraint, name in UNIQUE_FIELDS.items():
        if constraint in text:
            return name
    # SQLite names the indexed expression rather than the index.
    lowered = text.lower()
    if "unique" in lowered:
        for name in ("username", "email"):
            if f"lower({name})" in lowered or f"users.{name}" in lowered:
                return name
    return None
