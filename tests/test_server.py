"""`python server.py` as operators run it: a real process over real HTTP, and its command line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import cli
from app.serve import RELOAD_ONE_PROCESS, SQLITE_ONE_PROCESS
from tests.process import Served, run_command, serve
from tests.ws import TRANSPORT_WS, process_socket

SIGN_UP = "mutation SignUp($input: SignUpInput!) { signUp(input: $input) { token } }"
LOG_IN = "mutation LogIn($input: LogInInput!) { logIn(input: $input) { token } }"
ME = "query Me { me { username email isAdmin } }"
PING = "query Ping { me { username } }"
CREATE = (
    "mutation Create($input: CreateConversationInput!) { createConversation(input: $input) { id } }"
)


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
            cli.main([command, "--help"])
        assert exited.value.code == 0
        helps[command] = capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    overview = capsys.readouterr().out

    assert all(f"usage: python server.py {command}" in text for command, text in helps.items())
    assert all(option in helps["serve"] for option in ["--host", "--port", "--workers", "--reload"])
    assert "CHATQL_ADMIN_PASSWORD" in helps["create-admin"]
    assert "export-schema > schema.graphql" in overview


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["--workers", "2"], SQLITE_ONE_PROCESS, id="workers-on-sqlite"),
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
    assert (finished.returncode, finished.stderr.strip()) == (2, RELOAD_ONE_PROCESS)


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


# ---- the connection: request-head timeout and connection cap -------------------------------

HEAD_TIMEOUT = 1.0
SLACK = 2.5  # for a loaded machine: the timer fires on time, the loop may not


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server process that gives a request head `HEAD_TIMEOUT` seconds."""
    folder = tmp_path_factory.mktemp("impatient")
    with serve(
        f"sqlite+aiosqlite:///{folder}/db.sqlite", folder, CHATQL_HEADER_TIMEOUT=str(HEAD_TIMEOUT)
    ) as served:
        yield served


def address(served: Served) -> tuple[str, int]:
    host, _, port = served.url.removeprefix("http://").partition(":")
    return host, int(port)


