"""Tracing with OpenTelemetry (issue 18): a span per request, its phases, and its SQL.

Optional: the `tracing` extra installs OpenTelemetry, and `create_app` imports this module only
when `CHATQL_TRACING` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Off, nothing of it is installed:
no middleware, no schema extension, no engine events.

The tree of one operation:

    POST /graphql (HTTP; `WS graphql-transport-ws` or `WS graphql-ws` per WebSocket operation)
      SELECT ...            the viewer's lookup, while the context is built
      parse
      validate
      execute               the plan, or Strawberry's executor where the plan does not go
        SELECT ...          one span per SQL statement, as many as the request's statement count

The request span carries `graphql.operation.name`, `graphql.operation.type`, `enduser.id` (the
viewer's database id), `chatql.cost` (`schema.complexity`'s estimate, the number the
`CHATQL_MAX_QUERY_COST` limit reads) and `chatql.statements`; a statement span carries the
statement's text (`db.query.text`), never its parameters. There is no span per field: that
is what makes Strawberry's own OpenTelemetry extension slow on large answers (strawberry
#3475), and the plan answers lists without resolving field by field anyway.

The fast lane (`transport.fast`), which runs documents parsed and validated before, makes the
same tree without `parse` and `validate` (they do not happen there); its request span has
`chatql.cached`.

Its cost (issue 18 asks Q2 with tracing to keep 0.85 of its rate): a span is tens of
microseconds to make, end and encode for OTLP, so a screen makes three (request, execute,
its statement); a statement span's name and attributes are made once per statement text;
spans go out in batches from a background thread, and a full queue drops them without a
log line each. With `OTEL_TRACES_SAMPLER=parentbased_traceidratio` an unsampled request's
spans record and export nothing (the statement hooks ask `is_recording()` and make none).

W3C trace context: a request's `traceparent` (and `tracestate`) header makes its span a child
of the caller's; every traced answer carries `traceparent` naming the request's span. Each
WebSocket operation starts a trace of its own. The request log line (`ops.middleware`) carries
`trace_id`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import DocumentNode, get_operation_ast
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    format_span_id,
    format_trace_id,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from db.reads import DriverReads
from ops.middleware import QUIET_PATHS
from ops.record import CURRENT, RequestRecord
from schema.config import config_of
from schema.context import Context
from schema.limits import MEASURED
from transport.fast import FastLane

TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
SPAN = "chatql_span"  # where a SQLAlchemy execution keeps its statement's span
NO_SPAN: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


# The batch processor logs a warning for every span it drops while its queue is full (a
# collector that is down or slow): a log record per span on the request path, which costs more
# than the span. The exporter's own error, once a batch, still says that spans are lost.
DROP_WARNINGS = "opentelemetry.sdk._shared_internal"


def provider_from_environment() -> TracerProvider:
    """A provider exporting in batches over OTLP/HTTP, configured by the standard variables
    (`OTEL_EXPORTER_OTLP_ENDPOINT`, default http://localhost:4318; `OTEL_SERVICE_NAME`,
    default chatql; `OTEL_TRACES_SAMPLER`; `OTEL_BSP_*` for the batches; ...). Batches, not
    the simple processor: that one exports each span on the request's own path."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or "chatql"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    logging.getLogger(DROP_WARNINGS).setLevel(logging.ERROR)
    return provider


