"""The command line as operators meet it: real processes, their exit codes and every line they
print. A command that cannot do its work says why in one line and exits non-zero, without a
traceback; commands log nothing that is not news."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy.engine import make_url

from app.commands import NO_ADMIN_PASSWORD, PASSWORDS_DIFFER
from app.settings import DATABASE_URL_FORMS
from tests.process import SERVER, free_port, run_command, server_environment

ROOT = Path(__file__).resolve().parent.parent


def log_entries(stderr: str) -> list[dict[str, Any]]:
    """Every line of a command's stderr, which must all be JSON log lines (not a terminal)."""
    return [json.loads(line) for line in stderr.splitlines()]


# ---- migrate ---------------------------------------------------------------------------------


def test_migrate_on_an_up_to_date_database_logs_nothing(database_url: str, tmp_path: Path) -> None:
    finished = run_command(["migrate"], database_url=database_url, cwd=tmp_path)
    assert (finished.returncode, finished.stdout, finished.stderr) == (
        0,
        "database is at the newest revision\n",
        "",
    )


# ---- create-admin ----------------------------------------------------------------------------


def test_create_admin_without_a_terminal_or_password_names_the_setting(
    database_url: str, tmp_path: Path
) -> None:
    refused = run_command(
        ["create-admin", "root", "root@example.com"], database_url=database_url, cwd=tmp_path
    )
    created = run_command(
        ["create-admin", "root", "root@example.com"],
        database_url=database_url,
        cwd=tmp_path,
        CHATQL_ADMIN_PASSWORD="s3cret-pw",
    )
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        2,
        "",
        f"error: {NO_ADMIN_PASSWORD}\n",
    )
    # The refusal wrote nothing: the name is still free.
    assert (created.returncode, created.stdout) == (0, "admin root created\n")


