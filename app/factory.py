"""The Starlette app: `create_app(settings)`, its GraphQL view and edge middleware.

`serving_app` is what `serve` hands uvicorn (`app.factory:serving_app`, a factory).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
)
from strawberry.types.unset import UnsetType

import explorer
from app.settings import Settings, budgets_on
from db.deadline import unwound
from db.engine import Timeouts, is_sqlite, make_engine, make_reader, make_sessionmaker
from db.reads import DriverReads, make_reads
from ops import health
from ops.instrument import (
    OperationRecorder,
    answered_query,
    instrument_engine,
    untrusted_operation,
)
from ops.metrics import metrics_endpoint
from ops.middleware import RequestLog, operation_record
from ops.record import RequestRecord, current_request_id
from realtime.broker import make_broker
from realtime.retention import ChangeRetention
from realtime.streams import StreamTimeout
from realtime.watch import ViewerWatch
from schema import make_schema
from schema.auth import Passwords
from schema.budgets import Budgeted, Budgets
from schema.caches import DocumentCache
from schema.context import Context, Services, build_context
from schema.trusted import Mode, TrustedDocuments
from transport.body import BodyLimit
from transport.deadline import RequestDeadline
from transport.export import Export
from transport.fast import FastLane
from transport.persisted import Bounds, StoreRegistered
from transport.sse import EventStreams, heartbeat_transport
from transport.view import PREFLIGHT_HEADERS
from transport.websockets import LegacyWSProtocol, TransportWSProtocol
from transport.ws_protocol import DirectWebSockets

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from app.tracing import Tracing

WS_AUTHENTICATED = "ws_authenticated"
WS_AUTHORIZATION = "ws_authorization"


def client_address(request: Request | WebSocket, *, trust_proxy: bool) -> str | None:
    """The socket peer, or behind a trusted proxy the first `X-Forwarded-For` hop (the client
    as the first proxy saw it)."""
    if trust_proxy:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first
    return request.client.host if request.client else None


class GraphQLView(EventStreams):
    """Strawberry's ASGI view; the process-wide services come from the app's state.

    Server-Sent Events (`transport.sse`) are HTTP requests with a streamed answer.
    A WebSocket's context is the connection's: it holds the `connection_init` credentials.
    Each operation on it runs with a context of its own (`operation_context`), built by the
    same `build_context` as an HTTP request's.
    """

    graphql_transport_ws_handler_class = TransportWSProtocol
    graphql_ws_handler_class = LegacyWSProtocol
    # The largest WebSocket message, in bytes (the request body limit).
    max_message_bytes: int | None = None
    # Set when tracing is on: each WebSocket operation gets a span.
    tracing: Tracing | None = None

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return await build_context(
            request.app.state.services,
            authorization=request.headers.get("authorization"),
            request_id=current_request_id() or uuid.uuid4().hex,
            client_address=client_address(request, trust_proxy=request.app.state.trust_proxy),
            request=request,
            response=response,
            tentative=getattr(request.state, "tentative_viewer", False),
            connection=isinstance(request, WebSocket),
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        await self.sign_in(context)
        return UnsetType()

    async def sign_in(self, context: Context) -> None:
        """Log the connection in with the token of its `connection_init` payload, if any.

        A bad token closes the socket with 4403; without one the connection opens, and each
        subscription then needs a login. The token is kept for the operations, which check
        it again each time.
        """
        if context.extras.get(WS_AUTHENTICATED):
            return
        context.extras[WS_AUTHENTICATED] = True
        params = context.connection_params or {}
        authorization = params.get("authorization", params.get("Authorization"))
        if authorization is None:
            return
        if not isinstance(authorization, str):
            raise ConnectionRejectionError()
        signed_in = await self.credentials_context(context, authorization)
        if signed_in.auth_error is not None or signed_in.viewer is None:
            raise ConnectionRejectionError()
        context.extras[WS_AUTHORIZATION] = authorization

    async def operation_context(self, connection: Context) -> Context:
        # Bounded by the database's own limits (statement and pool timeouts), not by a task
        # of its own: an operation is cancelled whenever its socket closes, and work cut loose
        # then would outlive the connection it reads on.
        return await self.credentials_context(connection, connection.extras.get(WS_AUTHORIZATION))

    async def credentials_context(self, connection: Context, authorization: str | None) -> Context:
        return await build_context(
            connection.services,
            authorization=authorization,
            request_id=current_request_id() or uuid.uuid4().hex,
            client_address=connection.client_address,
            request=connection.request,
        )

    def operation_record(self, protocol: str) -> contextlib.AbstractContextManager[RequestRecord]:
        if self.tracing is not None:
            return self.tracing.operation(operation_record(protocol), protocol)
        return operation_record(protocol)

    async def render_graphql_ide(self, request: Request) -> Response:
        return explorer.page()


def create_app(
    settings: Settings | None = None,
    *,
    serving: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """The app; `serving` (the `serve` command) also tunes the garbage collector for a
    long-lived process. With tracing on (`Settings.tracing_on`), spans go to `tracer_provider`,
    else to one exporting over OTLP that the app shuts down (flushing it) with itself."""
    settings = settings or Settings()
    tracing = _tracing(settings, tracer_provider)
    config = settings.schema_config()
    passwords = Passwords.from_config(config)
    timeouts = Timeouts(
        statement=settings.db_statement_timeout or None, pool=settings.db_pool_timeout or None
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pre_ping=settings.db_pre_ping,
            timeouts=timeouts,
        )
        sessionmaker = make_sessionmaker(engine)
        broker = make_broker(settings.database_url, queue_size=settings.subscription_queue_size)
        watch = ViewerWatch(
            broker.hub, sessionmaker, interval=settings.subscription_recheck_seconds
        )
        reader = make_reader(engine)
        reads = make_reads(engine, reader, size=settings.db_pool_size, timeouts=timeouts)
        services = Services(
            sessionmaker=sessionmaker,
            reader=reader,
            driver_reads=reads,
            config=config,
            passwords=passwords,
            broker=broker,
            **operators(settings, sessionmaker),
        )
        instrument_engine(engine, reads)
        if tracing is not None:
            tracing.statements(engine, reads)
        app.state.engine = engine
        app.state.services = services
        app.state.trust_proxy = settings.trust_proxy
        app.state.watch = watch
        app.state.retention = retention = ChangeRetention(
            sessionmaker, seconds=settings.change_retention
        )
        app.state.stream_timeout = stream_timeout = StreamTimeout(
            sessionmaker, broker, seconds=settings.stream_timeout
        )
        if serving:
            # What start-up made lives as long as the process: move it out of the collector's
            # sight. A higher threshold saved little CPU and cost much memory (bench/README.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(settings.gc_threshold, 10, 10)
        try:
            if isinstance(reads, DriverReads):
                await reads.start()
            await broker.start()
            watch.start()
            retention.start()
            stream_timeout.start()
            yield
        finally:
            # Work given up at a deadline gives its connection back before the pools close.
            await unwound(seconds=5)
            await stream_timeout.close()
            await retention.close()
            await watch.close()
            await broker.close()
            if isinstance(reads, DriverReads):
                await reads.close()
            await engine.dispose()
            if tracing is not None and tracer_provider is None:
                tracing.provider.shutdown()

    documents = DocumentCache(settings.document_cache)
    # Queries answered before skip Strawberry's view (their answers stay Strawberry's).
    lane = (
        FastLane(documents, answered_query)
        if settings.document_cache and settings.query_plan
        else None
    )
    if lane is not None and tracing is not None:
        lane = tracing.fast_lane(lane)
    caches = [documents.extension()]
    # Browsers on the CORS origins may open subscriptions too (same-origin ones always may).
    graphql = GraphQLView(
        make_schema(
            extensions=[
                *(caches if settings.document_cache > 0 else []),
                OperationRecorder,
                *([Budgeted] if budgets_on(settings) else []),
                StoreRegistered,
                *([tracing.extension()] if tracing is not None else []),
            ],
            planned=settings.query_plan,
        ),
        allowed_origins=settings.cors_origins,
        subscription_protocols=(
            GRAPHQL_TRANSPORT_WS_PROTOCOL,
            GRAPHQL_WS_PROTOCOL,
            GRAPHQL_SSE_PROTOCOL,
        ),
        connection_init_wait_timeout=datetime.timedelta(seconds=settings.ws_init_timeout),
        max_subscriptions_per_connection=settings.ws_max_operations,
        persisted_query_cache_size=settings.persisted_query_cache_size,
        persisted_query_bounds=Bounds(
            max_bytes=settings.persisted_query_max_bytes,
            max_rows=settings.persisted_query_max_rows,
            ttl=settings.persisted_query_ttl,
        ),
        fast_lane=lane,
    )
    graphql.max_message_bytes = settings.max_body_bytes
    graphql.stream_transport_classes_by_protocol = {
        GRAPHQL_SSE_PROTOCOL: heartbeat_transport(settings.sse_heartbeat)
    }
    graphql.tracing = tracing
    routes = [
        # Every method reaches the view, which answers 405 in GraphQL's error format.
        Route("/graphql", RequestDeadline(graphql, seconds=settings.request_timeout)),
        WebSocketRoute("/graphql", graphql),
        # Issue 16: the viewer's data, under /graphql's auth, CSRF rule, deadline and budgets.
        *(
            Route(path, RequestDeadline(export, seconds=settings.request_timeout))
            for path, export in export_routes(settings).items()
        ),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz(settings.ready_timeout)),
        Route(
            "/metrics",
            metrics_endpoint(
                os.environ.get("PROMETHEUS_MULTIPROC_DIR"), token=settings.metrics_token
            ),
        ),
        *explorer.routes(),
    ]
    # The request log stays outermost, so refusals at the edge are logged too.
    middleware = [Middleware(RequestLog), *edge_middleware(settings)]
    if tracing is not None:
        # Inside the request log, which writes the trace id the span leaves in the record.
        middleware.insert(1, Middleware(tracing.middleware))
    # WebSockets to /graphql skip the stack above, which passes them on untouched.
    return DirectWebSockets(
        routes=routes, middleware=middleware, lifespan=lifespan, websockets={"/graphql": graphql}
    )


def export_routes(settings: Settings) -> dict[str, Export]:
    """`GET /export` and `GET /export/conversations/<id>.md` (`transport.export`)."""

    def address_of(request: Request) -> str | None:
        return client_address(request, trust_proxy=settings.trust_proxy)

    return {
        "/export": Export(markdown=False, address_of=address_of),
        "/export/conversations/{conversation_id:path}.md": Export(
            markdown=True, address_of=address_of
        ),
    }


def _tracing(settings: Settings, provider: TracerProvider | None) -> Tracing | None:
    """The app's tracing when it is on; OpenTelemetry (the `tracing` extra) is imported only
    then."""
    if not settings.tracing_on():
        return None
    from app.tracing import Tracing, provider_from_environment

    return Tracing(provider or provider_from_environment())


def operators(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    """The trusted documents and the cost budgets, each when on (issue 18)."""
    found: dict[str, Any] = {}
    if Mode(settings.trusted_documents) is not Mode.OFF:
        found["trusted"] = TrustedDocuments(
            sessionmaker,
            mode=settings.trusted_documents,
            admin_bypass=settings.trusted_documents_admin_bypass,
            untrusted=untrusted_operation,
        )
    if budgets_on(settings):
        found["budgets"] = Budgets(
            per_minute=settings.cost_budget_per_minute,
            burst=settings.cost_burst,
            mutation_minimum=settings.cost_mutation_minimum,
            sessionmaker=None if is_sqlite(settings.database_url) else sessionmaker,
        )
    return found


def edge_middleware(settings: Settings) -> list[Middleware]:
    """CORS (only for the configured origins), then the body limit."""
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-request-id", *PREFLIGHT_HEADERS],
                max_age=600,
            )
        )
    middleware.append(Middleware(BodyLimit, max_bytes=settings.max_body_bytes))
    return middleware


def serving_app() -> Starlette:
    return create_app(serving=True)
