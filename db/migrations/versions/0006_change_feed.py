"""The change feed (sync): message revisions, per-user feeds and their changes.

- `messages` gets `revision` (1 for every existing message) and `edited_at`.
- `message_revisions` keeps the earlier contents of edited messages.
- `feeds` (one head per user) and `changes` (see `db.changes`). Existing history is not
  replayed into feeds: a feed starts at the first write after this migration.
- SQLite: the trigger `changes_raise_head` raises a feed's head for every stored change
  (PostgreSQL raises it in the recording statement itself).

Revision ID: 0006_change_feed
Revises: 0005_account_keys
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0006_change_feed"
down_revision = "0005_account_keys"
branch_labels = None
depends_on = None

RAISE_HEAD = """
CREATE TRIGGER changes_raise_head AFTER INSERT ON changes FOR EACH ROW BEGIN
    INSERT INTO feeds (user_id, head, pruned_through) VALUES (NEW.user_id, NEW.position, 0)
    ON CONFLICT (user_id) DO UPDATE SET head = MAX(feeds.head, excluded.head);
END
"""


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("edited_at", UTCDateTime, nullable=True))
    op.create_table(
        "message_revisions",
        sa.Column(
            "message_id",
            sa.Integer,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "revision"),
    )
    op.create_table(
        "feeds",
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("head", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pruned_through", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "changes",
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "position"),
    )
    op.create_index("ix_changes_at", "changes", ["at"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute(RAISE_HEAD)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS changes_raise_head")
    op.drop_index("ix_changes_at", table_name="changes")
    op.drop_table("changes")
    op.drop_table("feeds")
    op.drop_table("message_revisions")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("edited_at")
        batch.drop_column("revision")
