"""GraphQL over Server-Sent Events: the graphql-sse protocol's "distinct connections" mode.

A `POST /graphql` (or a `GET` with the request in its query string) with
`Accept: text/event-stream` runs any operation, a subscription or a query or mutation, and
answers with a stream of `next` events (`data:` an execution result, as JSON) and one
`complete` event at the end. The token goes in the `Authorization` header. The protocol is
graphql-sse's (github.com/enisdenjo/graphql-sse, PROTOCOL.md); Strawberry (0.341) speaks it,
so this module only adds what chatql's pipeline needs around Strawberry's transport:

- The request is an HTTP request like any other, so everything the view does before an
  operation runs applies unchanged: the method, CSRF, the body limit, persisted queries and
  trusted documents (`schema.trusted.admit`), the operation-name rules, a context of its own
  built by the same `build_context` (the token checked, fresh loaders), the request log line
  (with `"protocol": "graphql-sse"`) and the metrics, written when the stream ends.
- The schema's extensions run as for every transport: limits, error codes and masking
  (`schema.errors.ErrorCodes.on_stream_result` sees each event), the budget (a subscription's
  events are charged by `schema.Schema.stream`), a subscription ending with UNAUTHENTICATED
  when its token expires or its user is deactivated, SUBSCRIBER_TOO_SLOW.
- An operation refused before it runs is answered as HTTP answers it, with a status and a
  JSON body, never as a stream: 400 for a parse or validation error, a limit or a bad token
  (the status of `application/graphql-response+json`: a client that asked for an event
  stream cannot read a 200 that is not one), 405 for a mutation over GET, 429 with
  `Retry-After` over budget. To know this without waiting for a subscription's first event
  (maybe hours away), `opened` waits until either the first result is there or
  `schema.Started` says the operation has begun. Once it has, what its resolvers raise (a
  subscription with no login, or to a conversation not found) is a `next` event with the
  errors, then `complete`, as a query's field errors are a 200 over HTTP.
- A comment line (`: ping`) every `heartbeat` seconds keeps proxies from closing a quiet
  stream; a client that disconnects cancels the stream, which ends the subscription (its hub
  entry is removed by the resolver's own `finally`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar, cast

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from strawberry.http.streaming import SSE_HEARTBEAT_INTERVAL, SSETransport
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL

from schema import STARTED
from schema.context import Context
from transport.view import BaseGraphQLView

SSE = "sse"  # Strawberry's name for the protocol of a request (`GraphQLRequestData.protocol`)
# Where the request log finds the protocol of a request that is not plain HTTP.
PROTOCOL = "protocol"


class EventStream(SSETransport):
    """Strawberry's SSE transport with the app's heartbeat (`heartbeat_transport`)."""

    interval: ClassVar[float] = SSE_HEARTBEAT_INTERVAL

    def __init__(self) -> None:
        super().__init__(heartbeat_interval=self.interval)


def heartbeat_transport(seconds: float) -> type[EventStream]:
    """The transport class for a view (Strawberry makes the instance, with no arguments)."""
    return type("EventStream", (EventStream,), {"interval": seconds})


class EventStreams(BaseGraphQLView):
    """The GraphQL view, with what SSE needs around Strawberry's transport."""

    async def respond(self, request: Request) -> Response:
        streamed = self._get_stream_transport_from_headers(request.headers) is not None
        if streamed:
            request.state.protocol = GRAPHQL_SSE_PROTOCOL
        response = await super().respond(request)
        if (
            streamed
            and response.status_code == 200
            and not isinstance(response, StreamingResponse)
            and response.headers.get("content-type", "").startswith("application/")
        ):
            # Refused before it ran: the status a client of an event stream can read.
            response.status_code = 400
        return response

    async def execute_operation(  # type: ignore[override]
        self, request: Request, request_data: Any, context: Context, **rest: Any
    ) -> Any:
        if getattr(request_data, "protocol", None) == SSE:
            context.extras[STARTED] = asyncio.Event()
        result = await super().execute_operation(
            request=request, request_data=request_data, context=context, **rest
        )
        if getattr(request_data, "protocol", None) != SSE:
            return result
        return await opened(cast(AsyncGenerator[Any, None], result), context.extras[STARTED])


async def opened(stream: AsyncGenerator[Any, None], started: asyncio.Event) -> Any:
    """The stream to send, once the operation has begun (`schema.Started`); or, when it was
    refused before it could, its one result (answered without a stream, see the module's
    docstring). What the operation's resolvers raise once it has begun (a subscription to a
    conversation that is not found, or with no login) is in the stream, as it would be in the
    answer to a query over HTTP."""
    first = asyncio.ensure_future(anext(stream))
    begun = asyncio.ensure_future(started.wait())
    try:
        await asyncio.wait({first, begun}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _stop(first, stream)
        raise
    finally:
        begun.cancel()
    if not started.is_set():
        await stream.aclose()
        result = first.result()
        original = result.errors[0].original_error
        if isinstance(original, CannotGetOperationTypeError | InvalidOperationTypeError):
            # As the view answers them over HTTP: 400, or 405 for a mutation over GET.
            raise HTTPException(400, result.errors[0].message) from original
        return result
    return _rest(first, stream)


async def _rest(
    first: asyncio.Future[Any], stream: AsyncGenerator[Any, None]
) -> AsyncIterator[Any]:
    try:
        yield await first
        async for result in stream:
            yield result
    finally:
        await _stop(first, stream)


async def _stop(first: asyncio.Future[Any], stream: AsyncGenerator[Any, None]) -> None:
    """End the stream: its first step runs in a task of its own, which must be over before
    the generator can be closed."""
    if not first.done():
        first.cancel()
        await asyncio.wait({first})
    with contextlib.suppress(StopAsyncIteration, asyncio.CancelledError):
        first.exception()
    await stream.aclose()
