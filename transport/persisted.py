"""Automatic persisted queries (Apollo's protocol), shared by every process on one database.

A client sends `extensions.persistedQuery = {"version": 1, "sha256Hash": h}`. With no query,
the server looks `h` up (an in-process LRU in front of the `persisted_queries` table) and
answers PERSISTED_QUERY_NOT_FOUND when it has none; the client then sends the query with the
hash, which is checked and, once the query has passed validation, stored for every process.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import read_session, write_transaction
from db.persisted_queries import get_persisted_query, save_persisted_query
from transport.responses import Refusal

# Apollo clients recognise the message as well as the code.
NOT_FOUND = "PersistedQueryNotFound"
HASH_MISMATCH = "The persisted query's sha256Hash is not the SHA-256 of the query."
BAD_EXTENSION = 'extensions.persistedQuery must be {"version": 1, "sha256Hash": "<64 hex digits>"}.'
SHA256 = re.compile(r"[0-9a-f]{64}")


def query_hash(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def requested_hash(extensions: dict[str, Any] | None) -> str | None:
    """The hash a request names, if it uses persisted queries; a malformed extension is 400."""
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise Refusal(400, BAD_EXTENSION)
    sha256 = persisted.get("sha256Hash")
    if not isinstance(sha256, str):
        raise Refusal(400, BAD_EXTENSION)
    return sha256.lower()


class PersistedQueries:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, capacity: int) -> None:
        self.sessionmaker = sessionmaker
        self.capacity = capacity
        self.recent: OrderedDict[str, str] = OrderedDict()

    async def get(self, sha256: str) -> str | None:
        query = self.recent.get(sha256)
        if query is not None:
            self.recent.move_to_end(sha256)
            return query
        if not SHA256.fullmatch(sha256):
            return None
        # Misses are not remembered: another process may register the query at any moment.
        async with read_session(self.sessionmaker) as session:
            query = await get_persisted_query(session, sha256=sha256)
        if query is not None:
            self.remember(sha256, query)
        return query

    async def add(self, sha256: str, query: str) -> None:
        if sha256 in self.recent:
            return
        async with write_transaction(self.sessionmaker) as session:
            await save_persisted_query(session, sha256=sha256, query=query)
        self.remember(sha256, query)

    def remember(self, sha256: str, query: str) -> None:
        self.recent[sha256] = query
        self.recent.move_to_end(sha256)
        while len(self.recent) > self.capacity:
            self.recent.popitem(last=False)

    async def resolve(self, sha256: str, query: str | None) -> tuple[str, bool]:
        """The query to run, and whether to store it once it has passed validation."""
        if query is None:
            found = await self.get(sha256)
            if found is None:
                raise Refusal(None, NOT_FOUND, code="PERSISTED_QUERY_NOT_FOUND")
            return found, False
        if query_hash(query) != sha256:
            raise Refusal(
                400,
                HASH_MISMATCH,
                code="BAD_USER_INPUT",
                fields={"sha256Hash": "is not the SHA-256 of the query"},
            )
        return query, sha256 not in self.recent
