"""Both GraphQL-over-WebSocket protocols, each operation run through the same pipeline as an
HTTP request.

A socket lives for hours; what it carries must not outlive one operation. So, per operation
(a `subscribe` of `graphql-transport-ws`, a `start` of the legacy `graphql-ws`):

- the token the connection logged in with is checked again and the viewer loaded again, with
  fresh loaders (`OperationSource.operation_context`, the same `build_context` as HTTP; a
  database past its statement or pool timeout is SERVICE_UNAVAILABLE): a user deactivated or
  deleted since `connection_init` gets UNAUTHENTICATED, and nothing read by an earlier
  operation is served from a cache;
- the schema's extensions run as for HTTP (limits, input checks, error codes and masking,
  applied to every streamed result by `schema.errors.ErrorCodes.on_stream_result`);
- an error before execution (a document that does not parse or validate, an unknown operation
  name, a limit) is one `error` message with the same coded errors HTTP answers, never a
  closed socket: one bad document must not drop a phone's other subscriptions;
- the operation gets its own request record: statements counted, one log line
  (`chatql.request`, method `WS`, with the protocol) and the same metrics as HTTP
  (the view's `operation_record`, from `ops`).

Strawberry's handlers are kept for everything else (the protocol state machines); the
overrides below are the steps they skip. Where the legacy protocol had no rule of its own it
follows `graphql-transport-ws`: an init timeout closes with 4408, queries and mutations run
as well as subscriptions, and errors are a list.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractContextManager, suppress
from typing import Any, Protocol, TypeGuard, cast

import orjson
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage as TransportInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage,
    StartMessage,
)
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from db.deadline import hold_until_done
from db.errors import Unavailable
from schema.context import Context
from schema.errors import (
    BAD_TOKEN,
    UNAVAILABLE,
    BadRequest,
    PublicError,
    ServiceUnavailable,
    TooManyOperations,
    formatted,
    is_request_error,
)
from schema.limits import operation_name_refusal
from schema.trusted import admit
from schema.validation import text_problem

logger = logging.getLogger("chatql.ws")

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
# RFC 6455: a close frame's reason is at most 123 bytes of UTF-8.
MAX_CLOSE_REASON = 123


# An operation's id: the client's name for it, echoed in every message about it.
MAX_ID = 128
# RFC 6455's close code for a server that cannot serve now: "Try Again Later".
TRY_AGAIN_LATER = 1013
BAD_ID = f"Invalid message: an operation's id is a string of 1 to {MAX_ID} characters."
BAD_PAYLOAD = "Invalid message: the payload of a subscribe or start is an object."
# The words of the HTTP transport (Strawberry's) for the same faults of a request.
NO_QUERY = "No GraphQL query found in the request"
BAD_QUERY = "The GraphQL operation's `query` must be a string or null, if provided."
BAD_VARIABLES = "The GraphQL operation's `variables` must be an object or null, if provided."
BAD_EXTENSIONS = "The GraphQL operation's `extensions` must be an object or null, if provided."


def message_problem(message: Mapping[str, object]) -> str | None:
    """Why a `subscribe`/`start`/`complete`/`stop` is not a message of the protocol: its id,
    or its payload's shape. None when it is one."""
    op_id = message.get("id")
    if not isinstance(op_id, str) or not 0 < len(op_id) <= MAX_ID or text_problem(op_id):
        return BAD_ID
    if message.get("type") in ("subscribe", "start") and not isinstance(
        message.get("payload"), dict
    ):
        return BAD_PAYLOAD
    return None


def request_refusal(payload: Mapping[str, object]) -> PublicError | None:
    """What HTTP refuses of the same fields of a request, before anything runs: BAD_REQUEST
    (a query that is not a string, variables or extensions that are not objects) or the
    refusal of its `operationName`."""
    query = payload.get("query")
    if query is None and document_key(payload) is None:
        return BadRequest(NO_QUERY)
    if not isinstance(query, str | None):
        return BadRequest(BAD_QUERY)
    if not isinstance(payload.get("variables"), dict | None):
        return BadRequest(BAD_VARIABLES)
    if not isinstance(payload.get("extensions"), dict | None):
        return BadRequest(BAD_EXTENSIONS)
    return operation_name_refusal(payload.get("operationName"))


def document_key(payload: Mapping[str, object]) -> str | None:
    """The hash or id a payload with no query names a trusted document by, as over HTTP:
    `extensions.persistedQuery.sha256Hash`, or `documentId`, `doc_id` or `id`."""
    extensions = payload.get("extensions")
    persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
    candidates = [persisted.get("sha256Hash") if isinstance(persisted, dict) else None]
    candidates += [payload.get(key) for key in ("documentId", "doc_id", "id")]
    return next((found for found in candidates if isinstance(found, str) and found), None)