class Tracing:
    """The app's tracer and the hooks that use it; `provider` is the app's, not the global
    one (tests give theirs, with an in-memory exporter)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("chatql")
        self.propagator = TraceContextTextMapPropagator()

    # ---- requests --------------------------------------------------------------------------

    def start(
        self,
        name: str,
        headers: Mapping[str, str],
        record: RequestRecord | None,
        attributes: dict[str, Any] | None = None,
    ) -> Span:
        """The span of one request or WebSocket operation, a child of the caller's
        `traceparent` if it sent one; its trace id goes to the request's record (the log)."""
        parent = self.propagator.extract(headers) if headers else None
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        if record is not None:
            record.trace_id = format_trace_id(span.get_span_context().trace_id)
        return span

    def traceparent(self, span: Span) -> str:
        """The W3C `traceparent` naming `span` (version 00)."""
        context = span.get_span_context()
        trace_id, span_id = format_trace_id(context.trace_id), format_span_id(context.span_id)
        return f"00-{trace_id}-{span_id}-{context.trace_flags:02x}"

    @contextlib.contextmanager
    def current(self, span: Span, record: RequestRecord | None) -> Iterator[Span]:
        """`span` is the current one while the block runs, then ends with the request's
        statement count; an exception marks it failed."""
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            if record is not None:
                span.set_attribute("chatql.statements", record.statements)
            span.end()

    @contextlib.contextmanager
    def operation(
        self, records: contextlib.AbstractContextManager[RequestRecord], protocol: str
    ) -> Iterator[RequestRecord]:
        """A WebSocket operation's record (`ops.middleware.operation_record`), traced: a trace
        of its own (the socket's opening request is long gone, its trace with it)."""
        with records as record:
            span = self.start(f"WS {protocol}", {}, record, {"network.protocol.name": protocol})
            with self.current(span, record):
                yield record

    def middleware(self, app: ASGIApp) -> ASGIApp:
        return TracedRequests(app, self)

    # ---- the operation's phases ------------------------------------------------------------

    def extension(self) -> type[SchemaExtension]:
        """Strawberry's hooks: a span for parse, validate and execute, and the operation's
        attributes on the request's span."""
        tracing = self

        class Traced(SchemaExtension):
            def on_operation(self) -> Iterator[None]:
                yield
                request = trace.get_current_span()
                if request.is_recording():
                    tracing.describe(request, self.execution_context)

            # Spans without children are not made current: that costs as much again.
            def on_parse(self) -> Iterator[None]:
                with tracing.leaf("parse"):
                    yield

            def on_validate(self) -> Iterator[None]:
                with tracing.leaf("validate"):
                    yield

            def on_execute(self) -> Iterator[None]:
                with tracing.parent("execute"):
                    yield

        return Traced

    def describe(self, span: Span, execution: Any) -> None:
        """The operation's name, type, viewer and cost, as far as they are known."""
        try:
            kind: OperationType | None = execution.operation_type
        except RuntimeError:  # no document, or no such operation
            kind = None
        # A document that did not validate has no cost to speak of.
        valid = not execution.pre_execution_errors
        _attributes(
            span,
            name=execution.operation_name,
            kind=kind.value if kind is not None else None,
            context=execution.context,
            document=execution.graphql_document if valid else None,
            variables=execution.variables,
            schema=execution.schema,
        )

    def fast_lane(self, lane: FastLane) -> FastLane:
        """The fast lane, making the same spans as Strawberry's way."""
        return TracedFastLane(lane.documents, lane.recorded, self)

    # ---- SQL -------------------------------------------------------------------------------

    def statements(self, engine: AsyncEngine, reads: object) -> None:
        """A span per SQL statement inside a traced request, on the events the statement
        counter listens to (`ops.instrument.instrument_engine`): SQLAlchemy's cursor events,
        and the reads run straight on the driver."""
        system = engine.dialect.name
        tracer = self.tracer

        def before(_: Any, __: Any, statement: str, ___: Any, execution: Any, ____: Any) -> None:
            if trace.get_current_span().is_recording():
                name, attributes = _statement(system, statement)
                setattr(execution, SPAN, tracer.start_span(name, attributes=attributes))

        def after(*args: Any) -> None:
            span = getattr(args[4], SPAN, None)
            if span is not None:
                span.end()

        def failed(context: Any) -> None:
            span = getattr(context.execution_context, SPAN, None)
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, type(context.original_exception).__name__))
                span.end()

        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
        event.listen(engine.sync_engine, "handle_error", failed)
        if isinstance(reads, DriverReads):
            reads.statement_span = self.statement_span

    def statement_span(self, sql: str) -> contextlib.AbstractContextManager[None]:
        if not trace.get_current_span().is_recording():
            return NO_SPAN
        return self.leaf(*_statement("postgresql", sql))

    @contextlib.contextmanager
    def parent(self, name: str) -> Iterator[None]:
        """A span of the current one's, current while the block runs (the statements' spans
        are its children); an exception marks it failed. (OpenTelemetry's
        `start_as_current_span` does the same through two more context managers.)"""
        span = self.tracer.start_span(name)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    @contextlib.contextmanager
    def leaf(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[None]:
        """A span of the current one's that has no children of its own; an exception marks it
        failed."""
        span = self.tracer.start_span(name, attributes=attributes)
        try:
            yield
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()


class TracedRequests:
    """ASGI middleware inside the request log: each HTTP request but the probes' and scrapes'
    (`/healthz`, `/readyz`, `/metrics`) gets a span, and its answer a `traceparent`."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in QUIET_PATHS:
            await self.app(scope, receive, send)
            return
        record = CURRENT.get()
        headers = _trace_headers(scope["headers"])
        method, path = scope["method"], scope["path"]
        span = self.tracing.start(
            f"{method} {path}", headers, record, {"http.request.method": method, "url.path": path}
        )
        header = (b"traceparent", self.tracing.traceparent(span).encode("ascii"))

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                span.set_attribute("http.response.status_code", message["status"])
                if message["status"] >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with self.tracing.current(span, record):
            await self.app(scope, receive, send_traced)


class TracedFastLane(FastLane):
    """`FastLane` with its `execute` span. A document it takes is one the app has parsed and
    validated before: its request span says so (`chatql.cached`), and has no `parse` or
    `validate` span, as those did not happen here (a cache hit and the cached measures'
    limit checks, microseconds each). Two spans fewer is two fifths of a screen's spans (the
    request, execute, one statement), in making and in exporting them."""

    def __init__(self, documents: Any, recorded: Any, tracing: Tracing) -> None:
        super().__init__(documents, recorded)
        self.tracing = tracing

    async def run(
        self,
        schema: Any,
        document: DocumentNode,
        variables: dict[str, Any] | None,
        name: str | None,
        context: Context,
    ) -> Any:
        request = trace.get_current_span()
        if request.is_recording():
            _attributes(
                request,
                name=name,
                kind=_kind(document, name),
                context=context,
                document=document,
                variables=variables,
                schema=schema,
                cached=True,
            )
        with self.tracing.parent("execute"):
            return await super().run(schema, document, variables, name, context)


def _kind(document: DocumentNode, name: str | None) -> str | None:
    """The operation's type (query, mutation), as the fast lane runs both."""
    operation = get_operation_ast(document, name)
    return operation.operation.value if operation is not None else None


