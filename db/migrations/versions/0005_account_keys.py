"""Ids never reused, caseless keys, account keys.

- SQLite: `users` and `messages` become AUTOINCREMENT tables (rebuilt, rows and ids kept), so
  a deleted row's id is never handed out again. PostgreSQL's sequences never go back already.
- Users get `username_key`, `email_key` and `full_name_key` (`db.folding.fold` of each,
  computed here in Python for every row): uniqueness, logins and search compare them, the same
  way on both databases, instead of each database's own `lower()`.
- Users get `account_key`, a random key that tokens carry from now on.
- A conversation's `updated_at` in the future (imported messages could set it) becomes now.

Two emails that only the new folding finds equal (`Straße@x.io`, `STRASSE@x.io`) may exist
already: the oldest account keeps the key, each later one gets a key that no email can be
(`<key> #<id>`, with a space), so both rows stay and nobody can register either spelling again.

Revision ID: 0005_account_keys
Revises: 0004_login_limits
Create Date: 2026-11-27
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from db.folding import fold
from db.models import UTCDateTime, new_account_key

revision = "0005_account_keys"
down_revision = "0004_login_limits"
branch_labels = None
depends_on = None

users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("username", sa.String),
    sa.column("email", sa.String),
    sa.column("full_name", sa.String),
    sa.column("username_key", sa.Text),
    sa.column("email_key", sa.Text),
    sa.column("full_name_key", sa.Text),
    sa.column("account_key", sa.String),
)
conversations = sa.table("conversations", sa.column("updated_at", UTCDateTime))


def _rebuild(table: str, *, autoincrement: bool) -> AbstractContextManager[BatchOperations]:
    # SQLite cannot alter a table's primary key in place: the batch copies it into a new one.
    # Elsewhere nothing changes here.
    sqlite = op.get_bind().dialect.name == "sqlite"
    return op.batch_alter_table(
        table,
        recreate="always" if sqlite else "never",
        table_kwargs={"sqlite_autoincrement": autoincrement},
    )


def _fill_keys() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(users.c.id, users.c.username, users.c.email, users.c.full_name).order_by(
            users.c.id
        )
    ).all()
    taken: set[str] = set()
    updates = []
    for row in rows:
        email_key = fold(row.email)
        if email_key in taken:
            email_key = f"{email_key} #{row.id}"
        taken.add(email_key)
        updates.append(
            {
                "row_id": row.id,
                "username_key": fold(row.username),
                "email_key": email_key,
                "full_name_key": fold(row.full_name) if row.full_name is not None else None,
                "account_key": new_account_key(),
            }
        )
    if updates:
        statement = (
            users.update()
            .where(users.c.id == sa.bindparam("row_id"))
            .values(
                username_key=sa.bindparam("username_key"),
                email_key=sa.bindparam("email_key"),
                full_name_key=sa.bindparam("full_name_key"),
                account_key=sa.bindparam("account_key"),
            )
        )
        bind.execute(statement, updates)


def upgrade() -> None:
    op.drop_index("uq_users_username_lower", table_name="users")
    op.drop_index("uq_users_email_lower", table_name="users")
    op.add_column("users", sa.Column("username_key", sa.Text, nullable=True))
    op.add_column("users", sa.Column("email_key", sa.Text, nullable=True))
    op.add_column("users", sa.Column("full_name_key", sa.Text, nullable=True))
    op.add_column("users", sa.Column("account_key", sa.String(32), nullable=True))
    _fill_keys()
    with _rebuild("users", autoincrement=True) as batch:
        batch.alter_column("username_key", existing_type=sa.Text, nullable=False)
        batch.alter_column("email_key", existing_type=sa.Text, nullable=False)
        batch.alter_column("account_key", existing_type=sa.String(32), nullable=False)
    op.create_index("uq_users_username_key", "users", ["username_key"], unique=True)
    op.create_index("uq_users_email_key", "users", ["email_key"], unique=True)
    with _rebuild("messages", autoincrement=True):
        pass
    now = datetime.now(UTC)
    op.get_bind().execute(
        conversations.update().where(conversations.c.updated_at > now).values(updated_at=now)
    )


def downgrade() -> None:
    with _rebuild("messages", autoincrement=False):
        pass
    op.drop_index("uq_users_email_key", table_name="users")
    op.drop_index("uq_users_username_key", table_name="users")
    with _rebuild("users", autoincrement=False) as batch:
        batch.drop_column("account_key")
        batch.drop_column("full_name_key")
        batch.drop_column("email_key")
        batch.drop_column("username_key")
    op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)
