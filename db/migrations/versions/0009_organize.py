"""Organize (issue 16): archived, pinned, tags and read state on conversations.

`conversations` gets `archived` and `pinned` (false by default), `tags` (the JSON array of the
tags as the owner wrote them, sorted: read with the row, no statement more for a list) and the
read mark, `last_read_message_id` with that message's `last_read_at` (its `createdAt`). The mark
is kept by value, with no foreign key: a message deleted after it was marked leaves the mark
where it was, and unread counts still compare against (`last_read_at`, `last_read_message_id`).

`conversation_tags` holds one row per tag with its caseless key (`db.folding.fold`), for the
tag filter and `User.tags`; `db.conversations.set_tags` writes both.

Columns are added with plain `ALTER TABLE ... ADD COLUMN` on both databases: SQLite's batch
mode would rebuild `conversations` (harmless) but this migration needs none.

Revision ID: 0009_organize
Revises: 0008_search
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0009_organize"
down_revision = "0008_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    false = sa.false()
    op.add_column(
        "conversations", sa.Column("archived", sa.Boolean(), nullable=False, server_default=false)
    )
    op.add_column(
        "conversations", sa.Column("pinned", sa.Boolean(), nullable=False, server_default=false)
    )
    op.add_column(
        "conversations", sa.Column("tags", sa.Text(), nullable=False, server_default="[]")
    )
    op.add_column("conversations", sa.Column("last_read_message_id", sa.Integer(), nullable=True))
    op.add_column("conversations", sa.Column("last_read_at", UTCDateTime(), nullable=True))
    op.create_table(
        "conversation_tags",
        sa.Column(
            "conversation_id",
            sa.String(36),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tag_key", sa.Text(), nullable=False),
        sa.Column("tag", sa.String(50), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "tag_key"),
    )
    op.create_index("ix_conversation_tags_key", "conversation_tags", ["tag_key", "conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_conversation_tags_key", "conversation_tags")
    op.drop_table("conversation_tags")
    for column in ("last_read_at", "last_read_message_id", "tags", "pinned", "archived"):
        op.drop_column("conversations", column)
