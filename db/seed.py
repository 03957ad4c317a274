"""A realistic demo data set, written in bulk.

Users `user1`..`userN` (user1 an admin, all with one known password), each with conversations
of alternating user and assistant messages of varied length (about 200 characters on average).
PostgreSQL takes the rows through `COPY` (asyncpg's binary copy); SQLite through multi-row
`INSERT`s. Ids are assigned here, so messages can point at their conversations without reading
anything back: they are drawn from where the database's own would go next (the sequence, or
SQLite's AUTOINCREMENT counter), which then moves past them. `--reset` keeps those counters, so
no id of a deleted row ever comes back (a token or a global id kept from before stays dead).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.folding import fold
from db.models import Conversation, Message, User, new_account_key

Progress = Callable[[str, int, int], None]
BATCH = 20_000
SQLITE_MAX_VARIABLES = 32_766
WORDS = (
    "the a of to and in is it that for on with as was at by this be from or have an not are "
    "but what all were when we there can more if will one about up out them some time would "
    "so these her him into has two like other see could no than been who its now people my "
    "made over did down only way find use may water long little very after words called just "
    "where most know get through back much before go good new write our used me man too any "
    "day same right look think also around another came come work three word must because "
    "does part even place well such here take why things help put years different away again "
    "off went old number great tell men say small every found still between name should home "
    "big give air line set own under read last never us left end along while might next sound "
    "below saw something thought both few those always looked show large often together asked "
    "house don't world going want school important until form food keep children feet land "
    "side without boy once animals life enough took sometimes four head above kind began almost "
    "live page got earth need far hand high year mother light parts country father let night "
    "following picture being study second eyes soon times story boys since white days ever "
    "paper hard near sentence better best across during today others however sure means knew "
    "query schema resolver database index latency cursor page connection message conversation"
).split()
FIRST_NAMES = (
    "Ada Alan Grace Edsger Barbara Donald Margaret Ken Dennis Frances Tim Radia Leslie John "
    "Hedy Katherine Linus Guido Niklaus Sophie Annie Claude Joan Vint Shafi Jean Lynn Ivan"
).split()
LAST_NAMES = (
    "Lovelace Turing Hopper Dijkstra Liskov Knuth Hamilton Thompson Ritchie Allen Lee Perlman "
    "Lamport Backus Lamarr Johnson Torvalds Rossum Wirth Wilson Easley Shannon Clarke Cerf "
    "Goldwasser Sammet Conway Sutherland"
).split()


@dataclass(frozen=True)
class SeedPlan:
    users: int = 100
    conversations_per_user: int = 20
    messages_per_conversation: int = 50
    mean_length: int = 200
    seed: int = 1

    @property
    def conversations(self) -> int:
        return self.users * self.conversations_per_user

    @property
    def messages(self) -> int:
        return self.conversations * self.messages_per_conversation


@dataclass(frozen=True)
class SeedCounts:
    users: int
    conversations: int
    messages: int


class NotEmpty(Exception):
    def __str__(self) -> str:
        return "the database already has users; seed an empty one (or pass --reset)"


def _lengths(rng: random.Random, mean: int) -> Iterator[int]:
    """Lengths from a long-tailed distribution with the given mean, between 1 and 8 x mean."""
    while True:
        yield max(1, min(mean * 8, int(rng.expovariate(1 / mean))))


class _Text:
    """Message contents cut from one long text, so a million of them cost little."""

    def __init__(self, rng: random.Random, mean: int) -> None:
        self._corpus = " ".join(rng.choice(WORDS) for _ in range(200_000))
        self._rng = rng
        self._lengths = _lengths(rng, mean)

    def next(self) -> str:
        """A run of whole words about as long as the next drawn length."""
        length = next(self._lengths)
        corpus = self._corpus
        start = corpus.index(" ", self._rng.randrange(0, len(corpus) - length - 100)) + 1
        end = corpus.find(" ", start + length)
        chunk = corpus[start:end]
        return chunk[0].upper() + chunk[1:]


def _users(plan: SeedPlan, first_id: int, hashed: str, now: datetime) -> list[tuple[Any, ...]]:
    rng = random.Random(plan.seed)
    rows = []
    for n in range(1, plan.users + 1):
        joined = now - timedelta(days=400) + timedelta(minutes=n)
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        username, email = f"user{n}", f"user{n}@example.com"
        rows.append(
            (
                first_id + n - 1,
                username,
                email,
                name,
                fold(username),
                fold(email),
                fold(name),
                new_account_key(),
                hashed,
                True,
                n == 1,
                joined,
                joined,
            )
        )
    return rows


def _threads(
    plan: SeedPlan, user_ids: Sequence[int], first_message_id: int, now: datetime
) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """Each conversation row with its messages, oldest first: one branch, each message after
    the one before, the last the current leaf (`db.branches`)."""
    rng = random.Random(plan.seed + 1)
    contents = _Text(rng, plan.mean_length)
    message_id = first_message_id
    start = now - timedelta(days=365)
    span = 365 * 24 * 3600
    for user_id in user_ids:
        for _ in range(plan.conversations_per_user):
            # Random, not drawn from `rng`: a reseed must not bring back the ids of before.
            conversation_id = str(uuid.uuid4())
            moment = start + timedelta(seconds=rng.randrange(span // 2))
            created = moment
            messages = []
            for index in range(plan.messages_per_conversation):
                if index == 0 and rng.random() < 0.2:
                    role = "SYSTEM"
                else:
                    role = "USER" if index % 2 == 0 else "ASSISTANT"
                parent = message_id - 1 if index else None
                messages.append(
                    (message_id, conversation_id, role, contents.next(), None, moment, parent)
                )
                message_id += 1
                moment += timedelta(
                    seconds=rng.randrange(5, 600), microseconds=rng.randrange(10**6)
                )
            title = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 7))).capitalize()
            updated = messages[-1][5] if messages else created
            leaf = messages[-1][0] if messages else None
            yield (conversation_id, user_id, title, created, updated, leaf), messages


USER_COLUMNS = (
    "id",
    "username",
    "email",
    "full_name",
    "username_key",
    "email_key",
    "full_name_key",
    "account_key",
    "hashed_password",
    "is_active",
    "is_admin",
    "created_at",
    "updated_at",
)
CONVERSATION_COLUMNS = ("id", "user_id", "title", "created_at", "updated_at", "current_leaf_id")
MESSAGE_COLUMNS = (
    "id",
    "conversation_id",
    "role",
    "content",
    "client_id",
    "created_at",
    "parent_id",
)


class _Writer:
    """Writes batches of rows to one table, by COPY or by multi-row INSERT."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self.postgres = connection.dialect.name == "postgresql"

    async def write(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.postgres:
            raw = (await self._connection.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.copy_records_to_table(table, records=rows, columns=list(columns))
            return
        per_statement = SQLITE_MAX_VARIABLES // len(columns)
        placeholders = "(" + ",".join("?" * len(columns)) + ")"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ",".join(
                [placeholders] * len(chunk)
            )
            params = tuple(_sqlite_value(value) for row in chunk for value in row)
            await self._connection.exec_driver_sql(sql, params)


def _sqlite_value(value: Any) -> Any:
    # What the UTCDateTime column stores on SQLite: naive UTC text.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


async def _reserve_ids(connection: AsyncConnection, table: str, count: int) -> int:
    """The first of `count` new ids for `table`, which its own counter then skips.

    PostgreSQL: the serial sequence moves past them (its table is locked against other writers,
    see `seed`). SQLite: AUTOINCREMENT never goes below the largest id it has seen, and an
    explicit id above that raises it.
    """
    if connection.dialect.name == "postgresql":
        sequence = f"pg_get_serial_sequence('{table}', 'id')"
        first = (await connection.execute(text(f"SELECT nextval({sequence})"))).scalar_one()
        await connection.execute(
            text(f"SELECT setval({sequence}, :next, false)"), {"next": first + count}
        )
        return int(first)
    largest = await connection.scalar(
        text(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = :table), 0), "
            f"(SELECT coalesce(max(id), 0) FROM {table}))"
        ),
        {"table": table},
    )
    return int(largest) + 1


