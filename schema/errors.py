"""Errors a client may see, each carrying the contract's `extensions.code`.

    PublicError                 expected failures; message and code reach the client as they are
     ├── Unauthenticated        UNAUTHENTICATED
     ├── Forbidden              FORBIDDEN
     ├── NotFound               NOT_FOUND
     ├── BadRequest             BAD_REQUEST (a request no operation can come of)
     ├── BadUserInput           BAD_USER_INPUT, with `extensions.fields`
     ├── Conflict               CONFLICT, with `extensions.fields`
     ├── StaleRevision          CONFLICT, with `extensions.fields` and `currentRevision`
     ├── RateLimited            RATE_LIMITED
     ├── TooManyOperations      RATE_LIMITED (operations open at once on one WebSocket)
 ├── OverBudget             RATE_LIMITED, with `extensions.retryAfter` (seconds): the viewer's
 │                          cost budget is spent (`schema.budgets`); HTTP 429
 ├── PersistedQueryRequired PERSISTED_QUERY_REQUIRED: not a trusted document (`schema.trusted`)
 ├── PersistedQueryNotFound PERSISTED_QUERY_NOT_FOUND: no document has the hash or id sent
     ├── QueryTooComplex        QUERY_TOO_COMPLEX
     ├── TooSlow                SUBSCRIBER_TOO_SLOW (a subscription whose consumer fell behind)
     ├── CursorExpired          CURSOR_EXPIRED (a feed cursor after which changes were pruned)
     └── ServiceUnavailable     SERVICE_UNAVAILABLE, with `extensions.retryAfter` (seconds): the
                                database did not answer in time or its connection broke
                                (`db.errors.Unavailable`); the same request may be sent again

Anything else is unexpected: `ErrorCodes` masks it to INTERNAL_SERVER_ERROR and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from db.errors import Unavailable
from schema.config import config_of
from schema.operation import OPERATION_NAME_REQUIRED, names_no_operation

# Strawberry's exceptions for a request that names no operation it can run.
UNRUNNABLE = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)

logger = logging.getLogger("chatql.errors")

LOGIN_REQUIRED = "You must be logged in."
BAD_TOKEN = "Your session is invalid or has expired; log in again."
FORBIDDEN = "You are not allowed to do this."
NOT_FOUND = "Not found."
WRONG_CREDENTIALS = "Wrong login or password."
INTERNAL = "Internal server error."
INVALID_INPUT = "Invalid input."
TOO_MANY_FAILURES = "Too many failed logins; try again later."
TOO_SLOW = "You fell too far behind on this subscription; subscribe again."
CURSOR_EXPIRED = (
    "Changes after this cursor are no longer kept; reload and start from a fresh changesCursor."
)
OVER_BUDGET = "Your query budget is spent for now; try again in {seconds} s."
PERSISTED_QUERY_REQUIRED = (
    "This server runs trusted documents only: send the hash or id of an operation your app "
    "shipped with."
)
UNAVAILABLE = "The service is unavailable for a moment; send the request again shortly."


class PublicError(Exception):
    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = {"code": self.code, **extra}

    def __str__(self) -> str:
        return self.message


class Unauthenticated(PublicError):
    code = "UNAUTHENTICATED"

    def __init__(self, message: str = LOGIN_REQUIRED) -> None:
        super().__init__(message)


class Forbidden(PublicError):
    code = "FORBIDDEN"

    def __init__(self, message: str = FORBIDDEN) -> None:
        super().__init__(message)


class NotFound(PublicError):
    code = "NOT_FOUND"

    def __init__(self, message: str = NOT_FOUND) -> None:
        super().__init__(message)


class BadRequest(PublicError):
    code = "BAD_REQUEST"


class BadUserInput(PublicError):
    code = "BAD_USER_INPUT"

    def __init__(self, fields: Mapping[str, str], message: str = INVALID_INPUT) -> None:
        super().__init__(message, fields=dict(fields))
        self.fields = dict(fields)

    @classmethod
    def one(cls, field: str, reason: str) -> BadUserInput:
        return cls({field: reason}, f"{field}: {reason}")


class Conflict(PublicError):
    code = "CONFLICT"

    def __init__(self, field: str) -> None:
        reason = f"this {field} is already taken"
        super().__init__(f"{field}: {reason}", fields={field: reason})


class StaleRevision(PublicError):
    """An edit whose `expectedRevision` is not the message's current revision (optimistic
    concurrency, as HTTP's `If-Match`): nothing changed; the client reloads the message."""

    code = "CONFLICT"

    def __init__(self, current: int) -> None:
        reason = f"the message is at revision {current}"
        super().__init__(
            f"expectedRevision: {reason}",
            fields={"expectedRevision": reason},
            currentRevision=current,
        )


class RateLimited(PublicError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after: int, message: str = TOO_MANY_FAILURES) -> None:
        super().__init__(message, retryAfterSeconds=retry_after)


def formatted(error: PublicError) -> dict[str, Any]:
    """`error` as an entry of a response's `errors` (for a transport that answers it before
    any operation runs)."""
    return dict(GraphQLError(error.message, extensions=error.extensions).formatted)


class TooManyOperations(PublicError):
    code = "RATE_LIMITED"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many operations at once on this connection (at most {limit}); "
            "complete one first.",
            limit=limit,
        )


class OverBudget(PublicError):
    """The viewer's budget (`schema.budgets`) cannot pay for the operation; HTTP answers it
    429 with `Retry-After`."""

    code = "RATE_LIMITED"

    def __init__(self, retry_after: int) -> None:
        super().__init__(OVER_BUDGET.format(seconds=retry_after), retryAfter=retry_after)
        self.retry_after = retry_after


