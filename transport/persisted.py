"""Automatic persisted queries (Apollo's protocol), shared by every process on one database.

A client sends `extensions.persistedQuery = {"version": 1, "sha256Hash": h}`. With no query,
the server looks `h` up (an in-process LRU in front of the `persisted_queries` table) and
answers PERSISTED_QUERY_NOT_FOUND when it has none; the client then sends the query with the
hash, which registers it.

A registration is checked before anything runs: text no database keeps (a NUL, a lone
surrogate) is BAD_USER_INPUT (field `query`), a document over `Bounds.max_bytes`
QUERY_TOO_COMPLEX, and a wrong hash 400. The query is stored once it has parsed and validated
and nothing has refused it, before it runs (`StoreRegistered`), and only for a logged-in
viewer: anyone else's runs but is not stored (Apollo's link sends the whole query again after
each PERSISTED_QUERY_NOT_FOUND, and logging in and signing up are all an anonymous client
does). So a request that stores and then fails stored nothing, or failed before its operation
ran: a client that retries never runs a mutation twice. The table keeps at most
`Bounds.max_rows` queries, each for `Bounds.ttl` seconds.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import PreExecutionError

from db.engine import read_session, write_transaction
from db.models import utcnow
from db.persisted_queries import get_persisted_query, save_persisted_query
from schema.errors import INTERNAL, PersistedQueryNotFound
from schema.limits import DOCUMENT, TEXT_REFUSED
from schema.trusted import TrustedDocuments
from schema.validation import text_problem
from transport.responses import Refusal

# Apollo clients recognise the message as well as the code.
NOT_FOUND = "PersistedQueryNotFound"
HASH_MISMATCH = "The persisted query's sha256Hash is not the SHA-256 of the query."
BAD_EXTENSION = 'extensions.persistedQuery must be {"version": 1, "sha256Hash": "<64 hex digits>"}.'
TOO_LARGE = "A persisted query may have {limit} bytes; this one has {actual}."
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Bounds:
    """How much the table keeps: documents of at most `max_bytes` (UTF-8), at most `max_rows`
    of them (the oldest dropped first), each for `ttl` seconds after it was stored."""

    max_bytes: int = 16_384
    max_rows: int = 5_000
    ttl: int = 2_592_000


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


@dataclass
class Registration:
    """A query a request registers, stored by `StoreRegistered` before the operation runs;
    `failure` is why storing it failed (the view answers 500 with it)."""

    store: PersistedQueries
    sha256: str
    query: str
    failure: Exception | None = None


class PersistedQueries:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        capacity: int,
        bounds: Bounds | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.capacity = capacity
        self.bounds = bounds or Bounds()
        self.recent: OrderedDict[str, str] = OrderedDict()

    def stored_since(self) -> datetime:
        return utcnow() - timedelta(seconds=self.bounds.ttl)

    async def get(self, sha256: str) -> str | None:
        query = self.recent.get(sha256)
        if query is not None:
            self.recent.move_to_end(sha256)
            return query
        if not SHA256.fullmatch(sha256):
            return None
        # Misses are not remembered: another process may register the query at any moment.
        async with read_session(self.sessionmaker) as session:
            query = await get_persisted_query(
                session, sha256=sha256, stored_since=self.stored_since()
            )
        if query is not None:
            self.remember(sha256, query)
        return query

    async def add(self, sha256: str, query: str) -> None:
        if sha256 in self.recent:
            return
        async with write_transaction(self.sessionmaker) as session:
            await save_persisted_query(
                session,
                sha256=sha256,
                query=query,
                max_rows=self.bounds.max_rows,
                stored_since=self.stored_since(),
            )
        self.remember(sha256, query)

    def remember(self, sha256: str, query: str) -> None:
        self.recent[sha256] = query
        self.recent.move_to_end(sha256)
        while len(self.recent) > self.capacity:
            self.recent.popitem(last=False)

    async def resolve(self, sha256: str, query: str | None) -> tuple[str, Registration | None]:
        """The query to run, and its registration when it is to be stored."""
        if query is None:
            found = await self.get(sha256)
            if found is None:
                raise Refusal(None, NOT_FOUND, code="PERSISTED_QUERY_NOT_FOUND")
            return found, None
        self.check(query)
        if query_hash(query) != sha256:
            raise Refusal(
                400,
                HASH_MISMATCH,
                code="BAD_USER_INPUT",
                fields={"sha256Hash": "is not the SHA-256 of the query"},
            )
        if sha256 in self.recent:
            return query, None
        return query, Registration(self, sha256, query)

    def check_hash(self, sha256: str, query: str | None) -> None:
        """Under trusted documents' enforce mode nothing registers, but a query sent with a
        hash that is not its own is still 400."""
        if query is not None and query_hash(query) != sha256:
            raise Refusal(
                400,
                HASH_MISMATCH,
                code="BAD_USER_INPUT",
                fields={"sha256Hash": "is not the SHA-256 of the query"},
            )

    def check(self, query: str) -> None:
        """Refuse a document the table cannot keep, before anything runs."""
        problem = text_problem(query)
        if problem:
            raise Refusal(None, TEXT_REFUSED, code="BAD_USER_INPUT", fields={DOCUMENT: problem})
        size = len(query.encode())
        if size > self.bounds.max_bytes:
            limit = self.bounds.max_bytes
            raise Refusal(
                None,
                TOO_LARGE.format(limit=limit, actual=size),
                code="QUERY_TOO_COMPLEX",
                limit=limit,
                actual=size,
            )


# Where a request names a trusted document by its id alone: the GraphQL-over-HTTP draft's
# `documentId`, Relay's `doc_id` (its documentation's fetch function), or `id`.
DOCUMENT_ID_KEYS = ("documentId", "doc_id", "id")


async def document_id(request: Request) -> str | None:
    """The id a request with no query names its document by, if any (see DOCUMENT_ID_KEYS)."""
    if request.method == "GET":
        source: Any = request.query_params
    else:
        try:
            source = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        if not isinstance(source, dict):
            return None
    for key in DOCUMENT_ID_KEYS:
        found = source.get(key)
        if isinstance(found, str) and found:
            return found
    return None


async def trusted_text(trusted: TrustedDocuments, key: str, *, fallback: bool) -> str | None:
    """The text of the trusted document a request names by hash or id alone. Unknown, it is
    PERSISTED_QUERY_NOT_FOUND; except in audit mode for an APQ hash (`fallback`): None, and
    the APQ store is asked."""
    try:
        return await trusted.lookup(key)
    except PersistedQueryNotFound as error:
        if trusted.enforcing or not fallback:
            raise Refusal(None, error.message, code=error.code) from None
        return None


def registration_of(request: object) -> Registration | None:
    if not isinstance(request, Request):
        return None
    registration: Registration | None = getattr(request.state, "registration", None)
    return registration


class StoreRegistered(SchemaExtension):
    """Stores the query a request registers (see the module), once it has parsed and
    validated, after the checks of the extensions before this one and before it runs. A
    failure to store leaves the operation unrun and is the request's 500."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        registration = registration_of(getattr(context, "request", None))
        if (
            registration is not None
            and execution.result is None
            and getattr(context, "viewer", None) is not None
        ):
            try:
                await registration.store.add(registration.sha256, registration.query)
            except Exception as exc:  # answered by the view: nothing has run
                registration.failure = exc
                error = GraphQLError(INTERNAL, extensions={"code": "INTERNAL_SERVER_ERROR"})
                execution.result = PreExecutionError(data=None, errors=[error])
        yield
