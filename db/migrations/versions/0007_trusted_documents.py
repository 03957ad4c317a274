"""Trusted documents (manifests of operations, issue 18) and the shared cost budgets.

Revision ID: 0007_trusted_documents
Revises: 0006_change_feed
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0007_trusted_documents"
down_revision = "0006_change_feed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trusted_manifests",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("loaded_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "trusted_documents",
        sa.Column(
            "manifest",
            sa.String(100),
            sa.ForeignKey("trusted_manifests.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("document_id", sa.String(200), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("operation_name", sa.String(200), nullable=True),
    )
    op.create_index("ix_trusted_documents_sha256", "trusted_documents", ["sha256"])
    op.create_table(
        "cost_budgets",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("spent", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cost_budgets")
    op.drop_index("ix_trusted_documents_sha256", "trusted_documents")
    op.drop_table("trusted_documents")
    op.drop_table("trusted_manifests")
