"""Trusted documents (issue 18): the operations an operator's apps ship with, and only those.

Where the design comes from: Apollo's persisted-query safelists, GraphQL Yoga's and
PostGraphile's persisted operations, Relay's persisted queries. A manifest is loaded with
`python server.py trust FILE` (`load_manifest`), in either format:

- Apollo's `generate-persisted-query-manifest`: `{"format": "apollo-persisted-query-manifest",
  "version": 1, "operations": [{"id": sha256, "body": text, "name": ..., "type": ...}]}`; each
  `id` must be the SHA-256 of its `body`;
- Relay's `--persist-output`: a flat object `{id: text}`, the ids Relay's own (an MD5 by
  default): taken as given.

Either way the SHA-256 of each text is stored too, so a client of the APQ protocol
(`extensions.persistedQuery.sha256Hash`) finds it. Manifests are named (the file's name unless
`--name`), so a release adds its set and retires an older one (`--retire NAME`).

`CHATQL_TRUSTED_DOCUMENTS` is `off`, `audit` (everything runs; an operation whose text is in no
manifest is counted, `chatql_untrusted_operations`, and its log line has `"trusted": false`)
or `enforce` (only those run; anything else is PERSISTED_QUERY_REQUIRED, a request error,
except for admins with `CHATQL_TRUSTED_DOCUMENTS_ADMIN_BYPASS`, so GraphiQL stays theirs; a
hash or id no manifest has is PERSISTED_QUERY_NOT_FOUND; APQ registers nothing).

Each process keeps every trusted text in memory (a manifest is some hundreds of operations),
and polls the manifests' names and load times at most once per `interval` (1 s): one
statement a second, whatever the traffic. A manifest loaded by one process is therefore seen
by every other within a second. Every transport admits an operation through `admit` (HTTP
POST and GET, SSE, the fast lane, both WebSocket protocols) before anything parses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import read_session, write_transaction
from db.errors import Unavailable
from db.trusted_documents import (
    Operation,
    all_documents,
    manifest_version,
    retire_manifest,
    save_manifest,
)
from loaders import Viewer
from schema.errors import PersistedQueryNotFound, PersistedQueryRequired

logger = logging.getLogger("chatql.trusted")

APOLLO_FORMAT = "apollo-persisted-query-manifest"
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_NAME = 100
MAX_ID = 200


class Mode(StrEnum):
    OFF = "off"
    AUDIT = "audit"
    ENFORCE = "enforce"


class ManifestError(ValueError):
    """A manifest that cannot be loaded, said in one line."""


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_manifest(text: str) -> list[Operation]:
    """The operations of an Apollo or a Relay manifest (see the module); `ManifestError` for
    anything else, or for an Apollo id that is not the SHA-256 of its body."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError("a manifest is a JSON object")
    if data.get("format") == APOLLO_FORMAT:
        return _apollo(data)
    if all(isinstance(value, str) for value in data.values()):
        return [_operation(str(key), body, None) for key, body in data.items()]
    raise ManifestError(
        f'neither Apollo\'s ("format": "{APOLLO_FORMAT}") nor Relay\'s ({{"id": "text", ...}})'
    )


def _apollo(data: dict[str, Any]) -> list[Operation]:
    if data.get("version") != 1:
        raise ManifestError(f"{APOLLO_FORMAT} version {data.get('version')!r} is not 1")
    operations = data.get("operations")
    if not isinstance(operations, list):
        raise ManifestError("operations must be a list")
    found = []
    for index, entry in enumerate(operations):
        if not isinstance(entry, dict):
            raise ManifestError(f"operations[{index}] is not an object")
        key, body, name = entry.get("id"), entry.get("body"), entry.get("name")
        if not isinstance(key, str) or not isinstance(body, str):
            raise ManifestError(f"operations[{index}] needs a string id and body")
        if key.lower() != sha256_of(body):
            raise ManifestError(f"operations[{index}]: id {key} is not the SHA-256 of its body")
        found.append(_operation(key.lower(), body, name if isinstance(name, str) else None))
    return found


