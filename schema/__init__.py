"""The GraphQL schema: `make_schema` builds the one schema the server serves."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from schema.errors import ErrorCodes
from schema.limits import Limits
from schema.mutations import Mutation
from schema.operation import OperationContext
from schema.permissions import RejectBadTokens
from schema.plan import PlanExecutor
from schema.queries import Query
from schema.scalars import SCALARS
from schema.subscriptions import Subscription
from schema.types import Conversation, Message, User


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


def make_schema(
    *,
    extensions: Sequence[type[SchemaExtension] | Callable[[], SchemaExtension]] = (),
    planned: bool = False,
    **config: Any,
) -> Schema:
    """`planned` runs queries on the plan (`schema.plan`; Strawberry runs what it misses,
    mutations and subscriptions); without it, Strawberry runs everything."""
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[User, Conversation, Message],
        extensions=[ErrorCodes, RejectBadTokens, Limits, *extensions],
        config=StrawberryConfig(scalar_map=SCALARS, **config),
        execution_context_class=PlanExecutor if planned else None,
    )