def at_a_terminal(database_url: str, cwd: Path, *answers: str) -> tuple[int, str, str]:
    """`create-admin root root@example.com` with a terminal for stdin, answering each password
    prompt (seen on stderr) in turn; the exit code, stdout and stderr."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "create-admin", "root", "root@example.com"],
        cwd=cwd,
        env=server_environment(database_url),
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(follower)
    assert process.stderr is not None
    said = b""
    try:
        for answer in answers:
            # Answer only once prompted: getpass discards what was typed before it asked.
            prompts = said.count(b"Password")
            deadline = time.monotonic() + 30
            while said.count(b"Password") == prompts:
                assert time.monotonic() < deadline, f"no prompt; so far: {said!r}"
                ready, _, _ = select.select([process.stderr], [], [], 0.5)
                if ready:
                    said += os.read(process.stderr.fileno(), 1024)
            os.write(leader, f"{answer}\n".encode())
        out, rest = process.communicate(timeout=60)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out.decode(), (said + rest).decode()


def test_create_admin_at_a_terminal_asks_twice_and_refuses_two_different_passwords(
    database_url: str, tmp_path: Path
) -> None:
    differ = at_a_terminal(database_url, tmp_path, "s3cret-pw", "s3cret-pq")
    same = at_a_terminal(database_url, tmp_path, "s3cret-pw", "s3cret-pw")
    again = run_command(
        ["create-admin", "root", "other@example.com"],
        database_url=database_url,
        cwd=tmp_path,
        CHATQL_ADMIN_PASSWORD="s3cret-pw",
    )
    assert differ == (2, "", f"Password: \nPassword again: \nerror: {PASSWORDS_DIFFER}\n")
    assert same[:2] == (0, "admin root created\n")
    assert same[2].startswith("Password: \nPassword again: \n")
    assert (again.returncode, again.stderr) == (1, "error: username is already taken\n")


# ---- seed ------------------------------------------------------------------------------------

SEEDED = re.compile(
    r"seeded 3 users, 6 conversations and 30 messages in (\d+\.\d\d) s \(([\d,]+) rows/s\); "
    r"log in as user1\.\.user3 with password 'chatql-demo' \(user1 is an admin\)\n"
)


def test_seed_into_a_log_writes_a_line_a_table_and_the_rate_of_writing_alone(
    database_url: str, tmp_path: Path
) -> None:
    # A password hash that takes a while: start-up (two hashes, and migrating) lasts longer
    # than writing these 39 rows, and must not count in their rate.
    started = time.perf_counter()
    PasswordHasher(time_cost=4, memory_cost=65_536, parallelism=1).hash("chatql-demo")
    hashing = time.perf_counter() - started
    finished = run_command(
        [
            "seed",
            "--users",
            "3",
            "--conversations-per-user",
            "2",
            "--messages-per-conversation",
            "5",
        ],
        database_url=database_url,
        cwd=tmp_path,
        CHATQL_ARGON2_TIME_COST="4",
        CHATQL_ARGON2_MEMORY_COST="65536",
        CHATQL_ARGON2_PARALLELISM="1",
    )

    assert finished.returncode == 0, finished.stderr
    seeded = SEEDED.fullmatch(finished.stdout)
    assert seeded is not None, finished.stdout
    seconds, rate = float(seeded.group(1)), int(seeded.group(2).replace(",", ""))
    assert seconds < hashing
    # The rate is the 39 rows over the seconds shown (rounded to hundredths).
    assert 39 / (seconds + 0.005) - 1 <= rate <= 39 / max(seconds - 0.005, 1e-3) + 1
    # stderr is a pipe: no redrawn bar, only log lines, one for each table written.
    assert "\r" not in finished.stderr
    entries = log_entries(finished.stderr)
    assert [(e["table"], e["rows"]) for e in entries if e["logger"] == "chatql.progress"] == [
        ("users", 3),
        ("messages", 30),
    ]
    assert [e for e in entries if e["logger"] not in {"chatql.progress"}] == []


# ---- what stops a command --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "password", "status", "message"),
    [
        pytest.param(
            ["seed", "--users", "-1"],
            "s3cret-pw",
            2,
            "error: --users must not be negative\n",
            id="seed-negative",
        ),
        pytest.param(
            ["seed", "--password", "short"],
            "s3cret-pw",
            2,
            "error: --password must be 8-128 characters\n",
            id="seed-short-password",
        ),
        pytest.param(
            ["create-admin", "x", "not-an-email"],
            "s3cret-pw",
            2,
            "error: Invalid input: username: must be 3-50 letters, digits, '_', '.' or '-'; "
            "email: must be a valid email address\n",
            id="create-admin-bad-names",
        ),
        pytest.param(
            ["create-admin", "root", "root@example.com"],
            "short",
            2,
            "error: Invalid input: password: must be 8-128 characters\n",
            id="create-admin-short-password",
        ),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    arguments: list[str], password: str, status: int, message: str, tmp_path: Path
) -> None:
    finished = run_command(
        arguments,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        cwd=tmp_path,
        CHATQL_ADMIN_PASSWORD=password,
    )
    assert (finished.returncode, finished.stdout, finished.stderr) == (status, "", message)


def test_seed_on_a_database_with_users_says_so(database_url: str, tmp_path: Path) -> None:
    first = run_command(["seed", "--users", "1"], database_url=database_url, cwd=tmp_path)
    second = run_command(["seed", "--users", "1"], database_url=database_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (second.returncode, second.stdout, second.stderr) == (
        1,
        "",
        "error: the database already has users; seed an empty one (or pass --reset)\n",
    )


def test_bad_settings_are_named_one_line_each(tmp_path: Path) -> None:
    finished = run_command(
        ["migrate"],
        database_url="mysql://root@localhost/chatql",
        cwd=tmp_path,
        CHATQL_TOKEN_TTL="a week",
        CHATQL_METRICS_TOKEN="",
    )
    assert (finished.returncode, finished.stdout) == (2, "")
    assert finished.stderr.splitlines() == [
        f"error: DATABASE_URL: 'mysql' is not supported; {DATABASE_URL_FORMS}",
        "error: CHATQL_TOKEN_TTL: Input should be a valid integer, unable to parse string as an "
        "integer",
        "error: CHATQL_METRICS_TOKEN: String should have at least 1 character",
    ]


@pytest.mark.parametrize(
    "arguments",
    [["serve"], ["seed"], ["create-admin", "root", "root@example.com"]],
    ids=lambda arguments: arguments[0],
)
def test_a_secret_key_that_cannot_be_kept_is_one_line(arguments: list[str], tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    finished = run_command(
        arguments,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        cwd=tmp_path,
        CHATQL_SECRET_KEY="",
        CHATQL_ADMIN_PASSWORD="s3cret-pw",
    )
    assert (finished.returncode, finished.stdout, finished.stderr) == (
        1,
        "",
        "error: cannot keep a secret key in data/secret_key (File exists: data): "
        "set CHATQL_SECRET_KEY, or run where that folder can be written\n",
    )


def unreachable_url() -> tuple[str, str]:
    """A PostgreSQL URL on a port nobody listens on, and the line that refuses it."""
    port = free_port()
    url = f"postgresql+asyncpg://chatql:hunter22@127.0.0.1:{port}/chatql"
    return url, (
        f"error: cannot reach the database postgresql+asyncpg://chatql:***@127.0.0.1:{port}/"
        f"chatql: [Errno 111] Connect call failed ('127.0.0.1', {port})\n"
    )


@pytest.mark.parametrize(
    "arguments",
    [["migrate"], ["serve"], ["seed"], ["create-admin", "root", "root@example.com"]],
    ids=lambda arguments: arguments[0],
)
def test_every_command_says_in_one_line_that_the_database_is_unreachable(
    arguments: list[str], tmp_path: Path
) -> None:
    url, refusal = unreachable_url()
    finished = run_command(
        arguments, database_url=url, cwd=tmp_path, CHATQL_ADMIN_PASSWORD="s3cret-pw"
    )
    assert (finished.returncode, finished.stdout, finished.stderr) == (1, "", refusal)


def test_a_database_postgresql_does_not_have_is_named(postgres_url: str, tmp_path: Path) -> None:
    url = make_url(postgres_url).set(database="chatql_nowhere")
    finished = run_command(
        ["migrate"], database_url=url.render_as_string(hide_password=False), cwd=tmp_path
    )
    shown = url.render_as_string(hide_password=True)
    assert (finished.returncode, finished.stdout, finished.stderr) == (
        1,
        "",
        f'error: cannot reach the database {shown}: database "chatql_nowhere" does not exist\n',
    )


def test_serve_on_a_port_in_use_says_so_and_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = run_command(
            ["serve", "--port", str(port)],
            database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
            cwd=tmp_path,
        )
    errors = [e["message"] for e in log_entries(finished.stdout) if e["level"] == "error"]
    assert finished.returncode != 0
    assert errors == [
        f"[Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): "
        "address already in use"
    ]
    assert "Traceback" not in finished.stdout + finished.stderr


def test_serve_refuses_a_port_that_is_not_one(tmp_path: Path) -> None:
    finished = run_command(
        ["serve", "--port", "70000"],
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        cwd=tmp_path,
    )
    assert finished.returncode == 2
    assert finished.stderr.splitlines()[-1] == (
        "python server.py serve: error: argument --port: '70000' is not a port (1-65535)"
    )
