"""`serve`: migrate once, then uvicorn with one or several worker processes.

Each worker builds its app with `app.factory:serving_app`; with several, Prometheus metrics
are merged through a folder they share (`metrics_directory`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from app.commands import keep_secret_key, migrate
from app.settings import Settings
from db.engine import is_sqlite
from transport.http_protocol import HeaderTimeoutProtocol

SQLITE_ONE_PROCESS = (
    "error: SQLite serves one process: use --workers 1, or set DATABASE_URL to PostgreSQL."
)
RELOAD_ONE_PROCESS = "error: --reload runs one process: leave out --workers."


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """With several workers, Prometheus metrics go through files in a folder they share."""
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="chatql-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(folder, ignore_errors=True)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers < 1:
        print("--workers must be at least 1.", file=sys.stderr)
        return 2
    if args.workers > 1 and is_sqlite(settings.database_url):
        print(SQLITE_ONE_PROCESS, file=sys.stderr)
        return 2
    if args.workers > 1 and args.reload:
        print(RELOAD_ONE_PROCESS, file=sys.stderr)
        return 2
    keep_secret_key(settings)  # once, before any worker starts
    asyncio.run(migrate(settings))
    print(f"chatql: GraphiQL at http://{args.host}:{args.port}/graphql", file=sys.stderr)
    # uvicorn calls `http` with (config, server_state, app_state) for each connection; a
    # partial (unlike a class made here) also pickles into spawned workers.
    protocol = functools.partial(HeaderTimeoutProtocol, header_timeout=settings.header_timeout)
    with metrics_directory(args.workers):
        uvicorn.run(
            "app.factory:serving_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            reload=args.reload,
            http=protocol,  # type: ignore[arg-type]
            limit_concurrency=settings.max_connections,
            # A WebSocket message may be as large as a request body, no larger.
            ws_max_size=settings.max_body_bytes,
            log_config=settings.log_config(),
            log_level=settings.log_level.lower(),
            access_log=False,
            # SIGTERM: stop accepting, close WebSockets (1012, service restart), let in-flight
            # requests finish for up to this long, then run the lifespan's shutdown.
            timeout_graceful_shutdown=settings.shutdown_timeout,
            # `client_address` alone reads X-Forwarded-For, and only with CHATQL_TRUST_PROXY:
            # uvicorn otherwise believes it from 127.0.0.1 (and FORWARDED_ALLOW_IPS), and a
            # client on loopback would pick its own address. Behind a trusted proxy, uvicorn
            # takes the first hop too, as `client_address` does.
            proxy_headers=settings.trust_proxy,
            forwarded_allow_ips="*" if settings.trust_proxy else "127.0.0.1",
        )
    return 0