class PersistedQueryRequired(PublicError):
    code = "PERSISTED_QUERY_REQUIRED"

    def __init__(self) -> None:
        super().__init__(PERSISTED_QUERY_REQUIRED)


class PersistedQueryNotFound(PublicError):
    code = "PERSISTED_QUERY_NOT_FOUND"

    def __init__(self) -> None:
        # Apollo clients recognise the message as well as the code.
        super().__init__("PersistedQueryNotFound")


class QueryTooComplex(PublicError):
    code = "QUERY_TOO_COMPLEX"

    def __init__(self, message: str, *, limit: int, actual: int) -> None:
        super().__init__(message, limit=limit, actual=actual)


class TooSlow(PublicError):
    code = "SUBSCRIBER_TOO_SLOW"

    def __init__(self, queue_size: int) -> None:
        super().__init__(TOO_SLOW, queueSize=queue_size)


class CursorExpired(PublicError):
    """A change after this feed cursor has been pruned (retention): the client reloads its
    state and starts again from a fresh `changesCursor`."""

    code = "CURSOR_EXPIRED"

    def __init__(self, message: str = CURSOR_EXPIRED) -> None:
        super().__init__(message)


class ServiceUnavailable(PublicError):
    """Answered with HTTP 503 and `Retry-After` when nothing else was answered (see
    `transport.deadline`). A write that failed this way may or may not have been stored:
    resending a `sendMessage` with its `clientId` is safe."""

    code = "SERVICE_UNAVAILABLE"

    def __init__(self, retry_after: int) -> None:
        super().__init__(UNAVAILABLE, retryAfter=retry_after)
        self.retry_after = retry_after


class Refused(GraphQLError):
    """The errors that refused an operation before it ran, raised as one from an extension's
    hook (`schema.Started`); `ErrorCodes` answers them one by one."""

    def __init__(self, errors: Iterable[GraphQLError]) -> None:
        self.errors = list(errors)
        super().__init__(self.errors[0].message)


def classify(error: GraphQLError) -> str:
    """The code of an error graphql-core raised before any resolver ran."""
    if isinstance(error, GraphQLSyntaxError) or error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable '$"):
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"


def public_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    """The error as a client may see it: its code added, or masked when unexpected."""
    original = error.original_error
    if isinstance(original, Unavailable):
        logger.warning(
            "%s at %s (request %s)",
            original,
            ".".join(map(str, error.path or [])) or "operation",
            request_id,
        )
        original = error.original_error = ServiceUnavailable(original.retry_after)
        error.message = original.message
    if isinstance(original, PublicError):
        error.extensions = original.extensions
        return error
    if isinstance(original, UNRUNNABLE):
        # No operation to run (no document, an unknown operationName, a type the transport
        # does not carry): the client's request, answered as HTTP answers it.
        message = OPERATION_NAME_REQUIRED if names_no_operation(original) else error.message
        # The original stays for a transport that answers it with a status (`transport.sse`).
        return GraphQLError(message, extensions={"code": "BAD_REQUEST"}, original_error=original)
    # A variable that failed to coerce (an unreadable DateTime, say) keeps the scalar's
    # exception as its original error, but it is the client's input, not our fault.
    if original is None or (error.path is None and error.message.startswith("Variable '$")):
        if not (error.extensions or {}).get("code"):
            error.extensions = {**(error.extensions or {}), "code": classify(error)}
        return error
    logger.error(
        "unexpected error at %s (request %s)",
        ".".join(map(str, error.path or [])) or "operation",
        request_id,
        exc_info=original,
    )
    return GraphQLError(
        INTERNAL,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
    )


class ErrorCodes(SchemaExtension):
    """Gives every error its code and masks the unexpected ones (logged with the request id),
    in a response and in every result a stream (a subscription, a WebSocket or SSE
    operation) yields: `on_stream_result` sees each before it is sent."""

    def on_operation(self) -> Iterator[None]:
        self.streamed = False
        yield
        if not self.streamed:
            self.process(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self.streamed = True
        self.process(result)
        yield

    def process(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if not errors:
            return
        result.errors = public_errors(errors, self.execution_context.context)


def public_errors(errors: list[GraphQLError], context: Any) -> list[GraphQLError]:
    """The errors as a client may see them (`public_error` each, suggestions dropped unless
    the config allows them): what `ErrorCodes` does to a result, for a lane without it."""
    request_id = getattr(context, "request_id", None)
    unpacked = [each for error in errors for each in _unpacked(error)]
    public = [public_error(error, request_id) for error in unpacked]
    if not config_of(context).suggestions:
        for error in public:
            error.message = without_suggestions(error.message)
    return public


def _unpacked(error: GraphQLError) -> list[GraphQLError]:
    return error.errors if isinstance(error, Refused) else [error]


def without_suggestions(message: str) -> str:
    """graphql-core ends a message with its suggestions: drop them (they map the schema)."""
    head, found, _ = message.partition(" Did you mean ")
    return head if found else message


def is_request_error(result: Any) -> bool:
    """Whether the operation was stopped before execution began: no data, and no error at a
    field (every field error has a `path`). Parse and validation errors, limits, variables that
    do not coerce, a bad token. Such an answer has no `data` entry (GraphQL spec, "Response")."""
    errors = getattr(result, "errors", None) or ()
    return (
        getattr(result, "data", None) is None
        and bool(errors)
        and all(error.path is None for error in errors)
    )
