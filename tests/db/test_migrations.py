"""The migration history and the models describe the same database, on both backends."""

from __future__ import annotations

import warnings
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Base
from db.search import is_search_object


def _models_only(name: str | None, *_: Any) -> bool:
    return not is_search_object(name)


def _differences(connection: Connection) -> list[Any]:
    # Search's column, index and FTS5 tables are each database's own (db/search.py).
    opts = {"compare_type": True, "include_name": _models_only}
    context = MigrationContext.configure(connection, opts=opts)
    with warnings.catch_warnings():
        # SQLite's reflection cannot read expression indexes; they are checked by name below.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        return list(compare_metadata(context, Base.metadata))


def _index_names(connection: Connection) -> set[str]:
    if connection.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'index'"
    else:
        query = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    return {name for (name,) in connection.execute(text(query))}


async def test_the_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []


async def test_every_access_path_has_its_index(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        names = await connection.run_sync(_index_names)
    assert {
        "uq_users_username_key",
        "uq_users_email_key",
        "ix_conversations_user_updated",
        "ix_messages_conversation_created",
    } <= names
