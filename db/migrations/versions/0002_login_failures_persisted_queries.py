"""Failed logins (rate limits shared by every process) and automatic persisted queries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("login", sa.String(100), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("failed_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_login_failures_login_at", "login_failures", ["login", "failed_at"])
    op.create_index(
        "ix_login_failures_address_at", "login_failures", ["client_address", "failed_at"]
    )
    op.create_table(
        "persisted_queries",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("query", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("persisted_queries")
    op.drop_table("login_failures")