def _attributes(
    span: Span,
    *,
    name: str | None,
    kind: str | None,
    context: Any,
    document: DocumentNode | None,
    variables: dict[str, Any] | None,
    schema: Any,
    cached: bool = False,
) -> None:
    found: dict[str, Any] = {"chatql.cached": True} if cached else {}
    if name is not None:
        found["graphql.operation.name"] = name
    if kind is not None:
        found["graphql.operation.type"] = kind
    viewer = getattr(context, "viewer", None)
    if viewer is not None:
        found["enduser.id"] = str(viewer.id)
    if document is not None and kind is not None:
        config = config_of(context)
        # Measured already by the limits (`schema.limits`), and kept with the document.
        measures = MEASURED(document).measures(
            schema._schema,
            document,
            name,
            variables or {},
            default_page_size=config.default_page_size,
        )
        if measures is not None:
            found["chatql.cost"] = measures.cost
    span.set_attributes(found)


def _trace_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """`traceparent` and `tracestate` of a request's ASGI headers."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in TRACE_HEADERS
    }


@functools.lru_cache(maxsize=2048)
def _statement(system: str, statement: str) -> tuple[str, dict[str, Any]]:
    """A statement span's name and attributes, made once per statement text: a compiled
    statement's text is the same string every time it runs (SQLAlchemy's compiled cache, the
    driver reads' constants), so this is a dictionary hit, not a scan of the text per call.
    The attributes are shared and never changed (a span copies them). The name is the
    statement's first word (SELECT, INSERT, ...), as the semantic conventions name a span
    whose statement is not summarised further."""
    word = statement.lstrip().split(None, 1)
    name = word[0].upper() if word else "SQL"
    return name, {"db.system.name": system, "db.query.text": statement}