def _operation(key: str, body: str, name: str | None) -> Operation:
    if not key or len(key) > MAX_ID:
        raise ManifestError(f"an id has 1 to {MAX_ID} characters: {key[:40]!r}")
    if "\x00" in body:
        raise ManifestError(f"the body of {key} has a NUL character")
    return Operation(document_id=key, sha256=sha256_of(body), body=body, name=name)


async def load_manifest(
    sessionmaker: async_sessionmaker[AsyncSession], *, name: str, operations: list[Operation]
) -> None:
    """Store a manifest under `name` (replacing one of that name), for every process."""
    if not name or len(name) > MAX_NAME:
        raise ManifestError(f"a manifest's name has 1 to {MAX_NAME} characters")
    async with write_transaction(sessionmaker) as session:
        await save_manifest(session, name=name, operations=operations)


async def retire(sessionmaker: async_sessionmaker[AsyncSession], *, name: str) -> bool:
    """Delete the manifest `name`; False when there is none."""
    async with write_transaction(sessionmaker) as session:
        return await retire_manifest(session, name=name)


@dataclass(frozen=True)
class Known:
    """What every manifest holds together: text by id and by SHA-256, and the texts."""

    by_key: dict[str, str]
    bodies: frozenset[str]


NOTHING = Known({}, frozenset())


class TrustedDocuments:
    """The process's copy of every manifest, refreshed when the manifests change (polled at
    most once per `interval` seconds of `clock`). `untrusted` is told of each operation
    audit mode lets through (the request log and the metric, from `ops`)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        mode: Mode,
        admin_bypass: bool = False,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        untrusted: Callable[[], None] = lambda: None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.mode = Mode(mode)
        self.admin_bypass = admin_bypass
        self.interval = interval
        self.clock = clock
        self.untrusted = untrusted
        self.known = NOTHING
        self.version: tuple[tuple[str, datetime], ...] | None = None
        self.checked: float | None = None
        self.lock = asyncio.Lock()

    @property
    def enforcing(self) -> bool:
        return self.mode is Mode.ENFORCE

    async def refresh(self) -> None:
        """Reload the documents if the manifests changed since the last look, at most once per
        `interval`; concurrent requests wait for one look. A database that does not answer
        (`db.errors.Unavailable`) leaves a copy already loaded as it was until the next
        interval; with none loaded yet, the request is SERVICE_UNAVAILABLE."""
        now = self.clock()
        if self.checked is not None and now - self.checked < self.interval:
            return
        async with self.lock:
            if self.checked is not None and self.clock() - self.checked < self.interval:
                return
            try:
                async with read_session(self.sessionmaker) as session:
                    version = await manifest_version(session)
                    if version != self.version:
                        documents = await all_documents(session)
                        by_key = {doc.sha256: doc.body for doc in documents}
                        by_key.update({doc.document_id: doc.body for doc in documents})
                        self.known = Known(by_key, frozenset(by_key.values()))
                        self.version = version
            except Unavailable as exc:
                if self.version is None:
                    raise
                logger.warning("trusted documents not refreshed: %s", exc)
            self.checked = self.clock()

    async def lookup(self, key: str) -> str:
        """The text of the document with this id or SHA-256; PersistedQueryNotFound if none."""
        await self.refresh()
        body = self.known.by_key.get(key) or self.known.by_key.get(key.lower())
        if body is None:
            raise PersistedQueryNotFound()
        return body

    async def check(self, query: str, viewer: Viewer | None) -> None:
        """Let `query` run, or raise PersistedQueryRequired (enforce mode)."""
        await self.refresh()
        if query in self.known.bodies:
            return
        if self.mode is Mode.AUDIT:
            self.untrusted()
            return
        if self.admin_bypass and viewer is not None and viewer.is_admin:
            return
        raise PersistedQueryRequired()


# In a context's extras: the text admitted already (the fast lane's, when it hands over).
ADMITTED = "trusted_admitted"


async def admit(context: Any, query: str) -> None:
    """The one admission check every transport makes for an operation before it is parsed,
    with the operation's own context (its viewer): nothing when trusted documents are off.
    Raises PersistedQueryRequired (enforce mode)."""
    trusted: TrustedDocuments | None = context.services.trusted
    if trusted is None or context.extras.get(ADMITTED) == query:
        return
    await trusted.check(query, context.viewer)
    context.extras[ADMITTED] = query
