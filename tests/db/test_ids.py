"""Ids are never handed out twice, on either database, whatever was deleted or reseeded; the
migration that made it so keeps every row."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.engine import make_engine, make_sessionmaker
from db.migrate import migrate, upgrade_to_head
from db.models import Conversation, Message, User, UTCDateTime
from db.seed import SeedPlan, seed
from db.users import create_user, delete_user
from tests.conftest import _create_database, _drop_database, _postgres_admin_url, run
from tests.factories import _HASH as HASH

BEFORE = "0004_login_limits"
PAST = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE = datetime(2999, 1, 1, tzinfo=UTC)
# The tables as revision 0003 has them.
OLD_USERS = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("username", sa.String),
    sa.column("email", sa.String),
    sa.column("full_name", sa.String),
    sa.column("hashed_password", sa.String),
    sa.column("is_active", sa.Boolean),
    sa.column("is_admin", sa.Boolean),
    sa.column("created_at", UTCDateTime),
    sa.column("updated_at", UTCDateTime),
)
OLD_CONVERSATIONS = sa.table(
    "conversations",
    sa.column("id", sa.String),
    sa.column("user_id", sa.Integer),
    sa.column("title", sa.String),
    sa.column("created_at", UTCDateTime),
    sa.column("updated_at", UTCDateTime),
)
OLD_MESSAGES = sa.table(
    "messages",
    sa.column("id", sa.Integer),
    sa.column("conversation_id", sa.String),
    sa.column("role", sa.String),
    sa.column("content", sa.Text),
    sa.column("created_at", UTCDateTime),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    admin_url = _postgres_admin_url()
    name = f"chatql_ids_{uuid.uuid4().hex[:12]}"
    run(_create_database(admin_url, name))
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        run(_drop_database(admin_url, name))


@pytest.fixture
async def old_engine(empty_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a database at revision 0003, before ids were kept from being reused."""
    engine = make_engine(empty_url)
    await migrate(engine, BEFORE)
    yield engine
    await engine.dispose()


async def _old_user(connection: AsyncConnection, username: str, email: str, **more: Any) -> int:
    values = {
        "username": username,
        "email": email,
        "full_name": None,
        "hashed_password": HASH,
        "is_active": True,
        "is_admin": False,
        "created_at": PAST,
        "updated_at": PAST,
        **more,
    }
    result = await connection.execute(OLD_USERS.insert().values(**values).returning(OLD_USERS.c.id))
    return int(result.scalar_one())


async def _rows(engine: AsyncEngine, statement: Any) -> list[Any]:
    async with engine.connect() as connection:
        return [tuple(row) for row in (await connection.execute(statement)).all()]


async def test_migrating_keeps_every_row_and_gives_each_user_its_keys(
    old_engine: AsyncEngine,
) -> None:
    async with old_engine.begin() as connection:
        ada = await _old_user(connection, "Ada", "Straße@x.io", full_name="Émile Zola")
        bob = await _old_user(connection, "bob", "STRASSE@x.io")
        await connection.execute(
            OLD_CONVERSATIONS.insert().values(title="t", created_at=PAST),
            [
                {
                    "id": "c-ada",
                    "user_id": ada,
                    "title": "t",
                    "created_at": PAST,
                    "updated_at": FUTURE,
                },
                {
                    "id": "c-bob",
                    "user_id": bob,
                    "title": "t",
                    "created_at": PAST,
                    "updated_at": PAST,
                },
            ],
        )
        for conversation in ("c-ada", "c-bob"):
            await connection.execute(
                OLD_MESSAGES.insert().values(
                    conversation_id=conversation, role="USER", content="hi", created_at=PAST
                )
            )
    started = datetime.now(UTC)
    await upgrade_to_head(old_engine)
    users = sa.select(
        User.id,
        User.username,
        User.email,
        User.full_name,
        User.username_key,
        User.email_key,
        User.full_name_key,
    ).order_by(User.id)
    assert await _rows(old_engine, users) == [
        (ada, "Ada", "Straße@x.io", "Émile Zola", "ada", "strasse@x.io", "émile zola"),
        # Equal only by the new folding: kept, with a key no email can have.
        (bob, "bob", "STRASSE@x.io", None, "bob", f"strasse@x.io #{bob}", None),
    ]
    keys = [key for (key,) in await _rows(old_engine, sa.select(User.account_key))]
    assert len(set(keys)) == 2 and all(len(key) == 22 for key in keys)
    conversations = await _rows(
        old_engine,
        sa.select(Conversation.id, Conversation.user_id, Conversation.updated_at).order_by(
            Conversation.id
        ),
    )
    # A time in the future would have kept the conversation first for good: it is now.
    assert conversations[1] == ("c-bob", bob, PAST)
    assert conversations[0][:2] == ("c-ada", ada)
    assert started <= conversations[0][2] <= datetime.now(UTC)
    messages = sa.select(Message.conversation_id, Message.content).order_by(Message.id)
    assert await _rows(old_engine, messages) == [("c-ada", "hi"), ("c-bob", "hi")]


