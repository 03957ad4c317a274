"""The request deadline, and SERVICE_UNAVAILABLE over HTTP: 503 with `Retry-After`.

`RequestDeadline` wraps the GraphQL view's HTTP requests:

- the whole request (its body, the viewer's lookup, the operation) gets `seconds`; past them,
  unless the response has begun, the client is answered at once with SERVICE_UNAVAILABLE, in
  GraphQL's error format, while the operation is cancelled and unwinds in the background
  (`db.deadline.within`);
- `db.errors.Unavailable` raised outside any resolver (the viewer's lookup, a persisted
  query's) gets the same answer, where it would otherwise be a 500;
- an operation that ran is 503 when its first error is SERVICE_UNAVAILABLE and nothing else
  was answered (`data` null, or every top-level field null): it failed entirely for a reason
  that may be gone on the next try. With partial data it stays 200, the errors still coded
  SERVICE_UNAVAILABLE with `retryAfter`: a client that retried a whole request on 503 would
  otherwise repeat the mutations that had succeeded.

`Retry-After` is the first error's `retryAfter`, in seconds. The view hands it over through
the request's state (`retry_after`), set by `note_result`.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.deadline import within
from db.errors import RETRY_AFTER_SECONDS, Unavailable
from schema.errors import ServiceUnavailable
from transport.responses import Refusal, media_type_of

logger = logging.getLogger("chatql.http")

RETRY_AFTER = "retry_after"


class RequestDeadline:
    """`seconds` None or 0: no deadline (SERVICE_UNAVAILABLE is still answered 503)."""

    def __init__(self, app: ASGIApp, *, seconds: float | None) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        started = answered = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the deadline answered already: the late work's answer is dropped
            if message["type"] == "http.response.start":
                started = True
                retry_after = state.get(RETRY_AFTER)
                if retry_after is not None:
                    message["status"] = 503
                    headers = [*message.get("headers", ())]
                    message["headers"] = [*headers, (b"retry-after", str(retry_after).encode())]
            await send(message)

        try:
            await within(
                self.seconds, self.app(scope, receive, guarded_send), committed=lambda: started
            )
        except Unavailable as problem:
            if started:
                raise
            answered = True
            # The outcome the request log and the metrics record, as for the view's refusals.
            state["refused"] = ServiceUnavailable.code
            logger.warning("answered 503 (request %s): %s", state.get("request_id"), problem)
            response = refusal(problem.retry_after).response(media_type_of(Headers(scope=scope)))
            await response(scope, receive, send)


def refusal(retry_after: int = RETRY_AFTER_SECONDS) -> Refusal:
    error = ServiceUnavailable(retry_after)
    return Refusal(
        503,
        error.message,
        code=error.code,
        headers={"Retry-After": str(retry_after)},
        retryAfter=retry_after,
    )


def answered(data: dict[str, Any] | None) -> bool:
    """Some top-level field of the result has a value."""
    return data is not None and any(value is not None for value in data.values())


def note_result(state: Any, data: dict[str, Any] | None, errors: list[Any] | None) -> None:
    """Tell `RequestDeadline` (through the request's `state`) to answer 503 when the result
    failed entirely because the service was unavailable."""
    if not errors or answered(data):
        return
    extensions = getattr(errors[0], "extensions", None) or {}
    if extensions.get("code") == ServiceUnavailable.code:
        setattr(state, RETRY_AFTER, extensions.get("retryAfter", RETRY_AFTER_SECONDS))
