"""Full-text search over messages (issue 16): each database's own index, built for every row.

PostgreSQL: a stored generated `tsvector` column (`to_tsvector('english', content)`, kept by
the database on every insert and update) with a GIN index. The 'english' configuration
stems with Snowball ("running" finds "run", as RULES.md asks) and drops English stop words;
it keeps accents ("café" and "cafe" are different words), as SQLite's index below does.

SQLite: an FTS5 external-content table over `messages` (`porter unicode61`, diacritics kept)
kept by triggers on insert, update of `content` and delete (a conversation's cascade deletes
fire them too). A later migration that rebuilds `messages` (SQLite's batch mode copies the
table and drops the old one, and its triggers with it) must create the triggers again:
`db.search.sqlite_triggers()` gives them.

Revision ID: 0008_search
Revises: 0007_trusted_documents
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

from db.search import (
    POSTGRES_CONFIG,
    SEARCH_INDEX,
    SEARCH_TABLE,
    SEARCH_VECTOR,
    sqlite_triggers,
)

revision = "0008_search"
down_revision = "0007_trusted_documents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Adding a stored generated column rewrites the table, computing it for every row.
        op.execute(
            f"ALTER TABLE messages ADD COLUMN {SEARCH_VECTOR} tsvector "
            f"GENERATED ALWAYS AS (to_tsvector('{POSTGRES_CONFIG}', content)) STORED"
        )
        op.execute(f"CREATE INDEX {SEARCH_INDEX} ON messages USING gin ({SEARCH_VECTOR})")
        return
    op.execute(
        f"CREATE VIRTUAL TABLE {SEARCH_TABLE} USING fts5(content, content='messages', "
        "content_rowid='id', tokenize='porter unicode61 remove_diacritics 0')"
    )
    for statement in sqlite_triggers():
        op.execute(statement)
    op.execute(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX {SEARCH_INDEX}")
        op.execute(f"ALTER TABLE messages DROP COLUMN {SEARCH_VECTOR}")
        return
    for trigger in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER {SEARCH_TABLE}_{trigger}")
    op.execute(f"DROP TABLE {SEARCH_TABLE}")
