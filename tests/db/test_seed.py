from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.cli import main
from db.engine import make_engine
from db.models import Conversation, Message, User
from db.seed import SeedPlan, seed
from tests.conftest import run
from tests.factories import _HASH as HASH
from tests.factories import PASSWORD
from tests.helpers import Api

ME = """
{ me { username isAdmin conversations(first: 1) { totalCount edges { node {
  messageCount messages(first: 3) { edges { node { role } } } } } } } }
"""
LOG_IN_PLAIN = """
mutation ($login: String!, $password: String!) {
  logIn(input: {login: $login, password: $password}) { token user { username isAdmin } }
}
"""
SMALL = ["--users", "3", "--conversations-per-user", "2", "--messages-per-conversation", "4"]


@pytest.fixture
def cheap_argon2(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CHATQL_SECRET_KEY", "seed-test-secret-key-long-enough-for-hs256")
    monkeypatch.setenv("CHATQL_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("CHATQL_ARGON2_MEMORY_COST", "1024")
    monkeypatch.setenv("CHATQL_ARGON2_PARALLELISM", "1")
    monkeypatch.chdir(tmp_path)
    return database_url


def seed_command(*extra: str) -> int:
    return main(["seed", *SMALL, *extra])


async def counts(url: str) -> tuple[int, int, int, float]:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                select(
                    select(func.count()).select_from(User).scalar_subquery(),
                    select(func.count()).select_from(Conversation).scalar_subquery(),
                    select(func.count()).select_from(Message).scalar_subquery(),
                    select(func.avg(func.length(Message.content))).scalar_subquery(),
                )
            )
            users, conversations, messages, mean = result.one()
            return int(users), int(conversations), int(messages), float(mean)
    finally:
        await engine.dispose()


def test_seeding_writes_the_requested_numbers_of_rows(
    cheap_argon2: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert seed_command() == 0
    users, conversations, messages, mean = run(counts(cheap_argon2))
    assert (users, conversations, messages) == (3, 6, 24)
    assert mean > 20
    out = capsys.readouterr()
    assert "seeded 3 users, 6 conversations and 24 messages" in out.out
    assert "rows/s" in out.out
    # stderr is not a terminal: no bar, a log line for each table written.
    progress = [json.loads(line) for line in out.err.splitlines() if "chatql.progress" in line]
    assert [(line["table"], line["rows"]) for line in progress] == [("users", 3), ("messages", 24)]


def test_seeding_a_database_with_users_is_refused_unless_reset(
    cheap_argon2: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert seed_command() == 0
    assert seed_command() == 1
    assert "already has users" in capsys.readouterr().err
    assert seed_command("--reset") == 0
    assert run(counts(cheap_argon2))[:3] == (3, 6, 24)


def test_a_short_seed_password_is_refused(cheap_argon2: str) -> None:
    assert seed_command("--password", "short") == 2


async def test_seeded_users_log_in_with_the_demo_password_and_user1_is_an_admin(
    api: Api, database_url: str
) -> None:
    engine = make_engine(database_url)
    try:
        await seed(
            engine,
            plan=SeedPlan(users=2, conversations_per_user=3, messages_per_conversation=5),
            hashed_password=HASH,
        )
    finally:
        await engine.dispose()
    logged_in = await api.data(LOG_IN_PLAIN, {"login": "user1", "password": PASSWORD})
    admin = await api.data(ME, token=logged_in["logIn"]["token"])
    edges = admin["me"]["conversations"]["edges"]
    roles = [edge["node"]["role"] for edge in edges[0]["node"]["messages"]["edges"]]
    assert roles[1:] == ["ASSISTANT", "USER"]
    assert admin == {
        "me": {
            "username": "user1",
            "isAdmin": True,
            "conversations": {
                "totalCount": 3,
                "edges": [
                    {
                        "node": {
                            "messageCount": 5,
                            "messages": {"edges": [{"node": {"role": r}} for r in roles]},
                        }
                    }
                ],
            },
        }
    }
    other = await api.data(LOG_IN_PLAIN, {"login": "user2", "password": PASSWORD})
    assert other["logIn"]["user"] == {"username": "user2", "isAdmin": False}
