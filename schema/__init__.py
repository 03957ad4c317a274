"""The GraphQL schema: `make_schema` builds the one schema the server serves."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from schema.budgets import budgets_of, charged_events
from schema.errors import ErrorCodes, Refused
from schema.feed import FeedQuery, FeedSubscription
from schema.limits import Limits
from schema.mutations import Mutation
from schema.operation import OperationContext
from schema.permissions import RejectBadTokens
from schema.plan import PlanExecutor
from schema.queries import Query
from schema.scalars import SCALARS
from schema.streams import StreamSubscription
from schema.subscriptions import Subscription
from schema.types import Conversation, Message, User

SUBSCRIPTION = OperationType.SUBSCRIPTION
# In a context's extras: an `asyncio.Event` set once the operation has begun (`Started`).
STARTED = "operation_started"


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Errors are logged where they are masked (`ErrorCodes`): expected ones are not logged.
        return None

    def _create_execution_context(
        self,
        query: str | None,
        allowed_operation_types: Iterable[OperationType],
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionContext:
        # Strawberry's, but one that runs no operation when several go unnamed.
        return OperationContext(
            query=query,
            schema=self,
            allowed_operations=allowed_operation_types,
            context=context_value,
            root_value=root_value,
            variables=variable_values,
            provided_operation_name=operation_name,
            operation_extensions=operation_extensions,
        )

    async def stream(
        self, query: str | None, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        """Strawberry's, with a subscription's events charged to the viewer's budget (every
        streaming transport comes here: both WebSocket protocols and SSE)."""
        results = await super().stream(query, *args, **kwargs)
        context = kwargs.get("context_value")
        if budgets_of(context) is None:
            return results
        return charged_events(results, context)


class Started(SchemaExtension):
    """The last `on_execute` hook: an operation refused by an earlier one (a bad token, a
    limit, the budget) stops here. Strawberry checks `execution_context.result` before it
    executes a query or mutation, but subscribes regardless: without this a subscription
    over a limit ran on every streaming transport (both WebSocket protocols and SSE).

    Once the operation has run (a query or mutation) or begun (a subscription is subscribed:
    graphql-core has its event stream, the first event may be hours away), unrefused,
    `STARTED` in the context's extras is set, when a streaming transport put an event there
    to learn that nothing refused it (`transport.sse`).
    """

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        result = execution.result
        if result is not None and result.errors and execution.operation_type is SUBSCRIPTION:
            raise Refused(result.errors)
        yield
        started = getattr(execution.context, "extras", {}).get(STARTED)
        if started is not None and result is None:
            started.set()


def make_schema(
    *,
    extensions: Sequence[type[SchemaExtension] | Callable[[], SchemaExtension]] = (),
    planned: bool = False,
    **config: Any,
) -> Schema:
    """`planned` runs queries on the plan (`schema.plan`; Strawberry runs what it misses,
    mutations and subscriptions); without it, Strawberry runs everything."""
    return Schema(
        query=merge_types("Query", (Query, FeedQuery)),
        mutation=Mutation,
        subscription=merge_types(
            "Subscription", (Subscription, FeedSubscription, StreamSubscription)
        ),
        types=[User, Conversation, Message],
        extensions=[ErrorCodes, RejectBadTokens, Limits, *extensions, Started],
        config=StrawberryConfig(scalar_map=SCALARS, **config),
        execution_context_class=PlanExecutor if planned else None,
    )
