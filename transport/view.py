"""The GraphQL view with the transport rules of RULES.md around Strawberry's.

Before anything runs (and before the viewer is looked up): the method (GET and POST; any other
is 405) and CSRF, Apollo Server's rule: a request a browser could send cross-site without a
preflight (no `Content-Type`, or `text/plain`, `application/x-www-form-urlencoded` or
`multipart/form-data`) needs a non-empty `X-Requested-With`, `Apollo-Require-Preflight` or
`X-Apollo-Operation-Name` header (GraphiQL's page is exempt). Then Strawberry parses the request,
persisted queries and trusted documents sent by hash or id are resolved, the operation is
admitted (`schema.trusted.admit`, before it is parsed: PERSISTED_QUERY_REQUIRED under enforce),
it is charged to the viewer's budget (`schema.budgets`), it runs, and:

- the answer is in `application/graphql-response+json` when the client prefers it, else JSON;
- an operation that could not run (a request error: parse or validation error, a limit,
  variables that do not coerce, a bad token, an unknown persisted query) is answered with
  `errors` and no `data` entry (GraphQL spec, "Response": when an error is raised before
  execution begins, `data` is not present), 400 in `application/graphql-response+json` and
  200 in `application/json`; one that ran is 200, even with field errors;
- a malformed request (not JSON, no query, an unknown `operationName`, several operations and
  none named, ...) is 400 and a mutation over GET 405, each with a GraphQL error body and
  `extensions.code` BAD_REQUEST;
- an operation its budget cannot pay is 429 with `Retry-After`; with budgets on, every answer
  to an operation has the `RateLimit-Policy` and `RateLimit` headers;
- every refusal leaves its outcome in `request.state.refused` (`http_STATUS`, or the code of
  one that is not a fixed status, such as PERSISTED_QUERY_NOT_FOUND) for the request log;
- anything unexpected (in the context, the database, this layer) is logged with the request id
  and answered 500 with INTERNAL_SERVER_ERROR and no detail.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import orjson
from cross_web import HTTPException, StarletteRequestAdapter
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.base import BaseSchema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from db.errors import Unavailable
from schema.budgets import BUDGET, Charge, over_budget_of
from schema.context import Context, Services
from schema.errors import INTERNAL, BadRequest, PublicError, is_request_error
from schema.limits import operation_name_refusal
from schema.operation import OPERATION_NAME_REQUIRED, names_no_operation
from schema.trusted import TrustedDocuments, admit
from transport.body import BodyTooLarge
from transport.deadline import note_result
from transport.fast import FastLane
from transport.persisted import (
    DOCUMENT_ID_KEYS,
    Bounds,
    PersistedQueries,
    document_id,
    registration_of,
    requested_hash,
    trusted_text,
)
from transport.responses import GRAPHQL_RESPONSE, JSON, Refusal, media_type_of
from transport.websockets import TextWebSocketAdapter

logger = logging.getLogger("chatql.http")

METHOD_NOT_ALLOWED = "GraphQL is served over GET and POST."
MUTATION_OVER_GET = "Mutations are sent with POST; GET runs queries only."
CSRF_REFUSED = (
    "A request with no Content-Type, or with text/plain, application/x-www-form-urlencoded or "
    "multipart/form-data, needs a non-empty X-Requested-With, Apollo-Require-Preflight or "
    "X-Apollo-Operation-Name header (CSRF protection)."
)
NOT_AN_OBJECT = "Expected a JSON object."
NOT_JSON = "Unable to parse request body as JSON"
PREFLIGHT_HEADERS = ("x-requested-with", "apollo-require-preflight", "x-apollo-operation-name")
# What a browser sends cross-site without a preflight (the Fetch standard's CORS-safelisted
# request header `Content-Type`); a request with no Content-Type at all is one of these too.
SIMPLE_CONTENT_TYPES = frozenset(
    {"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(connection: HTTPConnection) -> str:
    """The request's id: the client's `X-Request-ID` when it is sane, else a fresh one."""
    found: str | None = getattr(connection.state, "request_id", None)
    if found is None:
        given = connection.headers.get("x-request-id", "")
        found = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        connection.state.request_id = found
    return found


class RequestAdapter(StarletteRequestAdapter):
    """Strawberry's adapter, keeping the request for the hooks that are only given this."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.request = request


