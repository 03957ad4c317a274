"""Branches (issue 15): `messages.parent_id`, `messages.on_branch` and
`conversations.current_leaf_id` (the design: `db.branches`).

Every message stored so far is on its conversation's one branch: its parent is the message
before it by (`created_at`, id), it is on the active branch, and the conversation's current leaf
is its last message. The backfill is set-based on both databases (a window function joined in
one `UPDATE ... FROM`, which SQLite has since 3.33): no Python loop over rows. Measured on a
million messages on this busy 2-core machine: SQLite 11 s for the UPDATE (see its branch below
for why it reads a table of the parents); PostgreSQL 90 s, of which 56 s is what any UPDATE of
every row costs on the throwaway cluster (128 MB of shared buffers): the backfill rewrites each
row once, and that rewrite, not the window or the join, is the cost.
Columns are added with plain ADD COLUMN (constant defaults: no table rewrite on PostgreSQL, none
on SQLite), never SQLite's batch mode, which would copy `messages` and drop the search triggers
of 0008 (which fire on `UPDATE OF content` alone, so the backfill does not touch the index).

Revision ID: 0011_branches
Revises: 0010_streams
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_branches"
down_revision = "0010_streams"
branch_labels = None
depends_on = None

# Each message's parent: the message before it in its conversation, by (created_at, id).
PARENTS = (
    "SELECT id, lag(id) OVER (PARTITION BY conversation_id ORDER BY created_at, id) AS parent_id"
    " FROM messages"
)


def upgrade() -> None:
    op.add_column("messages", sa.Column("parent_id", sa.Integer(), nullable=True))
    op.add_column(
        "messages",
        sa.Column("on_branch", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("conversations", sa.Column("current_leaf_id", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite would walk `messages` by the conversation index and update rows in that
        # (random) order: the parents go to a table of their own first, which the UPDATE then
        # scans in id order, writing `messages` in its own order (a million rows: seconds).
        op.execute("CREATE TEMP TABLE branch_parents (id INTEGER PRIMARY KEY, parent_id INTEGER)")
        op.execute(f"INSERT INTO branch_parents {PARENTS}")
        op.execute(
            "UPDATE messages NOT INDEXED SET parent_id = p.parent_id FROM branch_parents AS p"
            " WHERE messages.id = p.id AND p.parent_id IS NOT NULL"
        )
        op.execute("DROP TABLE branch_parents")
    else:
        op.execute(
            f"UPDATE messages SET parent_id = p.parent_id FROM ({PARENTS}) AS p"
            " WHERE messages.id = p.id AND p.parent_id IS NOT NULL"
        )
    op.execute(
        """
        UPDATE conversations SET current_leaf_id = (
            SELECT m.id FROM messages AS m WHERE m.conversation_id = conversations.id
            ORDER BY m.created_at DESC, m.id DESC LIMIT 1
        )
        """
    )
    op.create_index(
        "ix_messages_branch",
        "messages",
        ["conversation_id", "created_at", "id"],
        postgresql_where=sa.text("on_branch"),
        sqlite_where=sa.text("on_branch = 1"),
    )
    op.create_index("ix_messages_parent", "messages", ["conversation_id", "parent_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_parent", "messages")
    op.drop_index("ix_messages_branch", "messages")
    op.drop_column("conversations", "current_leaf_id")
    op.drop_column("messages", "on_branch")
    op.drop_column("messages", "parent_id")
