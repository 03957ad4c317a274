"""Database faults (issue 11): a database that is slow, stalled or drops its connections.

Waits end in SERVICE_UNAVAILABLE (HTTP 503 with `Retry-After` when nothing was answered) within
their time limits; reads survive broken connections; a write whose connection broke answers
SERVICE_UNAVAILABLE, and resending it with its clientId stores it once. Timeouts are short so
that the whole module takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.settings import Settings
from db.models import Message, User
from ops.health import NOT_READY, READY
from schema.errors import UNAVAILABLE
from tests.conftest import ApiFactory
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, running
from tests.ws import LEGACY_WS, PROTOCOLS, Event, asgi_socket

# Seconds a request may take past the limit that should end it (a busy 2-core test machine).
SLACK = 1.0
# Seconds after which a request is taken to hang.
HOPELESS = 10.0
SEND = "mutation ($input: SendMessageInput!) { sendMessage(input: $input) { content clientId } }"
SIGN_UP = "mutation ($input: SignUpInput!) { signUp(input: $input) { user { username } } }"
ME = "query Me { me { username } }"
READ = """query Read($id: ID!) {
  me { username conversations(first: 5) { totalCount edges { node { title messageCount } } } }
  conversation(id: $id) { title messages(first: 5) { edges { node { content } } } }
}"""
RETRYABLE = {"code": "SERVICE_UNAVAILABLE", "retryAfter": 1}
# What a request refused before its operation ran (the viewer's lookup failed) is answered.
REFUSED = {"errors": [{"message": UNAVAILABLE, "extensions": RETRYABLE}]}


def field_failed(document: str, field: str, *, nullable: bool = False) -> dict[str, Any]:
    """The answer of a one-line operation whose one top-level `field` failed for want of the
    database."""
    return {
        "data": {field: None} if nullable else None,
        "errors": [
            {
                "message": UNAVAILABLE,
                "locations": [{"line": 1, "column": document.index(field) + 1}],
                "path": [field],
                "extensions": RETRYABLE,
            }
        ],
    }


def assert_unavailable(response: httpx.Response, expected: dict[str, Any]) -> None:
    assert (response.status_code, response.headers.get("retry-after")) == (503, "1")
    assert response.json() == expected


def send_input(conversation_id: str, client_id: str) -> dict[str, Any]:
    return {
        "input": {
            "conversationId": gid("Conversation", conversation_id),
            "content": f"hello {client_id}",
            "clientId": client_id,
        }
    }


def sign_up_input(name: str) -> dict[str, Any]:
    return {"input": {"username": name, "email": f"{name}@example.com", "password": "long enough"}}


async def stored_messages(sessionmaker: Sessionmaker, conversation_id: str) -> list[str | None]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Message.client_id)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id)
        )
        return list(rows.scalars())


async def user_count(sessionmaker: Sessionmaker) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


async def postgres(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )


@contextlib.asynccontextmanager
async def write_lock(database_url: str) -> AsyncIterator[None]:
    """Another client holding what every write needs: SQLite's one write lock; on PostgreSQL
    an EXCLUSIVE lock on `users` and `conversations` (plain reads go on)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        holder = sqlite3.connect(url.database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
        finally:
            holder.close()
        return
    connection = await postgres(database_url)
    try:
        async with connection.transaction():
            await connection.execute("LOCK TABLE users, conversations IN EXCLUSIVE MODE")
            yield
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def table_lock(database_url: str, table: str) -> AsyncIterator[None]:
    """On PostgreSQL, another client holding an ACCESS EXCLUSIVE lock on `table`: every
    statement that reads it waits."""
    connection = await postgres(database_url)
    try:
        async with connection.transaction():
            await connection.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await connection.close()


async def timed(request: Any) -> tuple[httpx.Response, float]:
    """The response, and the seconds it took (failing past `HOPELESS`)."""
    started = time.perf_counter()
    async with asyncio.timeout(HOPELESS):
        response = await request
    return response, time.perf_counter() - started


# ---- waits: statements, pool checkouts -----------------------------------------------------


async def test_writes_waiting_on_a_lock_answer_service_unavailable_and_store_nothing(
    other_app: ApiFactory, sessionmaker: Sessionmaker, database_url: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=ada)
    token = token_for(ada)
    async with other_app(
        db_statement_timeout=1.0, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.3
    ) as api:
        async with write_lock(database_url):
            # The send holds the only pooled connection while it waits for the lock; the
            # sign-up waits for that connection.
            sending = asyncio.create_task(
                timed(api.post(SEND, send_input(conversation, "first"), token=token))
            )
            await asyncio.sleep(0.2)
            signing_up, sign_up_took = await timed(api.post(SIGN_UP, sign_up_input("bob")))
            sent, send_took = await sending
        assert_unavailable(signing_up, field_failed(SIGN_UP, "signUp"))
        assert_unavailable(sent, field_failed(SEND, "sendMessage"))
        assert 0.3 <= sign_up_took < 0.3 + SLACK
        assert 1.0 <= send_took < 1.0 + SLACK
        assert await stored_messages(sessionmaker, conversation) == []
        assert await user_count(sessionmaker) == 1
        # The lock is gone: the same requests succeed.
        assert await api.data(SEND, send_input(conversation, "first"), token=token) == {
            "sendMessage": {"content": "hello first", "clientId": "first"}
        }
        assert await api.data(SIGN_UP, sign_up_input("bob")) == {
            "signUp": {"user": {"username": "bob"}}
        }
    assert await stored_messages(sessionmaker, conversation) == ["first"]


@pytest.mark.postgres_only
async def test_reads_waiting_on_a_lock_answer_service_unavailable_unless_partly_answered(
    other_app: ApiFactory, sessionmaker: Sessionmaker, database_url: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=ada, title="Plans")
    token = token_for(ada)
    variables = {"id": gid("Conversation", conversation)}
    both = "query ($id: ID!) { me { username } conversation(id: $id) { title } }"
    one = "query ($id: ID!) { conversation(id: $id) { title } }"
    async with other_app(db_statement_timeout=0.5) as api:
        for _ in range(2):  # the second time through the fast lane
            async with table_lock(database_url, "users"):
                # The viewer cannot be looked up: refused before the operation runs.
                refused, took = await timed(api.post(ME, token=token))
            assert_unavailable(refused, REFUSED)
            assert took < 0.5 + SLACK
            async with table_lock(database_url, "conversations"):
                whole, _ = await timed(api.post(one, variables, token=token))
                partial, _ = await timed(api.post(both, variables, token=token))
            assert_unavailable(whole, field_failed(one, "conversation", nullable=True))
            # Part of it was answered: 200, the failed part coded for a retry.
            assert (partial.status_code, partial.headers.get("retry-after")) == (200, None)
            assert partial.json() == {
                "data": {"me": {"username": "ada"}, "conversation": None},
                "errors": field_failed(both, "conversation")["errors"],
            }
            assert await api.data(both, variables, token=token) == {
                "me": {"username": "ada"},
                "conversation": {"title": "Plans"},
            }


# ---- a stalled database --------------------------------------------------------------------


class Stall:
    """A TCP proxy in front of PostgreSQL that can stop passing bytes, as a stalled server or
    network does (nothing is refused or closed: nothing answers), and start again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def before(cls, database_url: str) -> AsyncIterator[tuple[Stall, str]]:
        """The proxy and the database URL that goes through it."""
        url = make_url(database_url)
        assert url.host is not None and url.port is not None
        stall = cls(url.host, url.port)
        server = await asyncio.start_server(stall.accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield stall, url.set(port=port).render_as_string(hide_password=False)
        finally:
            stall.flowing.set()
            server.close()
            for writer in stall.writers:
                writer.close()
            await asyncio.gather(*stall.tasks, return_exceptions=True)
            await server.wait_closed()

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        pumps = [
            asyncio.create_task(self.pump(reader, up_writer)),
            asyncio.create_task(self.pump(up_reader, writer)),
        ]
        self.tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("limits", "answered_within"),
    [
        # The statement's own limit (asyncpg's, 1 s after the server's) ends it.
        pytest.param({"db_statement_timeout": 0.5, "request_timeout": 10.0}, 1.5, id="statement"),
        # The request's limit ends it, whatever its statement was doing.
        pytest.param({"db_statement_timeout": 10.0, "request_timeout": 1.0}, 1.0, id="request"),
    ],
)
async def test_a_stalled_database_is_answered_on_time_and_the_app_recovers(
    other_app: ApiFactory,
    sessionmaker: Sessionmaker,
    database_url: str,
    limits: dict[str, float],
    answered_within: float,
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    token = token_for(ada)
    async with (
        Stall.before(database_url) as (stall, stalled_url),
        other_app(
            database_url=stalled_url,
            db_pool_size=2,
            db_max_overflow=0,
            db_pool_timeout=0.5,
            ready_timeout=0.5,
            **limits,
        ) as api,
    ):
        # Warm: the pools hold connections, and the query is known to the fast lane.
        for _ in range(2):
            assert await api.data(ME, token=token) == {"me": {"username": "ada"}}
        stall.flowing.clear()
        # Twice as many requests as pooled connections: half wait for one, and give up first.
        requests = [timed(api.post(ME, token=token)) for _ in range(4)]
        *answers, (ready, ready_took) = await asyncio.gather(
            *requests, timed(api.client.get("/readyz"))
        )
        stall.flowing.set()
        for response, took in answers:
            assert_unavailable(response, REFUSED)
            assert took < answered_within + SLACK
        assert (ready.status_code, ready.text) == (503, NOT_READY)
        assert ready_took < 0.5 + SLACK
        # Every pooled connection came back: as many requests at once as the pools hold,
        # and more, are answered.
        for _ in range(2):
            again = await asyncio.gather(*(api.post(ME, token=token) for _ in range(4)))
            assert [(r.status_code, r.json()) for r in again] == [
                (200, {"data": {"me": {"username": "ada"}}})
            ] * 4
        assert (await api.client.get("/readyz")).text == READY


# ---- connections ended under load ----------------------------------------------------------


@pytest.mark.postgres_only
async def test_connections_ended_under_load_fail_no_read_and_lose_no_write(
    api: Api, sessionmaker: Sessionmaker, database_url: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    plans = await make_conversation(sessionmaker, owner_id=ada, title="Plans")
    await make_messages(sessionmaker, conversation_id=plans, count=2, content="old {i}")
    bob = await make_user(sessionmaker, username="bob")
    inbox = await make_conversation(sessionmaker, owner_id=bob)
    reads: list[tuple[int, Any]] = []
    writes: dict[str, tuple[int, Any]] = {}
    done = asyncio.Event()
    ada_token = token_for(ada)

    async def read() -> None:
        while not done.is_set():
            response = await api.post(READ, {"id": gid("Conversation", plans)}, token=ada_token)
            reads.append((response.status_code, response.json()))

    async def write() -> None:
        while not done.is_set():
            client_id = uuid.uuid4().hex
            response = await api.post(SEND, send_input(inbox, client_id), token=token_for(bob))
            writes[client_id] = (response.status_code, response.json())

    admin = await postgres(database_url)
    clients = [asyncio.create_task(read()) for _ in range(6)]
    clients += [asyncio.create_task(write()) for _ in range(2)]
    ended = []
    try:
        for _ in range(4):
            await asyncio.sleep(0.4)
            ended.append(
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        await asyncio.sleep(0.4)
    finally:
        done.set()
        await asyncio.gather(*clients)
        await admin.close()
    assert all(count > 0 for count in ended), ended
    # Reads were run again on fresh connections: every one was answered in full.
    read_answer = {
        "data": {
            "me": {
                "username": "ada",
                "conversations": {
                    "totalCount": 1,
                    "edges": [{"node": {"title": "Plans", "messageCount": 2}}],
                },
            },
            "conversation": {
                "title": "Plans",
                "messages": {"edges": [{"node": {"content": f"old {i}"}} for i in range(2)]},
            },
        }
    }
    assert len(reads) > 10
    assert reads == [(200, read_answer)] * len(reads)
    # A write was stored, or is to be sent again: sent again, it is stored once.
    unsure = [
        client_id
        for client_id, answer in writes.items()
        if answer != (200, {"data": {"sendMessage": sent(client_id)}})
    ]
    for client_id in unsure:
        assert writes[client_id] == (503, field_failed(SEND, "sendMessage"))
        assert await api.data(SEND, send_input(inbox, client_id), token=token_for(bob)) == {
            "sendMessage": sent(client_id)
        }
    assert sorted(map(str, await stored_messages(sessionmaker, inbox))) == sorted(writes)


def sent(client_id: str) -> dict[str, str]:
    return {"content": f"hello {client_id}", "clientId": client_id}


@pytest.mark.postgres_only
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_websocket_operation_on_a_stalled_database_is_answered_on_time(
    settings: Settings, sessionmaker: Sessionmaker, database_url: str, protocol: str
) -> None:
    ada = await make_user(sessionmaker, username="ada")
    async with Stall.before(database_url) as (stall, stalled_url):
        async with running(
            settings, database_url=stalled_url, db_statement_timeout=0.5
        ) as application:
            async with asgi_socket(application, protocol) as socket:
                await socket.login(token_for(ada))
                assert await socket.execute("1", ME) == {"data": {"me": {"username": "ada"}}}
                stall.flowing.clear()
                started = time.monotonic()
                stalled = await socket.execute("2", ME)
                took = time.monotonic() - started
                stall.flowing.set()
                assert stalled == REFUSED
                # The driver gives up a second after the statement timeout (see db.engine).
                assert took < 1.5 + SLACK
                # The socket and the app recover.
                assert await socket.execute("3", ME) == {"data": {"me": {"username": "ada"}}}
            # A login while the database stalls: the socket closes with 1013 (Try Again Later)
            # and a close frame, not dropped; a login once it flows again is acknowledged.
            stall.flowing.clear()
            async with asgi_socket(application, protocol) as refused_socket:
                events, closed = await refused_socket.refused(
                    {"authorization": f"Bearer {token_for(ada)}"}
                )
            stall.flowing.set()
            legacy = [Event("connection_error", None, {"message": UNAVAILABLE})]
            assert (events, closed.code, closed.reason) == (
                legacy if protocol == LEGACY_WS else [],
                1013,
                "Try Again Later",
            )
            async with asgi_socket(application, protocol) as again:
                await again.login(token_for(ada))
                assert await again.execute("1", ME) == {"data": {"me": {"username": "ada"}}}


async def test_an_app_stopped_while_given_up_work_unwinds_leaves_nothing_running(
    other_app: ApiFactory, sessionmaker: Sessionmaker, database_url: str
) -> None:
    # The send is given up at the request's deadline and goes on waiting for the lock in the
    # background as the app stops: the shutdown waits for it, or it would give its connection
    # back to a closed pool (whose connections warn "unclosed" once garbage-collected, at a
    # random later test).
    ada = await make_user(sessionmaker, username="ada")
    conversation = await make_conversation(sessionmaker, owner_id=ada)
    before = asyncio.all_tasks()
    async with write_lock(database_url):
        async with other_app(request_timeout=0.3, db_statement_timeout=1.0) as api:
            sent = await api.post(SEND, send_input(conversation, "first"), token=token_for(ada))
        still_running = {task for task in asyncio.all_tasks() - before if not task.done()}
    assert_unavailable(sent, REFUSED)
    assert still_running == set()
    assert await stored_messages(sessionmaker, conversation) == []
