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
from tests.helpers import Api, StatementCounter, codes

LOG_IN = "mutation ($input: LogInInput!) { logIn(input: $input) { user { username } } }"
WRONG = "not the password"


def log_in(login: str, password: str = WRONG) -> dict[str, Any]:
    return {"input": {"login": login, "password": password}}


async def attempts(api: Api, login: str, times: int, password: str = WRONG) -> list[list[str]]:
    return [codes(await api.run(LOG_IN, log_in(login, password))) for _ in range(times)]


async def stored_failures(sm: Sessionmaker) -> list[tuple[str, str]]:
    """The failed logins stored, as (login key, client address)."""
    return [(key, address) for key, address, kind in await stored_attempts(sm) if kind == "failure"]


async def stored_attempts(sm: Sessionmaker) -> list[tuple[str, str, str]]:
    """Every attempt stored, as (login key, client address, kind)."""
    async with sm() as session:
        statement = select(
            LoginFailure.login, LoginFailure.client_address, LoginFailure.kind
        ).order_by(LoginFailure.id)
        return [tuple(row) for row in (await session.execute(statement))]  # type: ignore[misc]


async def test_the_eleventh_failure_for_a_name_is_refused_even_with_the_right_password(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    target = await make_user(sessionmaker, username="target")
    assert await attempts(api, "target", 10) == [["UNAUTHENTICATED"]] * 10
    refused = await api.error(LOG_IN, log_in("TARGET"))
    right = await api.error(LOG_IN, log_in("target", PASSWORD))
    for error in (refused, right):
        assert error["message"] == "Too many failed logins; try again later."
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 890 <= error["extensions"]["retryAfterSeconds"] <= 900
    # Refused attempts are not failures: the lock-out ends 15 minutes after the tenth.
    assert await stored_failures(sessionmaker) == [(f"user:{target}", CLIENT_ADDRESS)] * 10


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
    patient = await make_user(sessionmaker, username="patient")
    long_ago = utcnow() - timedelta(minutes=16)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(LoginFailure),
            [
                {
                    "login": f"user:{patient}",
                    "client_address": CLIENT_ADDRESS,
                    "failed_at": long_ago,
                }
                for _ in range(30)
            ],
        )
    data = await api.data(LOG_IN, log_in("patient", PASSWORD))
    assert data == {"logIn": {"user": {"username": "patient"}}}
    assert await stored_attempts(sessionmaker) == [(f"user:{patient}", CLIENT_ADDRESS, "login")]


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
        ("name:a1", "198.51.100.1"),
        ("name:a2", "198.51.100.1"),
        ("name:b1", "198.51.100.2"),
    ]


