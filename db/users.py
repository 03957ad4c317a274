"""Data access for users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Row,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import Conflict, conflicting_field
from db.folding import fold
from db.models import User, new_account_key, utcnow
from db.pagination import Ordering, Page, PageRequest, fetch_pages
from db.reads import VIEWER_IMAGE, Reads

users = cast(Table, User.__table__)
# The advisory lock key that sign-ups take while the first account may still be in the making.
FIRST_ACCOUNT_LOCK = 0x63686174716C
USER_ORDER = Ordering(keys=(users.c.id,))


async def users_by_ids(session: AsyncSession, *, ids: Sequence[int]) -> dict[int, Row[Any]]:
    rows = (await session.execute(select(users).where(users.c.id.in_(ids)))).all()
    return {row.id: row for row in rows}


USER_BY_ID = select(users).where(users.c.id == bindparam("user_id"))


# The user with the hash of its row (`image`), which `db.reads.GuardedReads` checks.
VIEWER_BY_ID = select(users, literal_column(VIEWER_IMAGE).label("image")).where(
    users.c.id == bindparam("user_id")
)


async def get_user(reads: Reads, *, user_id: int, image: bool = False) -> Row[Any] | None:
    """With `image` (PostgreSQL alone), the row also has the md5 of its text, `image`."""
    statement = VIEWER_BY_ID if image else USER_BY_ID
    row: Row[Any] | None = await reads.first(statement, {"user_id": user_id})
    return row


async def get_user_for_share(session: AsyncSession, *, user_id: int) -> Row[Any] | None:
    """The user, kept from being deleted or changed until the transaction ends (PostgreSQL's
    FOR SHARE; SQLite's single writer does the same)."""
    statement = select(users).where(users.c.id == user_id).with_for_update(read=True)
    return (await session.execute(statement)).first()


async def find_user_by_login(session: AsyncSession, *, login: str) -> Row[Any] | None:
    """A user by username or email, both caseless (`db.folding.fold`)."""
    key = fold(login)
    statement = select(users).where(or_(users.c.username_key == key, users.c.email_key == key))
    return (await session.execute(statement.limit(1))).first()


async def users_by_usernames(
    session: AsyncSession, *, usernames: Sequence[str]
) -> dict[str, Row[Any]]:
    """Keyed by each of `usernames` that names a user, caselessly."""
    keys = {name: fold(name) for name in usernames}
    statement = select(users).where(users.c.username_key.in_(set(keys.values())))
    found = {row.username_key: row for row in (await session.execute(statement)).all()}
    return {name: found[key] for name, key in keys.items() if key in found}


def _matching(search: str | None) -> ColumnElement[bool] | None:
    """A caseless substring of the username or the full name."""
    if not search:
        return None
    needle = fold(search)
    return or_(
        users.c.username_key.contains(needle, autoescape=True),
        users.c.full_name_key.contains(needle, autoescape=True),
    )


async def users_page(session: AsyncSession, *, request: PageRequest, search: str | None) -> Page:
    base = select(users)
    condition = _matching(search)
    if condition is not None:
        base = base.where(condition)
    pages = await fetch_pages(
        session, base=base, partition=None, parents=[None], ordering=USER_ORDER, request=request
    )
    return pages[None]


async def count_users(session: AsyncSession, *, search: str | None) -> int:
    statement = select(func.count()).select_from(users)
    condition = _matching(search)
    if condition is not None:
        statement = statement.where(condition)
    return int((await session.execute(statement)).scalar_one())


def with_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` of a users row, with the caseless key of each of username, email and full name
    among them (a None full name has a None key)."""
    keyed = dict(values)
    for column in ("username", "email", "full_name"):
        if column in values:
            text = values[column]
            keyed[f"{column}_key"] = fold(text) if text is not None else None
    return keyed


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    email: str,
    hashed_password: str,
    full_name: str | None,
    is_admin: bool = False,
) -> Row[Any]:
    """Insert a user; the first account on an empty database becomes an admin.

    Whether the table is empty is decided inside the INSERT itself, not by an earlier read.
    On PostgreSQL, while the table is empty, sign-ups take turns on an advisory lock held to the
    end of their transaction, or two racing ones could each see an empty table and both become
    admins; once a user exists nobody waits. SQLite's single writer serialises them already.
    """
    if not is_admin and session.get_bind().dialect.name == "postgresql":
        anyone = await session.scalar(select(exists(select(users.c.id))))
        if not anyone:
            await session.execute(select(func.pg_advisory_xact_lock(FIRST_ACCOUNT_LOCK)))
    now = utcnow()
    first_account = ~exists(select(users.c.id))
    values = with_keys(
        {
            "username": username,
            "email": email,
            "full_name": full_name,
            "hashed_password": hashed_password,
            "account_key": new_account_key(),
            "is_active": True,
            "created_at": now,
            "updated_at": now,
        }
    )
    columns = [*values, "is_admin"]
    selected = [literal(value, users.c[name].type) for name, value in values.items()]
    admin = literal(True) if is_admin else first_account
    statement = insert(users).from_select(columns, select(*selected, admin)).returning(*users.c)
    try:
        return (await session.execute(statement)).one()
    except IntegrityError as exc:
        raise Conflict(conflicting_field(exc) or "username") from exc


async def update_user(
    session: AsyncSession, *, user_id: int, values: dict[str, Any]
) -> Row[Any] | None:
    statement = (
        update(users)
        .where(users.c.id == user_id)
        .values(**with_keys(values), updated_at=utcnow())
        .returning(*users.c)
    )
    try:
        return (await session.execute(statement)).first()
    except IntegrityError as exc:
        raise Conflict(conflicting_field(exc) or "email") from exc


async def delete_user(session: AsyncSession, *, user_id: int) -> bool:
    result = await session.execute(delete(users).where(users.c.id == user_id).returning(users.c.id))
    return result.first() is not None


async def inactive_user_ids(session: AsyncSession, *, ids: Sequence[int]) -> set[int]:
    """Those of `ids` that are deactivated or no longer exist."""
    statement = select(users.c.id).where(users.c.id.in_(ids), users.c.is_active.is_(True))
    active = set((await session.execute(statement)).scalars().all())
    return set(ids) - active
