"""Typed factories that write rows straight to the database; defaults make every row unique."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.branches import link_imported
from db.models import Conversation, Message, MessageRole, User, new_conversation_id
from db.users import with_keys
from schema.auth import issue_token
from schema.config import Config
from schema.relay import to_global_id

TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256"
PASSWORD = "correct horse battery"
_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
_counter = itertools.count(1)
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

Sessionmaker = async_sessionmaker[AsyncSession]


# The account key of each user `make_user` wrote, by id (ids start again in every test's
# database, so the last one written is the one that exists).
_account_keys: dict[int, str] = {}


def account_key(user_id: int) -> str:
    """The key a token for `user_id` carries; one that fits no account if `make_user` did not
    write that user."""
    return _account_keys.get(user_id, "no-such-account")


def token_for(user_id: int, *, ttl: int = 3600) -> str:
    return issue_token(Config(secret_key=TEST_SECRET, token_ttl=ttl), user_id, account_key(user_id))


def gid(type_name: str, key: int | str) -> str:
    return to_global_id(type_name, key)  # type: ignore[arg-type]


async def make_user(
    sm: Sessionmaker,
    *,
    username: str | None = None,
    email: str | None = None,
    full_name: str | None = None,
    is_admin: bool = False,
    is_active: bool = True,
) -> int:
    n = next(_counter)
    username = username or f"user{n}"
    values = with_keys(
        {"username": username, "email": email or f"{username}@example.com", "full_name": full_name}
    )
    async with sm() as session, session.begin():
        result = await session.execute(
            insert(User)
            .values(**values, hashed_password=_HASH, is_admin=is_admin, is_active=is_active)
            .returning(User.id, User.account_key)
        )
        user_id, key = result.one()
    _account_keys[user_id] = key
    return int(user_id)


async def make_conversation(
    sm: Sessionmaker, *, owner_id: int, title: str | None = None, updated_at: datetime | None = None
) -> str:
    conversation_id = new_conversation_id()
    moment = updated_at or BASE_TIME + timedelta(seconds=next(_counter))
    async with sm() as session, session.begin():
        await session.execute(
            insert(Conversation).values(
                id=conversation_id,
                user_id=owner_id,
                title=title or f"Conversation {conversation_id[:8]}",
                created_at=moment,
                updated_at=moment,
            )
        )
    return conversation_id


async def make_messages(
    sm: Sessionmaker,
    *,
    conversation_id: str,
    count: int,
    start: datetime = BASE_TIME,
    step: timedelta = timedelta(seconds=1),
    content: str = "message {i}",
    linked: bool = True,
) -> list[int]:
    """`count` messages one `step` apart, on the active branch after its current leaf, each
    after the one before (`db.branches`); returns their ids, oldest first. `linked` False:
    the rows alone, as a schema before branches (migration 0011) holds them."""
    rows = [
        {
            "conversation_id": conversation_id,
            "role": MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT,
            "content": content.format(i=i),
            "created_at": start + step * i,
        }
        for i in range(count)
    ]
    async with sm() as session, session.begin():
        result = await session.execute(insert(Message).returning(Message.id), rows)
        ids = sorted(int(x) for x in result.scalars().all())
        if ids and linked:
            held = select(Conversation.current_leaf_id).where(Conversation.id == conversation_id)
            leaf = (await session.execute(held)).scalar()
            await link_imported(session, ids=ids, after=leaf)
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(current_leaf_id=ids[-1])
            )
        return ids