async def test_after_the_migration_the_id_of_a_deleted_row_is_never_given_again(
    old_engine: AsyncEngine,
) -> None:
    async with old_engine.begin() as connection:
        first = await _old_user(connection, "first", "first@x.io")
        await connection.execute(
            OLD_CONVERSATIONS.insert().values(
                id="c", user_id=first, title="t", created_at=PAST, updated_at=PAST
            )
        )
        last_message = (
            await connection.execute(
                OLD_MESSAGES.insert()
                .values(conversation_id="c", role="USER", content="x", created_at=PAST)
                .returning(OLD_MESSAGES.c.id)
            )
        ).scalar_one()
    await upgrade_to_head(old_engine)
    sessionmaker = make_sessionmaker(old_engine)
    async with sessionmaker() as session, session.begin():
        second = await create_user(
            session, username="second", email="second@x.io", hashed_password=HASH, full_name=None
        )
        await delete_user(session, user_id=second.id)
        await session.execute(sa.delete(Message).where(Message.id == last_message))
    async with sessionmaker() as session, session.begin():
        third = await create_user(
            session, username="third", email="third@x.io", hashed_password=HASH, full_name=None
        )
        message = await session.execute(
            sa.insert(Message)
            .values(conversation_id="c", role="USER", content="y", created_at=PAST)
            .returning(Message.id)
        )
        new_message = message.scalar_one()
    assert third.id > second.id > first
    assert new_message > last_message


async def test_a_downgrade_keeps_every_row_and_so_does_the_upgrade_after_it(
    old_engine: AsyncEngine,
) -> None:
    await upgrade_to_head(old_engine)
    sessionmaker = make_sessionmaker(old_engine)
    async with sessionmaker() as session, session.begin():
        user = await create_user(
            session, username="Zoë", email="Zoë@x.io", hashed_password=HASH, full_name="Zoë Z"
        )
        await session.execute(
            sa.insert(Conversation).values(
                id="c", user_id=user.id, title="t", created_at=PAST, updated_at=PAST
            )
        )
        await session.execute(
            sa.insert(Message).values(
                conversation_id="c", role="USER", content="x", created_at=PAST
            )
        )
    await migrate(old_engine, BEFORE, down=True)
    counts = sa.select(
        sa.select(sa.func.count()).select_from(OLD_USERS).scalar_subquery(),
        sa.select(sa.func.count()).select_from(OLD_CONVERSATIONS).scalar_subquery(),
        sa.select(sa.func.count()).select_from(OLD_MESSAGES).scalar_subquery(),
    )
    assert await _rows(old_engine, counts) == [(1, 1, 1)]
    await upgrade_to_head(old_engine)
    keys = sa.select(User.id, User.username_key, User.email_key, User.full_name_key)
    assert await _rows(old_engine, keys) == [(user.id, "zoë", "zoë@x.io", "zoë z")]
    assert await _rows(old_engine, counts) == [(1, 1, 1)]


async def _ids(engine: AsyncEngine) -> tuple[set[int], set[str], set[int]]:
    async with engine.connect() as connection:
        users = set((await connection.execute(sa.select(User.id))).scalars())
        conversations = set((await connection.execute(sa.select(Conversation.id))).scalars())
        messages = set((await connection.execute(sa.select(Message.id))).scalars())
    return users, conversations, messages


async def test_seeding_again_with_reset_gives_every_row_a_new_id(engine: AsyncEngine) -> None:
    plan = SeedPlan(users=3, conversations_per_user=2, messages_per_conversation=3)
    await seed(engine, plan=plan, hashed_password=HASH)
    old_users, old_conversations, old_messages = await _ids(engine)
    await seed(engine, plan=plan, hashed_password=HASH, reset=True)
    users, conversations, messages = await _ids(engine)
    assert (len(users), len(conversations), len(messages)) == (3, 6, 18)
    assert min(users) > max(old_users)
    assert min(messages) > max(old_messages)
    assert not conversations & old_conversations
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        signed_up = await create_user(
            session, username="late", email="late@x.io", hashed_password=HASH, full_name=None
        )
    assert signed_up.id > max(users)


async def test_the_seed_moves_the_counters_past_the_ids_it_wrote(engine: AsyncEngine) -> None:
    plan = SeedPlan(users=2, conversations_per_user=1, messages_per_conversation=2)
    await seed(engine, plan=plan, hashed_password=HASH)
    users, _, messages = await _ids(engine)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        signed_up = await create_user(
            session, username="late", email="late@x.io", hashed_password=HASH, full_name=None
        )
        conversation = next(iter((await session.execute(sa.select(Conversation.id))).scalars()))
        message = await session.execute(
            sa.insert(Message)
            .values(
                conversation_id=conversation,
                role="USER",
                content="x",
                created_at=PAST + timedelta(days=1),
            )
            .returning(Message.id)
        )
        message_id = message.scalar_one()
    assert signed_up.id == max(users) + 1
    assert message_id == max(messages) + 1
