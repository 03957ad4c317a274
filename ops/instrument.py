"""Hooks into SQLAlchemy and Strawberry that feed the request record and the metrics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from graphql import GraphQLError
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from db.reads import DriverReads
from ops.metrics import OPEN_SUBSCRIPTIONS, POOL_IN_USE, UNTRUSTED
from ops.record import CURRENT, RequestRecord


def _count_statement(*_: Any) -> None:
    record = CURRENT.get()
    if record is not None:
        record.statements += 1


def _checked_out(*_: Any) -> None:
    POOL_IN_USE.inc()


def _checked_in(*_: Any) -> None:
    POOL_IN_USE.dec()


def instrument_engine(engine: AsyncEngine, reads: object = None) -> None:
    """Count each statement into the current request's record, and the pool's connections."""
    event.listen(engine.sync_engine, "before_cursor_execute", _count_statement)
    if isinstance(reads, DriverReads):
        reads.listeners.append(_count_statement)
    event.listen(engine.sync_engine, "checkout", _checked_out)
    event.listen(engine.sync_engine, "checkin", _checked_in)


def outcome(errors: Sequence[GraphQLError] | None) -> str:
    """`ok`, or the code of the first error (codes are added by the schema's error extension)."""
    if not errors:
        return "ok"
    code = (errors[0].extensions or {}).get("code")
    return code if isinstance(code, str) and code.isupper() else "error"


class OperationRecorder(SchemaExtension):
    """Hands the operation to the current request's record, for `settle` to read later, and
    keeps `chatql_subscriptions_open` right: a subscription is open from the moment it
    starts executing until its stream ends, whatever the transport (no other code counts)."""

    counted = False

    def on_operation(self) -> Iterator[None]:
        record = CURRENT.get()
        if record is not None:
            record.execution = self.execution_context
        try:
            yield
        finally:
            if self.counted:
                OPEN_SUBSCRIPTIONS.dec()

    def on_execute(self) -> Iterator[None]:
        # The operation hook spans a subscription's whole stream, but only here is the
        # document parsed, so its type known.
        if is_subscription(self.execution_context) and not self.counted:
            self.counted = True
            OPEN_SUBSCRIPTIONS.inc()
        yield


def is_subscription(context: ExecutionContext) -> bool:
    try:
        return context.operation_type is OperationType.SUBSCRIPTION
    except RuntimeError:  # no document, or no such operation
        return False


def untrusted_operation() -> None:
    """Audit mode let an operation outside the trusted documents run: counted, and its
    request's log line says `"trusted": false`."""
    UNTRUSTED.inc()
    record = CURRENT.get()
    if record is not None:
        record.untrusted = True


def answered_query(
    name: str | None, errors: Sequence[GraphQLError] = (), kind: str = "query"
) -> None:
    """An operation (a `kind`: query or mutation) was answered without Strawberry's extensions
    (the fast lane), with these public errors: record it as `OperationRecorder` and `settle`
    would have."""
    record = CURRENT.get()
    if record is not None:
        record.operation, record.operation_type = name, kind
        record.outcome = outcome(errors)


def settle(record: RequestRecord, *, refused: str | None = None) -> None:
    """Fill in the operation's name, type and outcome once the request is over.

    `refused` is the outcome of a request the transport refused (`http_STATUS`, or a code such
    as PERSISTED_QUERY_NOT_FOUND): no operation ran, whatever Strawberry had begun to read.
    """
    context = record.execution
    # The record outlives the request wherever a timer or task copied the request's context
    # (a pooled connection's idle timer, say): it must not keep the whole answer alive.
    record.execution = None
    if refused is not None:
        record.operation = record.operation_type = None
        record.outcome = refused
        return
    if context is None:
        return
    record.operation = context.operation_name
    try:
        record.operation_type = context.operation_type.value
    except RuntimeError:  # a document that did not parse has no operation
        record.operation_type = None
    record.outcome = outcome(getattr(context.result, "errors", None))