async def admitted(context: Context, query: str | None, key: str | None) -> str | PublicError:
    """The text an operation runs (a trusted document's, when it is sent by hash or id
    alone), or why it may not: the admission of `schema.trusted.admit`, as over HTTP."""
    try:
        if query is None:
            trusted = context.services.trusted
            if trusted is None or key is None:
                return BadRequest(NO_QUERY)
            query = await trusted.lookup(key)
        await admit(context, query)
    except PublicError as error:
        return error
    return query


async def _admitted_or_refused(
    handler: Any, record: Record, context: Context, op_id: str, query: str | None
) -> str | None:
    """The operation's text; or None once the client has been sent the error refusing it."""
    key = handler.document_keys.pop(op_id, None)
    found = await admitted(context, query, key)
    if isinstance(found, str):
        return found
    record.outcome = found.code
    await handler.websocket.send_json({"id": op_id, "type": "error", "payload": [formatted(found)]})
    return None


def close_reason(reason: str) -> str:
    """`reason` cut to what a close frame can carry (123 bytes of valid UTF-8)."""
    encoded = reason.encode("utf-8", "replace")[:MAX_CLOSE_REASON]
    return encoded.decode("utf-8", "ignore")


def request_error(result: object) -> TypeGuard[ExecutionResult]:
    """Whether a stream's first result stopped the operation before it ran: it is sent as one
    `error` message, with no `data` (HTTP answers such a result without a `data` entry)."""
    return isinstance(result, PreExecutionError) or (
        isinstance(result, ExecutionResult) and is_request_error(result)
    )


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Both protocols speak in text frames, whatever `encode_json` returns; a close reason is
    cut to what a close frame can carry (a longer one would drop the socket without one)."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            try:
                text = orjson.dumps(message).decode()
            except orjson.JSONEncodeError:  # a lone surrogate: escaped, not a dropped socket
                text = json.dumps(message)
            await self.ws.send_text(text)
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        await super().close(code, close_reason(reason))

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        """Each message as a JSON object. One over the request body limit closes the socket
        with 1009 (message too big); one that is not a JSON object (not JSON, nested past the
        decoder's depth, an array, a number) is not a message of either protocol: the new one
        closes with 4400, the legacy one skips it (`ignore_parsing_errors`)."""
        limit: int | None = getattr(self.view, "max_message_bytes", None)
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if limit is not None and len(text) > limit // 4 and len(text.encode()) > limit:
                    await self.close(1009, f"A message may have at most {limit} bytes.")
                    return
                try:
                    message = self.view.decode_json(text)
                except (ValueError, RecursionError):
                    message = None
                if isinstance(message, dict):
                    yield message
                elif not ignore_parsing_errors:
                    raise NonJsonMessageReceived()
        except KeyError as exc:  # a binary frame
            raise NonTextMessageReceived() from exc
        except WebSocketDisconnect:
            pass


class Record(Protocol):
    request_id: str
    outcome: str | None


class OperationSource(Protocol):
    """What the view gives the protocol handlers (`app.factory.GraphQLView`)."""

    def operation_record(self, protocol: str) -> AbstractContextManager[Record]:
        """The record of one operation: open while it runs, then logged and counted."""
        ...

    async def on_ws_connect(self, context: Context) -> object: ...

    async def operation_context(self, connection: Context) -> Context:
        """A fresh context for one operation of the connection: token checked again, viewer
        loaded again, new loaders."""
        ...


def _source(handler: Any) -> OperationSource:
    view: OperationSource = handler.view
    return view


async def _operation_context(handler: Any, record: Record) -> Context | list[dict[str, Any]]:
    """The operation's own context, its id given to its record; or, when the database did not
    answer the viewer's lookup in time, the errors that answer the operation:
    SERVICE_UNAVAILABLE, as HTTP answers it."""
    try:
        context = await _source(handler).operation_context(handler.context)
    except Unavailable as problem:
        record.outcome = ServiceUnavailable.code
        return [formatted(ServiceUnavailable(problem.retry_after))]
    record.request_id = context.request_id
    return context


async def close_unavailable(websocket: Any) -> None:
    """Close a socket whose `connection_init` the database did not answer in time (the
    viewer's lookup: a pool or statement timeout) with 1013, RFC 6455's "Try Again Later", as
    HTTP answers 503: the client connects again shortly. Left to Strawberry, the exception
    ended the ASGI app and the socket was dropped without a close frame."""
    await websocket.close(code=TRY_AGAIN_LATER, reason="Try Again Later")


