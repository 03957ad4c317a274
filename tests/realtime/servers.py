"""Real `python server.py` processes on random ports, for tests that need real sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.factories import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def terminate(self) -> int:
        """SIGTERM, then the exit code (killed if it takes more than 30 s)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_server(database_url: str, log_dir: Path, **settings: str) -> Iterator[ServerProcess]:
    """`python server.py serve` on a random port, ready when /healthz answers; killed after."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CHATQL_SECRET_KEY": TEST_SECRET,
        "CHATQL_ARGON2_TIME_COST": "1",
        "CHATQL_ARGON2_MEMORY_COST": "1024",
        "CHATQL_ARGON2_PARALLELISM": "1",
        "CHATQL_LOG_LEVEL": "WARNING",
        **{f"CHATQL_{key.upper()}": value for key, value in settings.items()},
    }
    env.pop("COVERAGE_PROCESS_START", None)
    log = log_dir / f"server-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "server.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited early:\n{server.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        server.kill()
