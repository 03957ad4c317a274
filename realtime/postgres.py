"""The PostgreSQL backend: NOTIFY inside the writing transaction, LISTEN on one connection.

NOTIFY is transactional: PostgreSQL delivers a notification only when its transaction commits,
and delivers transactions in commit order, so a rolled-back message is never announced. The
payload carries ids only (`<conversation id>:<id>,<id>,...`), split to stay under PostgreSQL's
8000-byte limit; subscribers load the messages themselves, through the loaders.

The same connection LISTENs on `db.changes.FEED_CHANNEL`, where every write that records
changes announces `<user id>:<head>` (from the recording statement itself); the hub wakes that
user's feed subscribers, who read the feed themselves.

Each process holds one dedicated asyncpg connection that LISTENs. When it dies (database restart,
`pg_terminate_backend`, a network cut caught by the periodic health check) it is opened again
with exponential backoff. Notifications sent while it was down are lost to this process: once
LISTEN is in place again, the hub tells every feed subscriber to read its feed again from its
last delivered position (`Hub.resync`), so the `changes` subscription loses nothing, and
every `messageAdded` subscriber reads its conversation's messages above the last one it
delivered (see `schema.subscriptions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from db.changes import FEED_CHANNEL
from db.notifications import notify
from realtime.background import stop
from realtime.hub import Hub

logger = logging.getLogger("chatql.realtime")

CHANNEL = "chatql_messages"
APPLICATION_NAME = "chatql-listener"
# PostgreSQL refuses payloads of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7900
FIRST_RETRY_SECONDS = 0.1
LAST_RETRY_SECONDS = 5.0
HEALTH_CHECK_SECONDS = 10.0
FIRST_CONNECT_SECONDS = 10.0


def encode(conversation_id: str, message_ids: Sequence[int]) -> list[str]:
    """Payloads announcing `message_ids`, in order, each under the size limit; for no ids,
    one payload with none (who may see the conversation changed: `Hub.deliver`)."""
    payloads: list[str] = []
    prefix = f"{conversation_id}:"
    current: list[str] = []
    size = len(prefix)
    for message_id in message_ids:
        text = str(message_id)
        if current and size + len(text) + 1 > MAX_PAYLOAD_BYTES:
            payloads.append(prefix + ",".join(current))
            current, size = [], len(prefix)
        current.append(text)
        size += len(text) + 1
    if current or not payloads:  # no ids at all: "<conversation id>:", an access change
        payloads.append(prefix + ",".join(current))
    return payloads


def decode(payload: str) -> tuple[str, list[int]]:
    conversation_id, _, ids = payload.rpartition(":")
    return conversation_id, [int(text) for text in ids.split(",") if text]


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (`postgresql+asyncpg://...`) as a plain libpq DSN for asyncpg."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBroker:
    notify_channel: str | None = CHANNEL

    def __init__(self, database_url: str, hub: Hub) -> None:
        self.hub = hub
        self._dsn = asyncpg_dsn(database_url)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.connection: asyncpg.Connection | None = None

    async def publish(
        self, session: AsyncSession, *, conversation_id: str, message_ids: Sequence[int]
    ) -> None:
        await notify(session, channel=CHANNEL, payloads=encode(conversation_id, message_ids))

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place (or after a while)."""
        self._task = asyncio.create_task(self._listen_forever(), name="chatql-listener")
        try:
            await asyncio.wait_for(self._connected.wait(), FIRST_CONNECT_SECONDS)
        except TimeoutError:
            logger.error("the LISTEN connection is not up yet; retrying in the background")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _listen_forever(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                await self._listen_once()
                delay = FIRST_RETRY_SECONDS
                await asyncio.sleep(delay)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                logger.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAST_RETRY_SECONDS)

    async def _listen_once(self) -> None:
        lost = asyncio.Event()
        connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(CHANNEL, self._on_notification)
            await connection.add_listener(FEED_CHANNEL, self._on_feed_notification)
            self.connection = connection
            # Whatever was announced while no LISTEN was in place is lost: readers read again.
            self.hub.resync()
            self._connected.set()
            logger.info("listening on %s", CHANNEL)
            while not lost.is_set() and not connection.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), HEALTH_CHECK_SECONDS)
                    break
                await connection.fetchval("SELECT 1", timeout=HEALTH_CHECK_SECONDS)
            logger.warning("the LISTEN connection was lost; reconnecting")
        finally:
            self.connection = None
            if not connection.is_closed():
                connection.terminate()

    def _on_notification(self, _: Any, __: int, ___: str, payload: str) -> None:
        try:
            conversation_id, message_ids = decode(payload)
        except ValueError:
            logger.error("ignoring a malformed notification on %s: %r", CHANNEL, payload[:200])
            return
        self.hub.deliver(conversation_id, message_ids)

    def _on_feed_notification(self, _: Any, __: int, ___: str, payload: str) -> None:
        user_id, _sep, head = payload.partition(":")
        try:
            self.hub.deliver_feed(int(user_id), int(head))
        except ValueError:
            logger.error("ignoring a malformed notification on %s: %r", FEED_CHANNEL, payload[:200])