def forget_handshake(context: Context) -> None:
    """Drop the upgrade request's headers from its ASGI scope, in place (Starlette's
    `WebSocket.headers` holds the same list): the connection's context has read what it needs
    of them (the client's address, a token), and nothing reads them again, while an idle socket
    would keep them for hours (~1.2 KiB from a browser; issue 17)."""
    scope = getattr(context.request, "scope", None)
    if isinstance(scope, dict) and isinstance(scope.get("headers"), list):
        scope["headers"].clear()


class TransportWSProtocol(BaseGraphQLTransportWSHandler[Context, None]):
    """`graphql-transport-ws` (the graphql-ws library's protocol)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        forget_handshake(self.context)
        # The hash or id of each operation sent without its text (trusted documents).
        self.document_keys: dict[str, str | None] = {}

    async def handle_connection_init(self, message: TransportInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except Unavailable:
            await close_unavailable(self.websocket)
            return
        # Initialised: the timer that would close it has nothing left to do (Strawberry lets
        # it sleep out its 10 s, a task and a timer a socket).
        timer, self.connection_init_timeout_task = self.connection_init_timeout_task, None
        if timer is not None and self.connection_init_received:
            timer.cancel()
        else:
            self.connection_init_timeout_task = timer

    async def handle_message(self, message: Any) -> None:
        kind = message.get("type")
        if kind in ("subscribe", "complete"):
            problem = message_problem(message)
            if problem is not None:
                await self.handle_invalid_message(problem)
                return
        elif not isinstance(kind, str):
            await self.handle_invalid_message("Invalid message: no type.")
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged:
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        if message["id"] in self.operations:
            reason = f"Subscriber for {message['id']} already exists"
            await self.websocket.close(code=4409, reason=reason)  # cut by the adapter
            return
        limit = self.max_subscriptions_per_connection
        if limit is not None and len(self.operations) >= limit:
            error = TooManyOperations(limit)
            await self.websocket.send_json(
                {"id": message["id"], "type": "error", "payload": [formatted(error)]}
            )
            return
        payload = message["payload"]
        refusal = request_refusal(payload)
        if refusal is not None:
            await self.websocket.send_json(
                {"id": message["id"], "type": "error", "payload": [formatted(refusal)]}
            )
            return
        self.document_keys[message["id"]] = document_key(payload)
        operation: Operation[Context, None] = Operation(
            self,
            message["id"],
            payload.get("query"),
            payload.get("variables"),
            payload.get("operationName"),
        )
        operation.task = asyncio.create_task(self.run_operation(operation))
        operation.task.add_done_callback(self._task_done)
        self.operations[message["id"]] = operation

    async def cleanup_operation(self, operation_id: str) -> None:
        # Strawberry cancels an operation the client completes without waiting for it: the app's
        # shutdown waits for it instead, or its connection would go back to a closed pool.
        operation = self.operations.get(operation_id)
        await super().cleanup_operation(operation_id)
        if operation is not None and operation.task is not None:
            hold_until_done(operation.task)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        with _source(self).operation_record(TRANSPORT_WS) as record:
            try:
                context = await _operation_context(self, record)
                if isinstance(context, list):
                    error: Any = {"id": operation.id, "type": "error", "payload": context}
                    await operation.send_operation_message(error)
                    return
                query = await _admitted_or_refused(
                    self, record, context, operation.id, operation.query
                )
                if query is None:
                    return
                stream = await self.schema.stream(
                    query,
                    variable_values=operation.variables,
                    context_value=context,
                    operation_name=operation.operation_name,
                )
                async with aclosing(stream):
                    first = True
                    async for result in stream:
                        if first and request_error(result):
                            await operation.send_initial_errors(result.errors or [])
                            return
                        first = False
                        if not isinstance(result, ExecutionResult):
                            await self._reject_incremental_delivery(operation)
                            return
                        await operation.send_next(result)
                await operation.send_operation_message(
                    CompleteMessage(id=operation.id, type="complete")
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                record.outcome = "INTERNAL_SERVER_ERROR"
                logger.exception(
                    "unexpected error in a WebSocket operation (request %s)", record.request_id
                )
                with suppress(Exception):
                    await operation.send_operation_message({"id": operation.id, "type": "complete"})
                self.operations.pop(operation.id, None)
                raise error from None


class LegacyWSProtocol(BaseGraphQLWSHandler[Context, None]):
    """The legacy `graphql-ws` protocol (subscriptions-transport-ws, Apollo's old one).

    A bad token closes with 4403 as in the new protocol (Strawberry closes with 1011); a
    connection that sends no `connection_init` within the view's init timeout is closed with
    4408, as the new protocol does (Strawberry waits forever).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        forget_handshake(self.context)
        # The hash or id of each operation sent without its text (trusted documents).
        self.document_keys: dict[str, str | None] = {}
        self._init_timer: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        self._init_timer = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            self._stop_init_timer()

    def _stop_init_timer(self) -> None:
        """Cancel the timer (once initialised it has nothing left to do)."""
        timer, self._init_timer = self._init_timer, None
        if timer is not None:
            timer.cancel()

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            await self.websocket.close(code=4408, reason="Connection initialisation timeout")

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload")
        if payload is None or isinstance(payload, dict):
            self.context.connection_params = payload
            try:
                await _source(self).on_ws_connect(self.context)
            except ConnectionRejectionError:
                await self.send_message(
                    {"type": "connection_error", "payload": {"message": BAD_TOKEN}}
                )
                await self.websocket.close(code=4403, reason="Forbidden")
                return
            except Unavailable:
                await self.send_message(
                    {"type": "connection_error", "payload": {"message": UNAVAILABLE}}
                )
                await close_unavailable(self.websocket)
                return
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self._stop_init_timer()

    async def handle_message(self, message: Any) -> None:
        kind = message.get("type")
        if kind in ("start", "stop"):
            problem = message_problem(message)
            if problem is not None:
                # The legacy protocol has no close code for a bad message: an error, as
                # subscriptions-transport-ws answers one.
                op_id = message.get("id")
                error = {"type": "error", "payload": [formatted(BadRequest(problem))]}
                if isinstance(op_id, str) and len(op_id) <= MAX_ID and not text_problem(op_id):
                    error["id"] = op_id
                await self.websocket.send_json(error)
                return
        elif kind == "connection_init" and self.connection_acknowledged:
            await self.websocket.close(code=4429, reason="Too many initialisation requests")
            return
        await super().handle_message(message)

    async def handle_start(self, message: StartMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and message["id"] not in self.tasks
            and limit is not None
            and len(self.tasks) >= limit
        ):
            error = TooManyOperations(limit)
            await self.websocket.send_json(
                {"type": "error", "id": message["id"], "payload": [formatted(error)]}
            )
            return
        # A `start` with the id of a running operation replaces it (Strawberry, as
        # subscriptions-transport-ws did).
        refusal = request_refusal(message["payload"])
        if self.connection_acknowledged and refusal is not None:
            await self.websocket.send_json(
                {"type": "error", "id": message["id"], "payload": [formatted(refusal)]}
            )
            return
        if self.connection_acknowledged:
            payload: Any = message["payload"]
            self.document_keys[message["id"]] = document_key(payload)
            message = cast(
                StartMessage, {**message, "payload": {**payload, "query": payload.get("query")}}
            )
        await super().handle_start(message)

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        with _source(self).operation_record(LEGACY_WS) as record:
            try:
                context = await _operation_context(self, record)
                if isinstance(context, list):
                    error = {"type": "error", "id": operation_id, "payload": context}
                    await self.websocket.send_json(error)
                    return
                admitted_query = await _admitted_or_refused(
                    self, record, context, operation_id, query
                )
                if admitted_query is None:
                    return
                stream = await self.schema.stream(
                    query=admitted_query,
                    variable_values=variables,
                    operation_name=operation_name,
                    context_value=context,
                )
                self.subscriptions[operation_id] = stream
                first = True
                async for result in stream:
                    if first and request_error(result):
                        await self.websocket.send_json(
                            {
                                "type": "error",
                                "id": operation_id,
                                "payload": [error.formatted for error in result.errors or ()],
                            }
                        )
                        return
                    first = False
                    if not isinstance(result, ExecutionResult):  # @defer/@stream frames
                        break
                    await self.send_data_message(result, operation_id)
                await self.send_message({"type": "complete", "id": operation_id})
            except asyncio.CancelledError:
                # A `stop`, or the socket closing: say so, unless the socket is gone (a send on
                # it may then never return), and end as cancelled.
                with suppress(Exception):
                    async with asyncio.timeout(1):
                        await self.send_message({"type": "complete", "id": operation_id})
                raise
            except Exception:
                record.outcome = "INTERNAL_SERVER_ERROR"
                logger.exception(
                    "unexpected error in a WebSocket operation (request %s)", record.request_id
                )
                with suppress(Exception):
                    await self.send_message({"type": "complete", "id": operation_id})
            finally:
                self.subscriptions.pop(operation_id, None)
                self.tasks.pop(operation_id, None)
