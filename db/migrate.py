"""Bring a database to the newest revision of the one migration history."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The advisory lock key that serialises migrations on PostgreSQL (any constant: "chatql" in hex).
MIGRATION_LOCK = 0x63686174716C


class BrokenForeignKeys(Exception):
    def __str__(self) -> str:
        return "the migration left rows whose foreign keys point at nothing; it was rolled back"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _foreign_keys(connection: Connection, *, on: bool) -> None:
    # A PRAGMA that changes nothing inside a transaction: sent on the driver's connection, so
    # that SQLAlchemy begins none first (the engine's BEGIN comes from its `begin` event).
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()


async def upgrade_to_head(engine: AsyncEngine) -> None:
    await migrate(engine, "head")


async def migrate(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    """Upgrade (or with `down`, downgrade) the database to `revision`, in one transaction;
    on PostgreSQL under an advisory lock, so that processes migrating at once take turns.

    SQLite alters a table by copying it into a new one and dropping the old one, and with
    foreign keys enforced, dropping `users` would delete every conversation (ON DELETE
    CASCADE). So there the migration runs with them off and is checked before it commits, as
    SQLite's own procedure for altering tables prescribes (sqlite.org/lang_altertable.html).
    """
    step = command.downgrade if down else command.upgrade
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.run_sync(_foreign_keys, on=False)
        try:
            async with connection.begin():
                if not sqlite:
                    # Hosts started together all migrate: one at a time, each seeing what the
                    # one before did (a lock of this transaction, released by its end).
                    await connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                await connection.run_sync(lambda sync: step(alembic_config(sync), revision))
                if sqlite and (await connection.execute(text("PRAGMA foreign_key_check"))).first():
                    raise BrokenForeignKeys()
        finally:
            if sqlite:
                await connection.run_sync(_foreign_keys, on=True)