async def test_without_a_trusted_proxy_forwarded_headers_are_ignored(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    response = await api.post(LOG_IN, log_in("spoofer"), headers={"X-Forwarded-For": "1.2.3.4"})
    assert codes(response.json()) == ["UNAUTHENTICATED"]
    assert await stored_failures(sessionmaker) == [("name:spoofer", CLIENT_ADDRESS)]


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


LIMITED = "Too many failed logins; try again later."
SIGN_UP = "mutation ($input: SignUpInput!) { signUp(input: $input) { user { username } } }"


def sign_up(username: str, email: str | None = None) -> dict[str, Any]:
    email = email or f"{username}@example.com"
    return {"input": {"username": username, "email": email, "password": "password-123"}}


def limited(error: dict[str, Any]) -> tuple[str, str]:
    """The message and code of an error; its retryAfterSeconds must be within the window."""
    assert 1 <= error["extensions"]["retryAfterSeconds"] <= 900, error
    return error["message"], error["extensions"]["code"]


async def test_the_username_and_email_of_one_account_share_its_failure_limit(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    bob = await make_user(sessionmaker, username="bob", email="bob@example.com")
    by_name = await attempts(api, "bob", 5)
    by_email = await attempts(api, "Bob@Example.com", 5)
    assert by_name + by_email == [["UNAUTHENTICATED"]] * 10
    right_by_email = await api.error(LOG_IN, log_in("bob@example.com", PASSWORD))
    right_by_name = await api.error(LOG_IN, log_in("BOB", PASSWORD))
    assert [limited(right_by_email), limited(right_by_name)] == [(LIMITED, "RATE_LIMITED")] * 2
    assert await stored_failures(sessionmaker) == [(f"user:{bob}", CLIENT_ADDRESS)] * 10


async def test_an_unknown_login_is_limited_per_folded_name_exactly_like_a_known_one(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="known")
    known = await attempts(api, "known", 11)
    unknown = await attempts(api, "Ghost", 10) + await attempts(api, "GHOST", 1)
    assert known == unknown == [["UNAUTHENTICATED"]] * 10 + [["RATE_LIMITED"]]
    refusals = [await api.error(LOG_IN, log_in(name)) for name in ("known", "ghost")]
    assert [limited(error) for error in refusals] == [(LIMITED, "RATE_LIMITED")] * 2
    assert [codes(await api.run(LOG_IN, log_in("ghost2")))] == [["UNAUTHENTICATED"]]
    assert [key for key, _ in await stored_failures(sessionmaker)][10:] == ["name:ghost"] * 10 + [
        "name:ghost2"
    ]


async def test_a_login_that_folds_longer_than_the_key_column_is_counted_as_any_other(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    # Both fold to 200 characters ("i" and a combining dot, "ss").
    for login in (
        "\N{LATIN CAPITAL LETTER I WITH DOT ABOVE}" * 100,
        "\N{LATIN SMALL LETTER SHARP S}" * 100,
    ):
        assert await attempts(api, login, 2) == [["UNAUTHENTICATED"]] * 2
    keys = [key for key, _ in await stored_failures(sessionmaker)]
    assert len(set(keys)) == 2 and all(key.startswith("sha256:") for key in keys)
    assert len(keys) == 4


async def test_logins_per_address_are_limited_even_when_they_succeed(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker, username="frequent")
    async with (
        other_app(logins_per_address=3) as api,
        other_app(address="198.51.100.30", logins_per_address=3) as elsewhere,
    ):
        assert await attempts(api, "frequent", 2, PASSWORD) == [[], []]
        assert await attempts(api, "frequent", 1) == [["UNAUTHENTICATED"]]
        refused = await api.error(LOG_IN, log_in("frequent", PASSWORD))
        assert limited(refused) == (
            "Too many logins from this address; try again later.",
            "RATE_LIMITED",
        )
        allowed = await elsewhere.data(LOG_IN, log_in("frequent", PASSWORD))
        assert allowed == {"logIn": {"user": {"username": "frequent"}}}
    key = f"user:{user}"
    assert await stored_attempts(sessionmaker) == [
        (key, CLIENT_ADDRESS, "login"),
        (key, CLIENT_ADDRESS, "login"),
        (key, CLIENT_ADDRESS, "failure"),
        (key, "198.51.100.30", "login"),
    ]


async def test_sign_ups_per_address_are_limited_across_processes(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    async with (
        other_app(signups_per_address=3) as first,
        other_app(signups_per_address=3) as second,
        other_app(address="198.51.100.40", signups_per_address=3) as elsewhere,
    ):
        # Bad input changes nothing and is not counted; a taken name is.
        bad = await first.run(SIGN_UP, sign_up("no spaces allowed"))
        made = await first.run(SIGN_UP, sign_up("first"))
        taken = await second.run(SIGN_UP, sign_up("first", "other@example.com"))
        another = await second.run(SIGN_UP, sign_up("second"))
        refused = await first.error(SIGN_UP, sign_up("third"))
        allowed = await elsewhere.data(SIGN_UP, sign_up("third"))
    assert [codes(result) for result in (bad, made, taken, another)] == [
        ["BAD_USER_INPUT"],
        [],
        ["CONFLICT"],
        [],
    ]
    assert limited(refused) == (
        "Too many sign-ups from this address; try again later.",
        "RATE_LIMITED",
    )
    assert allowed == {"signUp": {"user": {"username": "third"}}}
    assert await stored_attempts(sessionmaker) == [("", CLIENT_ADDRESS, "signup")] * 3 + [
        ("", "198.51.100.40", "signup")
    ]


async def test_concurrent_sign_ups_never_make_more_accounts_than_the_limit(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    async with other_app(signups_per_address=4) as api:
        storm = await asyncio.gather(*(api.run(SIGN_UP, sign_up(f"eager{i}")) for i in range(12)))
        after = [await api.run(SIGN_UP, sign_up(f"late{i}")) for i in range(5)]
    # As with failed logins: sign-ups racing past the limit are all refused, and what is left
    # of it is then used up one by one. Four accounts in all, never more.
    outcome = Counter(tuple(codes(result)) for result in [*storm, *after])
    assert outcome == {(): 4, ("RATE_LIMITED",): 13}
    assert codes(after[-1]) == ["RATE_LIMITED"]
    assert len(await stored_attempts(sessionmaker)) == 4


async def test_an_unknown_login_runs_the_statements_of_a_wrong_password(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    await make_user(sessionmaker, username="real")
    runs = []
    for login in ("real", "unreal", "REAL@example.com"):
        statements.reset()
        assert codes(await api.run(LOG_IN, log_in(login))) == ["UNAUTHENTICATED"]
        runs.append(list(statements.seen))
    assert runs[0] == runs[1] == runs[2]
