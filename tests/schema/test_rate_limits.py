from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from db.models import LoginFailure, utcnow
from schema.validation import HAS_NUL
from tests.conftest import CLIENT_ADDRESS, ApiFactory
from tests.factories import PASSWORD, Sessionmaker, make_user
from tests.helpers import Api, codes

LOG_IN = "mutation ($input: LogInInput!) { logIn(input: $input) { user { username } } }"
WRONG = "not the password"


def log_in(login: str, password: str = WRONG) -> dict[str, Any]:
    return {"input": {"login": login, "password": password}}


async def attempts(api: Api, login: str, times: int, password: str = WRONG) -> list[list[str]]:
    return [codes(await api.run(LOG_IN, log_in(login, password))) for _ in range(times)]


async def stored_failures(sm: Sessionmaker) -> list[tuple[str, str]]:
    async with sm() as session:
        statement = select(LoginFailure.login, LoginFailure.client_address).order_by(
            LoginFailure.id
        )
        return [(row.login, row.client_address) for row in (await session.execute(statement))]


async def test_the_eleventh_failure_for_a_name_is_refused_even_with_the_right_password(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="target")
    assert await attempts(api, "target", 10) == [["UNAUTHENTICATED"]] * 10
    refused = await api.error(LOG_IN, log_in("TARGET"))
    right = await api.error(LOG_IN, log_in("target", PASSWORD))
    for error in (refused, right):
        assert error["message"] == "Too many failed logins; try again later."
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 890 <= error["extensions"]["retryAfterSeconds"] <= 900
    # Refused attempts are not failures: the lock-out ends 15 minutes after the tenth.
    assert await stored_failures(sessionmaker) == [("target", CLIENT_ADDRESS)] * 10


async def test_a_limited_name_does_not_limit_other_names(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="innocent")
    await attempts(api, "victim", 10)
    data = await api.data(LOG_IN, log_in("innocent", PASSWORD))
    assert data == {"logIn": {"user": {"username": "innocent"}}}


async def test_a_successful_login_is_not_counted_as_a_failure(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="forgetful")
    await attempts(api, "forgetful", 9)
    assert await attempts(api, "forgetful", 1, PASSWORD) == [[]]
    assert await attempts(api, "forgetful", 2) == [["UNAUTHENTICATED"], ["RATE_LIMITED"]]


async def test_failures_from_one_address_are_limited_across_names(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="someone")
    async with (
        other_app(login_failures_per_address=3) as api,
        other_app(address="198.51.100.20", login_failures_per_address=3) as elsewhere,
    ):
        results = [codes(await api.run(LOG_IN, log_in(f"name{i}"))) for i in range(4)]
        assert results == [["UNAUTHENTICATED"]] * 3 + [["RATE_LIMITED"]]
        right = await api.run(LOG_IN, log_in("someone", PASSWORD))
        assert codes(right) == ["RATE_LIMITED"]
        allowed = await elsewhere.data(LOG_IN, log_in("someone", PASSWORD))
        assert allowed == {"logIn": {"user": {"username": "someone"}}}


async def test_failures_are_counted_in_the_database_shared_by_every_process(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="shared")
    async with other_app() as first, other_app() as second:
        assert await attempts(first, "shared", 5) == [["UNAUTHENTICATED"]] * 5
        assert await attempts(second, "shared", 5) == [["UNAUTHENTICATED"]] * 5
        assert await attempts(first, "shared", 1, PASSWORD) == [["RATE_LIMITED"]]
        assert await attempts(second, "shared", 1, PASSWORD) == [["RATE_LIMITED"]]


async def test_concurrent_failures_never_check_more_passwords_than_the_limit(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="stormed")
    storm = await asyncio.gather(*(api.run(LOG_IN, log_in("stormed")) for _ in range(20)))
    after = [await api.run(LOG_IN, log_in("stormed")) for _ in range(11)]
    # Attempts that race past the limit are all refused; what is left of the limit is then
    # used up one by one: ten passwords checked in all, never more.
    outcome = Counter(code for result in [*storm, *after] for code in codes(result))
    assert outcome == {"UNAUTHENTICATED": 10, "RATE_LIMITED": 21}
    assert codes(after[-1]) == ["RATE_LIMITED"]
    assert len(await stored_failures(sessionmaker)) == 10


async def test_old_failures_do_not_count_and_are_pruned(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="patient")
    long_ago = utcnow() - timedelta(minutes=16)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(LoginFailure),
            [
                {"login": "patient", "client_address": CLIENT_ADDRESS, "failed_at": long_ago}
                for _ in range(30)
            ],
        )
    data = await api.data(LOG_IN, log_in("patient", PASSWORD))
    assert data == {"logIn": {"user": {"username": "patient"}}}
    assert await stored_failures(sessionmaker) == []


async def test_the_limits_and_window_are_settings(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="strict")
    async with other_app(login_failures_per_name=2, login_failure_window=60) as api:
        assert await attempts(api, "strict", 3) == [
            ["UNAUTHENTICATED"],
            ["UNAUTHENTICATED"],
            ["RATE_LIMITED"],
        ]
        error = await api.error(LOG_IN, log_in("strict", PASSWORD))
        assert 50 <= error["extensions"]["retryAfterSeconds"] <= 60


async def test_behind_a_trusted_proxy_the_first_forwarded_hop_is_the_client(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    async with other_app(trust_proxy=True, login_failures_per_address=2) as api:
        for name in ("a1", "a2", "a3"):
            response = await api.post(
                LOG_IN, log_in(name), headers={"X-Forwarded-For": "198.51.100.1, 10.0.0.1"}
            )
            assert response.status_code == 200
        other = await api.post(LOG_IN, log_in("b1"), headers={"X-Forwarded-For": "198.51.100.2"})
        assert codes(other.json()) == ["UNAUTHENTICATED"]
    assert await stored_failures(sessionmaker) == [
        ("a1", "198.51.100.1"),
        ("a2", "198.51.100.1"),
        ("b1", "198.51.100.2"),
    ]


async def test_without_a_trusted_proxy_forwarded_headers_are_ignored(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    response = await api.post(LOG_IN, log_in("spoofer"), headers={"X-Forwarded-For": "1.2.3.4"})
    assert codes(response.json()) == ["UNAUTHENTICATED"]
    assert await stored_failures(sessionmaker) == [("spoofer", CLIENT_ADDRESS)]


async def test_a_login_or_password_that_cannot_exist_is_bad_input_and_not_counted(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    long_login = await api.error(LOG_IN, log_in("x" * 101))
    nul_password = await api.error(LOG_IN, log_in("someone", "pass\x00word"))
    assert [long_login["extensions"], nul_password["extensions"]] == [
        {"code": "BAD_USER_INPUT", "fields": {"login": "must be 1-100 characters"}},
        {"code": "BAD_USER_INPUT", "fields": {"password": HAS_NUL}},
    ]
    assert await stored_failures(sessionmaker) == []
