"""Which operation of a document runs: the GraphQL spec's GetOperation, on every transport.

Strawberry's `ExecutionContext` falls back to the document's first operation when the request
names none, so `mutation A { ... } query B { ... }` sent without `operationName` ran the
mutation (and, over GET, was refused as a mutation). The spec says otherwise ("GetOperation":
with no operation name, a document with more than one operation is a request error requiring
one), and so does graphql-core. `OperationContext` gives such a request no operation: its type
cannot be found, so Strawberry refuses it before validation, as it refuses an unknown
`operationName` (over HTTP: 400 BAD_REQUEST with `OperationNameRequired`'s message).
"""

from __future__ import annotations

from graphql import OperationDefinitionNode
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

# graphql-core's own wording for the same error.
OPERATION_NAME_REQUIRED = "Must provide operation name if query contains multiple operations."


class OperationNameRequired(RuntimeError):
    """Strawberry turns it into `CannotGetOperationTypeError`, chained `from` this."""


def names_no_operation(error: BaseException | None) -> bool:
    """Whether Strawberry's error is the refusal of several operations with no name (every
    transport answers it with `OPERATION_NAME_REQUIRED`)."""
    return isinstance(error, CannotGetOperationTypeError) and isinstance(
        error.__cause__, OperationNameRequired
    )


class OperationContext(ExecutionContext):
    @property
    def operation_name(self) -> str | None:
        if self.needs_a_name():
            return None
        return super().operation_name

    @property
    def operation_type(self) -> OperationType:
        if self.needs_a_name():
            raise OperationNameRequired(OPERATION_NAME_REQUIRED)
        return super().operation_type

    def needs_a_name(self) -> bool:
        """Whether the request names no operation and the document has several."""
        document = self.graphql_document
        if self._provided_operation_name is not None or document is None:
            return False
        operations = 0
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                operations += 1
                if operations > 1:
                    return True
        return False
