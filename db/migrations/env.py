"""Alembic environment: runs on the connection handed over by `db.migrate`.

Making the migration context logs "Context impl ..." and "Will assume ... DDL" at INFO on
every run, so every command would open with them: they are silenced while it is made. Each
upgrade it then runs is still logged ("Running upgrade 0002 -> 0003, ...").
"""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy.engine import Connection

from db.models import Base
from db.search import is_search_object

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `python server.py migrate`")

announcer = logging.getLogger("alembic.runtime.migration")
level = announcer.level
announcer.setLevel(logging.WARNING)
try:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Search's column, index and FTS5 tables are left out of the models (db/search.py).
        include_name=lambda name, *_: not is_search_object(name),
    )
finally:
    announcer.setLevel(level)
with context.begin_transaction():
    context.run_migrations()
