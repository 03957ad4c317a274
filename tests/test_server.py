"""`python server.py` as operators run it: a real process over real HTTP, and its command line."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import server
from tests.process import Served, run_command, serve

SIGN_UP = "mutation SignUp($input: SignUpInput!) { signUp(input: $input) { token } }"
LOG_IN = "mutation LogIn($input: LogInInput!) { logIn(input: $input) { token } }"
ME = "query Me { me { username email isAdmin } }"
PING = "query Ping { me { username } }"


def post(
    url: str, query: str, variables: dict[str, object] | None = None, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, headers=headers
    )


def test_a_served_process_signs_up_logs_in_and_answers_me(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, tmp_path) as served:
        signed = post(
            served.url,
            SIGN_UP,
            {"input": {"username": "ada", "email": "ada@example.com", "password": "s3cret-pw"}},
        )
        logged = post(served.url, LOG_IN, {"input": {"login": "ada", "password": "s3cret-pw"}})
        token = logged.json()["data"]["logIn"]["token"]
        me = post(served.url, ME, None, Authorization=f"Bearer {token}", **{"X-Request-ID": "me-1"})
        ready = httpx.get(f"{served.url}/readyz")

    assert signed.status_code == 200 and "token" in signed.json()["data"]["signUp"]
    assert me.json() == {
        "data": {"me": {"username": "ada", "email": "ada@example.com", "isAdmin": True}}
    }
    assert me.headers["x-request-id"] == "me-1"
    assert ready.status_code == 200
    # stdout is not a terminal: one JSON object a line, one line per request.
    entries = [json.loads(line) for line in served.log_lines()]
    requests = [entry for entry in entries if entry["logger"] == "chatql.request"]
    assert [(entry["operation"], entry["outcome"]) for entry in requests] == [
        ("SignUp", "ok"),
        ("LogIn", "ok"),
        ("Me", "ok"),
    ]
    assert requests[2]["request_id"] == "me-1"
    assert requests[2]["statements"] >= 0


def test_every_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    helps = {}
    for command in ["serve", "migrate", "create-admin", "export-schema"]:
        with pytest.raises(SystemExit) as exited:
            server.main([command, "--help"])
        assert exited.value.code == 0
        helps[command] = capsys.readouterr().out
    with pytest.raises(SystemExit):
        server.main(["--help"])
    overview = capsys.readouterr().out

    assert all(f"usage: python server.py {command}" in text for command, text in helps.items())
    assert all(option in helps["serve"] for option in ["--host", "--port", "--workers", "--reload"])
    assert "CHATQL_ADMIN_PASSWORD" in helps["create-admin"]
    assert "export-schema > schema.graphql" in overview


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["--workers", "2"], server.SQLITE_ONE_PROCESS, id="workers-on-sqlite"),
        pytest.param(["--workers", "0"], "--workers must be at least 1.", id="no-workers"),
    ],
)
def test_serve_refuses_what_cannot_work(arguments: list[str], message: str, tmp_path: Path) -> None:
    finished = run_command(
        ["serve", *arguments],
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        cwd=tmp_path,
    )
    assert (finished.returncode, finished.stderr.strip()) == (2, message)


def test_serve_refuses_reload_with_several_workers(postgres_url: str, tmp_path: Path) -> None:
    finished = run_command(
        ["serve", "--workers", "2", "--reload"], database_url=postgres_url, cwd=tmp_path
    )
    assert (finished.returncode, finished.stderr.strip()) == (2, server.RELOAD_ONE_PROCESS)


def started_workers(served: Served) -> set[int]:
    entries = [json.loads(line) for line in served.log_lines()]
    return {e["pid"] for e in entries if e["message"].startswith("Started server process")}


@pytest.mark.postgres_only
def test_several_workers_share_one_metrics_view(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path, "--workers", "2") as served:
        wait_for(lambda: len(started_workers(served)) == 2)
        sent = 0
        # Keep asking, each time on a new connection, until both workers have answered.
        while sent < 200 and len(answering_workers(served)) < 2:
            response = httpx.post(
                f"{served.url}/graphql", json={"query": PING}, headers={"Connection": "close"}
            )
            assert response.status_code == 200
            sent += 1
            wait_for(lambda count=sent: len(request_lines(served)) == count)  # type: ignore[misc]
        exposition = httpx.get(f"{served.url}/metrics").text
        answering = answering_workers(served)

    counted = re.search(
        r'^chatql_graphql_requests_total\{operation="Ping",outcome="ok"\} (\S+)$',
        exposition,
        re.MULTILINE,
    )
    assert len(answering) == 2
    assert counted is not None and float(counted.group(1)) == sent


def request_lines(served: Served) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in served.log_lines()]
    return [e for e in entries if e["logger"] == "chatql.request" and e["path"] == "/graphql"]


def answering_workers(served: Served) -> set[int]:
    return {entry["pid"] for entry in request_lines(served)}


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reload_restarts_the_server_when_code_changes(tmp_path: Path) -> None:
    watched = tmp_path / "watched.py"
    watched.write_text("VERSION = 1\n")
    database_url = f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"
    with serve(database_url, tmp_path, "--reload") as served:
        time.sleep(1.5)  # the file watcher needs a moment to start
        watched.write_text("VERSION = 2\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            messages = [json.loads(line)["message"] for line in served.log_lines()]
            started = [m for m in messages if m.startswith("Started server process")]
            if len(started) == 2 and httpx.get(f"{served.url}/healthz").status_code == 200:
                break
            time.sleep(0.2)
    assert len(started) == 2
    assert any("Reloading" in message for message in messages)


def test_create_admin_makes_an_admin_once_and_refuses_bad_input(
    database_url: str, tmp_path: Path
) -> None:
    def create(username: str, email: str) -> tuple[int, str]:
        finished = run_command(
            ["create-admin", username, email],
            database_url=database_url,
            cwd=tmp_path,
            CHATQL_ADMIN_PASSWORD="s3cret-pw",
        )
        return finished.returncode, finished.stdout.strip()

    assert create("root", "root@example.com") == (0, "admin root created")
    assert create("root", "other@example.com")[0] == 1
    assert create("x", "not-an-email")[0] == 2
    with serve(database_url, tmp_path) as served:
        logged = post(served.url, LOG_IN, {"input": {"login": "root", "password": "s3cret-pw"}})
        token = logged.json()["data"]["logIn"]["token"]
        me = post(served.url, ME, None, Authorization=f"Bearer {token}")
    assert me.json() == {
        "data": {"me": {"username": "root", "email": "root@example.com", "isAdmin": True}}
    }


def test_migrate_brings_a_new_database_to_the_newest_revision(tmp_path: Path) -> None:
    finished = run_command(
        ["migrate"], database_url=f"sqlite+aiosqlite:///{tmp_path}/new.db", cwd=tmp_path
    )
    # Logs go to stderr, leaving stdout to what the command says.
    upgrades = [json.loads(line)["message"] for line in finished.stderr.splitlines()]
    assert (finished.returncode, finished.stdout) == (0, "database is at the newest revision\n")
    assert [message for message in upgrades if message.startswith("Running upgrade  -> 0001")]
