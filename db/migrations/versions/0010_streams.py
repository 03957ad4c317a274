"""Streamed answers, model and usage (issue 15): message status, model, token usage, stream
state, and the append-only `message_chunks` table (see `db.streams` for the design).

Columns are added with plain ADD COLUMN (constant defaults), never SQLite's batch mode, which
would copy `messages` and drop the search triggers of 0008.

Revision ID: 0010_streams
Revises: 0009_organize
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0010_streams"
down_revision = "0009_organize"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "messages", sa.Column("status", sa.String(16), nullable=False, server_default="COMPLETE")
    )
    op.add_column("messages", sa.Column("model", sa.String(100), nullable=True))
    op.add_column("messages", sa.Column("input_tokens", sa.Integer, nullable=True))
    op.add_column("messages", sa.Column("output_tokens", sa.Integer, nullable=True))
    op.add_column(
        "messages", sa.Column("stream_seq", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column(
        "messages", sa.Column("stream_length", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("messages", sa.Column("stream_touched_at", UTCDateTime, nullable=True))
    # The sweep finds the few streaming messages; appends change no indexed column (HOT).
    op.create_index(
        "ix_messages_streaming",
        "messages",
        ["id"],
        postgresql_where=sa.text("status = 'STREAMING'"),
        sqlite_where=sa.text("status = 'STREAMING'"),
    )
    op.create_table(
        "message_chunks",
        sa.Column(
            "message_id",
            sa.Integer,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("delta", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("message_chunks")
    op.drop_index("ix_messages_streaming", "messages")
    for column in (
        "stream_touched_at",
        "stream_length",
        "stream_seq",
        "output_tokens",
        "input_tokens",
        "model",
        "status",
    ):
        op.drop_column("messages", column)
