"""Login attempts of every kind: failures, successful logins and sign-ups, each counted per
client address (issue 11).

Revision ID: 0004_login_limits
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_login_limits"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every row so far is a failure.
    with op.batch_alter_table("login_failures") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="failure"))


def downgrade() -> None:
    op.execute("DELETE FROM login_failures WHERE kind <> 'failure'")
    with op.batch_alter_table("login_failures") as batch:
        batch.drop_column("kind")
