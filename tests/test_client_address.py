"""Who the client is, as `python server.py serve` sees it over real HTTP from loopback: uvicorn
believes X-Forwarded-For from 127.0.0.1 unless told not to, and `CHATQL_TRUST_PROXY` must be
the only switch."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.process import serve

LOG_IN = "mutation ($input: LogInInput!) { logIn(input: $input) { token } }"


def failed_login(url: str, name: str, forwarded_for: str) -> list[str]:
    response = httpx.post(
        f"{url}/graphql",
        json={"query": LOG_IN, "variables": {"input": {"login": name, "password": "wrong-one"}}},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return [error["extensions"]["code"] for error in response.json()["errors"]]


def test_without_a_trusted_proxy_a_client_cannot_pick_its_address(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path, CHATQL_LOGIN_FAILURES_PER_ADDRESS="2") as served:
        codes = [failed_login(served.url, f"name{i}", f"198.51.100.{i}") for i in range(3)]
    assert codes == [["UNAUTHENTICATED"], ["UNAUTHENTICATED"], ["RATE_LIMITED"]]


def test_behind_a_trusted_proxy_the_first_hop_is_the_client(
    database_url: str, tmp_path: Path
) -> None:
    with serve(
        database_url,
        tmp_path,
        CHATQL_LOGIN_FAILURES_PER_ADDRESS="2",
        CHATQL_TRUST_PROXY="true",
    ) as served:
        # One proxy in front (the last hop) for everyone; the first hop tells clients apart.
        codes = [
            failed_login(served.url, "a1", "198.51.100.1, 10.0.0.1"),
            failed_login(served.url, "a2", "198.51.100.1, 10.0.0.1"),
            failed_login(served.url, "b1", "198.51.100.2, 10.0.0.1"),
            failed_login(served.url, "a3", "198.51.100.1, 10.0.0.1"),
        ]
    assert codes == [["UNAUTHENTICATED"]] * 3 + [["RATE_LIMITED"]]
