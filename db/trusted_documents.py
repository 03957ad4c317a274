"""Data access for trusted documents: named manifests of operations, shared by every process.

A manifest is loaded whole, in one transaction, replacing one of the same name; retiring one
deletes it and its documents (the foreign key cascades).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import TrustedDocument, TrustedManifest, utcnow

manifests = cast(Table, TrustedManifest.__table__)
documents = cast(Table, TrustedDocument.__table__)


@dataclass(frozen=True)
class Operation:
    """One operation of a manifest: the id it names it by, the SHA-256 of its text, the text,
    and its operation name when the manifest gives one."""

    document_id: str
    sha256: str
    body: str
    name: str | None = None


async def save_manifest(
    session: AsyncSession, *, name: str, operations: Sequence[Operation]
) -> None:
    """Store `operations` as the manifest `name`, replacing any manifest of that name."""
    await session.execute(delete(manifests).where(manifests.c.name == name))
    await session.execute(insert(manifests).values(name=name, loaded_at=utcnow()))
    if operations:
        await session.execute(
            insert(documents),
            [
                {
                    "manifest": name,
                    "document_id": operation.document_id,
                    "sha256": operation.sha256,
                    "body": operation.body,
                    "operation_name": operation.name,
                }
                for operation in operations
            ],
        )


async def retire_manifest(session: AsyncSession, *, name: str) -> bool:
    """Delete the manifest `name` and its documents; False when there was none."""
    # Documents first: SQLite enforces the cascade only with its foreign keys switched on.
    await session.execute(delete(documents).where(documents.c.manifest == name))
    result = await session.execute(delete(manifests).where(manifests.c.name == name))
    return bool(getattr(result, "rowcount", 0))


async def manifest_version(session: AsyncSession) -> tuple[tuple[str, datetime], ...]:
    """Each manifest's name and load time: it changes whenever a manifest is loaded or
    retired. One statement over a handful of rows."""
    rows = await session.execute(
        select(manifests.c.name, manifests.c.loaded_at).order_by(manifests.c.name)
    )
    return tuple((row.name, row.loaded_at) for row in rows)


async def all_documents(session: AsyncSession) -> list[Operation]:
    rows = await session.execute(
        select(
            documents.c.document_id,
            documents.c.sha256,
            documents.c.body,
            documents.c.operation_name,
        )
    )
    return [Operation(row.document_id, row.sha256, row.body, row.operation_name) for row in rows]