async def seconds_until_closed(served: Served, head: bytes, lines: list[bytes] | None) -> float:
    """Connect, send `head`, then one of `lines` every quarter second (`None`: nothing more);
    the seconds until the server closes the connection (at most 10)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(*address(served))
    try:
        writer.write(head)
        for line in itertools.cycle(lines or [b""]):
            try:
                if await asyncio.wait_for(reader.read(1024), 0.25) == b"":
                    break
            except TimeoutError:
                writer.write(line)
            except ConnectionError:
                break
            if time.monotonic() - started > 10:
                break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return time.monotonic() - started


async def test_connections_slow_to_send_a_request_head_are_closed(impatient: Served) -> None:
    dribbled = [
        seconds_until_closed(
            impatient,
            b"GET /healthz HTTP/1.1\r\nHost: chatql\r\n",
            [f"X-Slow-{i}: {'a' * i}\r\n".encode() for i in range(50)],
        )
        for _ in range(200)
    ]
    silent = [seconds_until_closed(impatient, b"", None) for _ in range(20)]
    half_a_line = [seconds_until_closed(impatient, b"GET /heal", None) for _ in range(20)]
    waiting = asyncio.gather(*dribbled, *silent, *half_a_line)
    await asyncio.sleep(0.2)
    # Meanwhile, a client that sends its request at once is answered.
    async with httpx.AsyncClient() as client:
        answered = await client.get(f"{impatient.url}/healthz")
    seconds = await waiting

    assert answered.status_code == 200
    assert len(seconds) == 240
    assert HEAD_TIMEOUT - 0.1 <= min(seconds) and max(seconds) <= HEAD_TIMEOUT + SLACK


async def test_a_slow_body_and_a_kept_alive_connection_are_not_cut(impatient: Served) -> None:
    body = json.dumps({"query": "{ __typename }"}).encode()
    reader, writer = await asyncio.open_connection(*address(impatient))
    try:
        for _ in range(2):  # the second request on the same connection, after a pause
            writer.write(
                b"POST /graphql HTTP/1.1\r\nHost: chatql\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for chunk in [body[:5], body[5:10], body[10:]]:
                await asyncio.sleep(HEAD_TIMEOUT * 0.6)
                writer.write(chunk)
            status = await asyncio.wait_for(reader.readline(), 10)
            headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"content-length: (\d+)", headers, re.I).group(1))  # type: ignore[union-attr]
            answer = await asyncio.wait_for(reader.readexactly(length), 10)
            assert (status, json.loads(answer)) == (
                b"HTTP/1.1 200 OK\r\n",
                {"data": {"__typename": "Query"}},
            )
            await asyncio.sleep(HEAD_TIMEOUT * 1.5)  # idle, within the keep-alive timeout (5 s)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_websocket_outlives_the_head_timeout(impatient: Served) -> None:
    async with process_socket(impatient.url, TRANSPORT_WS) as socket:
        await asyncio.sleep(HEAD_TIMEOUT + 1)
        ack = await socket.init()
    assert ack.kind == "connection_ack"


async def test_requests_past_the_connection_cap_are_answered_503(tmp_path: Path) -> None:
    with serve(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path, CHATQL_MAX_CONNECTIONS="3"
    ) as served:
        held = [await asyncio.open_connection(*address(served)) for _ in range(3)]
        async with httpx.AsyncClient() as client:
            refused = await client.get(f"{served.url}/healthz")
            for _, writer in held:
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.5)
            answered = await client.get(f"{served.url}/healthz", headers={"Connection": "close"})
    assert (refused.status_code, refused.text) == (503, "Service Unavailable")
    assert (answered.status_code, answered.text) == (200, "ok")


SCREEN = """query Screen($id: ID!) {
  me { fullName }
  conversation(id: $id) { title messages(last: 5) { edges { node { content } } } }
}"""
USER_UPDATE = """mutation ($id: ID!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) { fullName isActive }
}"""


def test_a_change_to_an_account_in_one_process_takes_effect_at_once_in_another(
    postgres_url: str, tmp_path: Path
) -> None:
    # Issue 14: a process takes a viewer it read before from its cache, and checks it in the
    # request's first statement (or looks it up, where the request reads nothing else).
    name = f"adm{time.monotonic_ns() % 10**9}"
    created = run_command(
        ["create-admin", name, f"{name}@example.com"],
        database_url=postgres_url,
        cwd=tmp_path,
        CHATQL_ADMIN_PASSWORD="s3cret-pw",
    )
    assert created.returncode == 0, created.stderr
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serve(postgres_url, tmp_path / "a") as a, serve(postgres_url, tmp_path / "b") as b:
        user = f"u{name}"
        credentials = {"username": user, "email": f"{user}@example.com", "password": "s3cret-pw"}
        signed = post(a.url, SIGN_UP, {"input": credentials}).json()["data"]["signUp"]["token"]
        logged = post(b.url, LOG_IN, {"input": {"login": name, "password": "s3cret-pw"}})
        admin = {"Authorization": f"Bearer {logged.json()['data']['logIn']['token']}"}
        bearer = {"Authorization": f"Bearer {signed}"}
        made = post(a.url, CREATE, {"input": {"title": "t"}}, **bearer).json()
        variables = {"id": made["data"]["createConversation"]["id"]}
        me_id = post(a.url, "{ me { id } }", None, **bearer).json()["data"]["me"]["id"]

        def screen() -> Any:
            return post(a.url, SCREEN, variables, **bearer).json()

        def update(values: dict[str, object]) -> Any:
            return post(b.url, USER_UPDATE, {"id": me_id, "input": values}, **admin).json()

        def me() -> Any:
            return post(a.url, "query Name { me { fullName } }", None, **bearer).json()

        answer = {
            "me": {"fullName": None},
            "conversation": {"title": "t", "messages": {"edges": []}},
        }
        assert [screen(), screen(), me(), me()] == [
            {"data": answer},
            {"data": answer},
            {"data": {"me": {"fullName": None}}},
            {"data": {"me": {"fullName": None}}},
        ]
        assert update({"fullName": "Renamed"}) == {
            "data": {"updateUser": {"fullName": "Renamed", "isActive": True}}
        }
        answer["me"] = {"fullName": "Renamed"}
        assert [screen(), me()] == [{"data": answer}, {"data": {"me": {"fullName": "Renamed"}}}]
        assert update({"isActive": False})["data"]["updateUser"]["isActive"] is False
        refused = [screen(), me(), screen()]
        assert update({"isActive": True})["data"]["updateUser"]["isActive"] is True
        assert screen() == {"data": answer}
        deleted = post(
            b.url,
            "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }",
            {"id": me_id},
            **admin,
        ).json()
        assert deleted == {"data": {"deleteUser": {"deletedId": me_id}}}
        gone = [screen(), me()]
    for answered in refused + gone:
        # Refused before it ran, as every request with a bad token is.
        assert "data" not in answered
        assert [error["extensions"]["code"] for error in answered["errors"]] == ["UNAUTHENTICATED"]
