"""Real databases only: every API test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from app.factory import create_app
from app.settings import Settings
from db.engine import make_engine, make_sessionmaker
from db.migrate import upgrade_to_head
from db.reads import DriverReads
from tests.factories import TEST_SECRET
from tests.helpers import Api, StatementCounter

T = TypeVar("T")


def _postgres_admin_url() -> str:
    url = os.environ.get("CHATQL_TEST_DATABASE_URL")
    if not url:
        pytest.fail(
            "CHATQL_TEST_DATABASE_URL is not set: run the suite with ./test.sh, which starts "
            "a throwaway PostgreSQL, or point it at one you have.",
            pytrace=False,
        )
    return url


async def _create_database(admin_url: str, name: str) -> None:
    url = make_url(admin_url)
    connection = await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.host,
        port=url.port,
        database=url.database,
    )
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(admin_url: str, name: str) -> None:
    url = make_url(admin_url)
    connection = await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.host,
        port=url.port,
        database=url.database,
    )
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped at the end: each xdist worker
    (`./test.sh` runs several) is a session of its own, so each has its own database."""
    admin_url = _postgres_admin_url()
    name = f"chatql_test_{uuid.uuid4().hex[:12]}"
    run(_create_database(admin_url, name))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    run(_migrate(url))
    yield url
    run(_drop_database(admin_url, name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _truncate(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "TRUNCATE users, conversations, messages, login_failures, "
                    "persisted_queries, trusted_manifests, trusted_documents, cost_budgets "
                    "RESTART IDENTITY CASCADE"
                )
            )
    finally:
        await engine.dispose()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run set-up work on a loop of its own, whatever loop the caller is in."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    if request.param == "sqlite":
        if request.node.get_closest_marker("postgres_only"):
            pytest.skip("this behaviour exists on PostgreSQL alone")
        path = tmp_path / "chatql.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_url")
    try:
        yield url
    finally:
        run(_truncate(url))


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        argon2_parallelism=1,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def engine(app: Starlette) -> AsyncEngine:
    result: AsyncEngine = app.state.engine
    return result


@pytest.fixture
def sessionmaker(app: Starlette) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(app.state.engine)


CLIENT_ADDRESS = "203.0.113.7"
ApiFactory = Callable[..., AbstractAsyncContextManager[Api]]


@asynccontextmanager
async def _client(app: Starlette, address: str) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Api(client)


@pytest.fixture
async def api(app: Starlette) -> AsyncIterator[Api]:
    async with _client(app, CLIENT_ADDRESS) as client:
        yield client


@pytest.fixture
def other_app(settings: Settings) -> ApiFactory:
    """Another app (its own engine and pool, as a second server process would have) on the same
    database, with some settings changed: `async with other_app(address=..., **settings)`."""

    @asynccontextmanager
    async def start(*, address: str = CLIENT_ADDRESS, **changes: Any) -> AsyncIterator[Api]:
        application = create_app(settings.model_copy(update=changes))
        async with (
            application.router.lifespan_context(application),
            _client(application, address) as client,
        ):
            yield client

    return start


@pytest.fixture
def statements(app: Starlette, engine: AsyncEngine) -> Iterator[StatementCounter]:
    """Every statement the app sends, through SQLAlchemy or straight on the driver."""
    counter = StatementCounter()

    def count(*args: Any) -> None:
        counter.record(args[2])

    reads = app.state.services.driver_reads
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    if isinstance(reads, DriverReads):
        reads.listeners.append(counter.record)
    yield counter
    event.remove(engine.sync_engine, "before_cursor_execute", count)
    if isinstance(reads, DriverReads):
        reads.listeners.remove(counter.record)
