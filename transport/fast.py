"""The fast lane: a query the app has already parsed and validated, answered without going
through Strawberry's view and schema machinery again.

For a small query most of a request's CPU is fixed cost: Strawberry's view (the request
adapter, the sub-response, body parsing through the standard library), its execution
context, and the extension runner that enters and leaves a context manager per hook per
extension. Here a plain `POST application/json` of a known document goes straight to the same
executor Strawberry would use (the plan, with Strawberry's resolvers behind it), after the
same checks: the same context (viewer and loaders), the limits and the text check of
`schema.limits`. Only an answer with no errors is given this way; anything else (a bad token, a
limit, a variable that does not coerce, a field error) is declined, and the request goes the
usual way, with the context already built, so the answer is Strawberry's own. Queries have no
side effects: running one again from the start is safe. Except when every error is the
database's (`db.errors.Unavailable`): running it again would only wait as long again, so it
is answered here, as Strawberry's error extension would have coded it (SERVICE_UNAVAILABLE).

The mutation lane (issue 15: `appendMessage` is a producer's every token). A mutation of a known
document takes the same steps in the same order (the context with the viewer read from the
database, never taken on trust, the budget key, trusted documents, the limits and the text
check, the budget's charge), and is declined the same way when one of them refuses it: nothing
has run yet. Once it has run, it is answered here whatever its errors, since it must not run
twice: each error as `ErrorCodes` makes it (`schema.errors.public_errors`: coded, the
unexpected masked and logged with the request id), the request's log line and metrics told
(`recorded`), a database that failed the whole operation answered 503 (`note_result`). Only an
operation stopped before execution began (a variable that does not coerce) goes the usual way.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationType,
    execute,
    get_operation_ast,
)
from starlette.requests import Request
from starlette.responses import Response
from strawberry.asgi import GraphQL
from strawberry.execution import optimized_is_awaitable

from db.errors import Unavailable
from schema.budgets import charge_operation
from schema.caches import DocumentCache, PerDocument
from schema.context import Context
from schema.errors import PublicError, is_request_error, public_errors
from schema.limits import refusals, text_refusal
from schema.trusted import admit
from transport.deadline import note_result
from transport.responses import JSON

REQUEST_KEYS = frozenset({"query", "variables", "operationName"})
# Accept values that ask Strawberry for a streaming transport.
STREAMING = ("multipart/mixed", "text/event-stream")


# The operations answered here: a query, or a mutation (its own lane, see the module's doc).
LANES = (OperationType.QUERY, OperationType.MUTATION)


class FastLane:
    """`recorded(name, errors, kind)` is told of each operation answered here (Strawberry's own
    path has an extension for that: the request log and the metrics)."""

    def __init__(
        self,
        documents: DocumentCache,
        recorded: Callable[[str | None, list[GraphQLError], str], None] = lambda _, __, ___: None,
    ) -> None:
        self.documents = documents
        self.recorded = recorded
        # Documents whose answer once had errors: they go the usual way from then on, so that
        # a query that keeps failing does not keep running twice.
        self.failed: PerDocument[DocumentNode, list[bool]] = PerDocument(lambda _: [False])

    async def answer(
        self, view: GraphQL[Context, None], request: Request
    ) -> Response | Context | None:
        """The answer; or, when the request must go the usual way, the context to go with it
        (built already: the viewer is looked up once), or None when not even that was made."""
        if request.method != "POST" or any(
            kind in request.headers.get("accept", "") for kind in STREAMING
        ):
            return None
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != JSON:
            return None
        found = _request_data(view, await request.body())
        if found is None:
            return None
        query, variables, operation_name = found
        document = self.known(query)
        if document is None or self.failed(document)[0]:
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation not in LANES:
            return None
        mutation = operation.operation is OperationType.MUTATION
        # A query's viewer may come from the process's cache, checked by the first statement;
        # every way out below confirms it first (`schema.context.build_context`). A mutation's
        # is read before it runs: what it writes cannot be taken back.
        request.state.tentative_viewer = not mutation
        try:
            # No sub-response: nothing reads the context's (a declined request's answer is
            # made by Strawberry, with a sub-response of its own).
            context = await view.get_context(request, None)  # type: ignore[arg-type]
        finally:
            request.state.tentative_viewer = False
        if context.auth_error is not None:
            return context
        services = context.services
        if services.budgets is not None:
            request.state.budget_key = services.budgets.key_of(
                context.viewer, context.client_address
            )
        if services.trusted is not None and not await context.confirm_viewer():
            return context
        try:
            await admit(context, query)
        except PublicError:
            return await _confirmed(context)  # refused the usual way
        schema: Any = view.schema
        if self.refused(schema, document, variables, operation_name, context):
            return await _confirmed(context)
        charge = await charge_operation(
            context, schema._schema, document, operation_name, variables
        )
        if charge is not None and not charge.allowed:
            return await _confirmed(context)  # refused the usual way, with the same charge
        name = operation_name or (operation.name.value if operation.name else None)
        result = await self.run(schema, document, variables, name, context)
        if mutation:
            if is_request_error(result):
                return context  # nothing ran (a variable that does not coerce): the usual way
            return self.answered(request, result, context, name, "mutation")
        # Unavailable here refuses the request, as a failed lookup of the viewer does.
        if not await context.confirm_viewer():
            return context  # the viewer changed: the usual way, with the viewer as it is now
        if not isinstance(result, ExecutionResult) or result.errors or result.extensions:
            if isinstance(result, ExecutionResult) and _unavailable_only(result):
                return self.answered(request, result, context, name, "query")
            self.failed(document)[0] = True
            context.reset_loaders()
            return context
        self.recorded(name, [], "query")
        request.state.graphql_ran = True
        return Response(orjson.dumps({"data": result.data}), media_type=JSON)

    def known(self, query: str) -> DocumentNode | None:
        """The document of this text if the app has parsed and validated it before."""
        document = self.documents.parsed.get(query)
        return document if document is not None and query in self.documents.validated else None

    def refused(
        self,
        schema: Any,
        document: DocumentNode,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Context,
    ) -> bool:
        """Whether the operation goes over a limit or holds text the databases refuse."""
        if refusals(schema._schema, document, operation_name, variables, context.config):
            return True
        return text_refusal(document, variables, operation_name) is not None

    async def run(
        self,
        schema: Any,
        document: DocumentNode,
        variables: dict[str, Any] | None,
        name: str | None,
        context: Context,
    ) -> Any:
        """The executor's result (the plan's, with Strawberry's resolvers behind it)."""
        result = execute(
            schema._schema,
            document,
            variable_values=variables,
            operation_name=name,
            context_value=context,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=schema.execution_context_class,
            operation_extensions=None,
        )
        return await result if isawaitable(result) else result

    def answered(
        self,
        request: Request,
        result: ExecutionResult,
        context: Context,
        name: str | None,
        kind: str,
    ) -> Response:
        """The answer to an operation that ran, errors and all, as Strawberry's way gives it:
        `{"data": ..., "errors": [...]}` (200; 503 when the database failed all of it)."""
        body: dict[str, Any] = {"data": result.data}
        errors = public_errors(list(result.errors), context) if result.errors else []
        if errors:
            body["errors"] = [error.formatted for error in errors]
        if result.extensions:
            body["extensions"] = result.extensions
        note_result(request.state, result.data, errors)
        self.recorded(name, errors, kind)
        request.state.graphql_ran = True
        return Response(orjson.dumps(body), media_type=JSON)


async def _confirmed(context: Context) -> Context:
    await context.confirm_viewer()
    return context


def _unavailable_only(result: ExecutionResult) -> bool:
    return all(isinstance(error.original_error, Unavailable) for error in result.errors or ())


def _request_data(
    view: GraphQL[Context, None], body: bytes
) -> tuple[str, dict[str, Any] | None, str | None] | None:
    """(query, variables, operationName) of a plain JSON request, read as the view reads it,
    else None."""
    try:
        data = view.decode_json(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not data.keys() <= REQUEST_KEYS:
        return None
    query, variables, name = data.get("query"), data.get("variables"), data.get("operationName")
    if not isinstance(query, str) or not isinstance(name, str | None):
        return None
    if not isinstance(variables, dict | None):
        return None
    return query, variables, name
