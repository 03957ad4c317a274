"""`/healthz`: the process answers. `/readyz`: the database answers `SELECT 1` in time.

`/readyz` answers within its timeout whatever the database does, the connecting included:
the probe is given up at the deadline and left to unwind in the background (`db.deadline`),
where `asyncio.timeout` would wait for it (its first 503 took 4 s for a 2 s limit).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from db.deadline import within
from db.engine import ping
from db.errors import Unavailable

logger = logging.getLogger("chatql.health")

READY = "ready"
ALIVE = "ok"
NOT_READY = "database unavailable"


async def healthz(_: Request) -> Response:
    return PlainTextResponse(ALIVE)


def readyz(timeout: float) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            await within(timeout, ping(request.app.state.engine))
        except Unavailable:
            logger.warning("readyz: the database did not answer within %ss", timeout)
            return PlainTextResponse(NOT_READY, status_code=503)
        except Exception as exc:  # any driver or network failure means "not ready"
            logger.warning("readyz: the database failed: %s", exc.__class__.__name__)
            return PlainTextResponse(NOT_READY, status_code=503)
        return PlainTextResponse(READY)

    return endpoint