class BaseGraphQLView(GraphQL[Context, None]):
    request_adapter_class = RequestAdapter
    websocket_adapter_class = TextWebSocketAdapter

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def __init__(
        self,
        schema: BaseSchema,
        *,
        persisted_query_cache_size: int = 1000,
        persisted_query_bounds: Bounds | None = None,
        fast_lane: FastLane | None = None,
        **options: Any,
    ) -> None:
        super().__init__(schema, **options)
        self.persisted_query_cache_size = persisted_query_cache_size
        self.persisted_query_bounds = persisted_query_bounds
        self.store: PersistedQueries | None = None
        self.fast_lane = fast_lane

    def persisted_queries(self, request: Request) -> PersistedQueries:
        """The app's store, made on first use: the sessionmaker exists once the app has started."""
        if self.store is None:
            services: Services = request.app.state.services
            self.store = PersistedQueries(
                services.sessionmaker,
                capacity=self.persisted_query_cache_size,
                bounds=self.persisted_query_bounds,
            )
        return self.store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        media_type = media_type_of(request.headers)
        try:
            self.refuse_early(request)
            answer = await self.fast_lane.answer(self, request) if self.fast_lane else None
            if isinstance(answer, Response):
                response = answer
            else:
                response = await self.run(request, context=answer or UNSET)
        except Refusal as refusal:
            return self.refuse(request, refusal, media_type)
        except HTTPException as exc:
            return self.refuse(request, self.translate(request, exc), media_type)
        except BodyTooLarge:
            raise  # answered by the body limit
        except Unavailable:
            raise  # answered 503 by transport.deadline.RequestDeadline
        except Exception:
            request_id = request_id_of(request)
            logger.exception("unexpected error answering a request (request %s)", request_id)
            internal = Refusal(500, INTERNAL, code="INTERNAL_SERVER_ERROR", requestId=request_id)
            return self.refuse(request, internal, media_type)
        ran: bool | None = getattr(request.state, "graphql_ran", None)
        if ran is not None and response.media_type == JSON:
            response.headers["content-type"] = media_type
            response.headers["vary"] = "Accept"
            if not ran and media_type == GRAPHQL_RESPONSE:
                response.status_code = 400
        self.budget_headers(request, response)
        return response

    def budget_headers(self, request: Request, response: Response) -> None:
        """With budgets on: 429 and `Retry-After` for an operation its budget refused, and
        the `RateLimit-Policy` and `RateLimit` headers on every answer to a viewer."""
        services: Services = request.app.state.services
        budgets = services.budgets
        if budgets is None:
            return
        retry_after: int | None = getattr(request.state, "retry_after_budget", None)
        if retry_after is not None:
            response.status_code = 429
            response.headers["Retry-After"] = str(retry_after)
        charge: Charge | None = getattr(request.state, BUDGET, None)
        key: str | None = getattr(request.state, "budget_key", None)
        if charge is None and key is not None:
            charge = budgets.peek(key)
        if charge is not None:
            response.headers.update(budgets.headers(charge))

    def refuse_early(self, request: Request) -> None:
        if request.method not in ("GET", "POST"):
            raise Refusal(405, METHOD_NOT_ALLOWED, headers={"Allow": "GET, POST"})
        if self.should_render_graphql_ide(self.request_adapter_class(request)):
            return
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type not in SIMPLE_CONTENT_TYPES:
            return  # a browser asks the server first (a preflight), and CORS decides
        if not any(request.headers.get(name, "").strip() for name in PREFLIGHT_HEADERS):
            raise Refusal(400, CSRF_REFUSED)

    def refuse(self, request: Request, refusal: Refusal, media_type: str) -> Response:
        request.state.refused = refusal.outcome
        return refusal.response(media_type)

    def translate(self, request: Request, exc: HTTPException) -> Refusal:
        cause = exc.__cause__
        if names_no_operation(cause):
            return Refusal(400, OPERATION_NAME_REQUIRED)
        if (
            isinstance(cause, InvalidOperationTypeError)
            and cause.operation_type is OperationType.MUTATION
            and request.method == "GET"
        ):
            return Refusal(405, MUTATION_OVER_GET, headers={"Allow": "POST"})
        return Refusal(exc.status_code, exc.reason)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # An Apollo client sends a persisted query over GET with no `query` parameter; a
        # trusted document may be named by its id alone.
        params = request.query_params
        return super().should_render_graphql_ide(request) and not any(
            params.get(key) is not None for key in ("extensions", *DOCUMENT_ID_KEYS)
        )

    def parse_json(self, data: str | bytes) -> Any:
        try:
            value = self.decode_json(data)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
            raise HTTPException(400, NOT_JSON) from exc
        if not isinstance(value, dict | list):  # a list is a batch, refused by Strawberry
            raise HTTPException(400, NOT_AN_OBJECT)
        return value

    async def parse_http_body(self, request_adapter: Any) -> Any:
        data = await super().parse_http_body(request_adapter)
        if not isinstance(data, GraphQLRequestData):
            return data
        refusal = operation_name_refusal(data.operation_name)
        if isinstance(refusal, BadRequest):
            raise HTTPException(400, refusal.message)
        if refusal is not None:  # a name no operation has: refused as text, like the rest
            raise Refusal(None, refusal.message, **refusal.extensions)
        request: Request = request_adapter.request
        sha256 = requested_hash(data.extensions)
        trusted: TrustedDocuments | None = request.app.state.services.trusted
        if trusted is not None and data.query is None:
            key = sha256 or await document_id(request)
            if key is not None:
                data.query = await trusted_text(trusted, key, fallback=sha256 is not None)
                if data.query is not None:
                    return data
        if sha256 is not None:
            store = self.persisted_queries(request)
            if trusted is not None and trusted.enforcing:
                # No registration under enforce: the text must be trusted on its own.
                store.check_hash(sha256, data.query)
                return data
            data.query, request.state.registration = await store.resolve(sha256, data.query)
        return data

    async def execute_operation(  # type: ignore[override]
        self, request: Request, request_data: Any, context: Context, **rest: Any
    ) -> Any:
        """Strawberry's, after the admission every transport makes (`schema.trusted.admit`);
        the viewer's budget key is noted for the answer's RateLimit headers."""
        services = context.services
        if services.budgets is not None:
            key = services.budgets.key_of(context.viewer, context.client_address)
            request.state.budget_key = key
        batch = request_data if isinstance(request_data, list) else [request_data]
        for item in batch:
            if item.query is not None:
                try:
                    await admit(context, item.query)
                except PublicError as error:
                    raise Refusal(None, error.message, **error.extensions) from None
        return await super().execute_operation(
            request=request, request_data=request_data, context=context, **rest
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        ran = not isinstance(result, PreExecutionError)
        over = over_budget_of(result)
        if over is not None:
            request.state.retry_after_budget = over
        request.state.graphql_ran = ran and not is_request_error(result)
        note_result(request.state, result.data, result.errors)  # 503 when it failed entirely
        registration = registration_of(request)
        if registration is not None and registration.failure is not None:
            raise registration.failure  # nothing ran: answered 500 by `respond`
        answer = await super().process_result(request, result)
        if not request.state.graphql_ran:
            answer.pop("data", None)
        return answer
