"""`python server.py` as a real process on a free loopback port, for tests over real HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.factories import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server.py"
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment(database_url: str, **extra: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CHATQL_") and key not in {"DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR"}
    }
    environment.update(
        DATABASE_URL=database_url,
        CHATQL_SECRET_KEY=TEST_SECRET,
        CHATQL_ARGON2_TIME_COST="1",
        CHATQL_ARGON2_MEMORY_COST="1024",
        CHATQL_ARGON2_PARALLELISM="1",
    )
    environment.update(extra)
    return environment


def run_command(
    arguments: Sequence[str], *, database_url: str, cwd: Path, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SERVER), *arguments],
        cwd=cwd,
        env=server_environment(database_url, **extra),
        stdin=subprocess.DEVNULL,  # never a terminal, whoever runs the tests
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


@contextlib.contextmanager
def serve(database_url: str, cwd: Path, *arguments: str, **extra: str) -> Iterator[Served]:
    """Start `python server.py serve`, wait until /healthz answers, and stop it at the end.

    stdout (the JSON log lines) goes to `cwd/stdout.log`, stderr to `cwd/stderr.log`.
    """
    port = free_port()
    log_path = cwd / "stdout.log"
    with log_path.open("w") as stdout, (cwd / "stderr.log").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "serve", "--port", str(port), *arguments],
            cwd=cwd,
            env=server_environment(database_url, **extra),
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        served = Served(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
        try:
            wait_until_healthy(served)
            yield served
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_healthy(served: Served) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(
                f"server exited with {served.process.returncode}: "
                f"{(served.log_path.parent / 'stderr.log').read_text()}"
            )
        try:
            if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not answer /healthz within {STARTUP_SECONDS}s")