async def seed(
    engine: AsyncEngine,
    *,
    plan: SeedPlan,
    hashed_password: str,
    reset: bool = False,
    progress: Progress | None = None,
) -> SeedCounts:
    """Write the data set in one transaction; the database must have no users unless `reset`."""
    report = progress or (lambda _table, _done, _total: None)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        writer = _Writer(connection)
        if writer.postgres:
            # Nobody else draws from the sequences while ids are reserved from them.
            await connection.execute(text("LOCK TABLE users, messages IN EXCLUSIVE MODE"))
        if reset:
            await _truncate(connection, postgres=writer.postgres)
        elif (await connection.execute(select(func.count()).select_from(User))).scalar_one():
            raise NotEmpty()
        report("users", 0, plan.users)
        first_user = await _reserve_ids(connection, User.__tablename__, plan.users)
        user_rows = _users(plan, first_user, hashed_password, now)
        await writer.write("users", USER_COLUMNS, user_rows)
        report("users", len(user_rows), plan.users)
        first_message = await _reserve_ids(connection, Message.__tablename__, plan.messages)
        conversation_batch: list[tuple[Any, ...]] = []
        message_batch: list[tuple[Any, ...]] = []
        written = 0
        report("messages", 0, plan.messages)
        for conversation, messages in _threads(
            plan, [row[0] for row in user_rows], first_message, now
        ):
            conversation_batch.append(conversation)
            message_batch.extend(messages)
            if len(message_batch) >= BATCH or len(conversation_batch) >= BATCH:
                await writer.write("conversations", CONVERSATION_COLUMNS, conversation_batch)
                await writer.write("messages", MESSAGE_COLUMNS, message_batch)
                written += len(message_batch)
                report("messages", written, plan.messages)
                conversation_batch, message_batch = [], []
        await writer.write("conversations", CONVERSATION_COLUMNS, conversation_batch)
        await writer.write("messages", MESSAGE_COLUMNS, message_batch)
        written += len(message_batch)
        report("messages", written, plan.messages)
    if writer.postgres:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("ANALYZE users, conversations, messages"))
    return SeedCounts(users=plan.users, conversations=plan.conversations, messages=written)


async def _truncate(connection: AsyncConnection, *, postgres: bool) -> None:
    tables = [Message.__tablename__, Conversation.__tablename__, User.__tablename__]
    # Without RESTART IDENTITY, and SQLite's DELETE keeps `sqlite_sequence`: ids go on.
    if postgres:
        await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        return
    for table in tables:
        await connection.execute(text(f"DELETE FROM {table}"))
