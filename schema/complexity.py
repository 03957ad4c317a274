"""How big an operation is, measured on the validated document before anything runs.

- depth: fields on the longest path (`{ me { id } }` is 2).
- aliases: aliased fields, counted in every fragment where it is spread.
- cost: the objects the operation may return. A field of object, interface or union type counts
  one per instance of its parent; a list multiplies what is under it: `edges` by its
  connection's page size (`first` or `last`, else the default page size), `nodes(ids:)` by the
  number of ids, any other list by the default page size. Scalars are free.
  `users(first: 100) { edges { node { id } } }` costs 1 + 100 * (1 + 1) = 201.

Introspection (`__schema`, `__type`) is left out: it walks the schema, not the data.
Fragments are measured once per (fragment, page size of the enclosing connection), so measuring
is linear in the size of the document whatever the spreads multiply to. Variables are read as
they were sent (an argument that is not an integer counts as the default page size); `read`
collects the names of those the measures depend on, so measures can be reused for a document
while those variables stay the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    value_from_ast_untyped,
)

# Figures saturate here: far above any limit, and still an exact integer in JSON everywhere.
CEILING = 2**53 - 1


@dataclass(frozen=True)
class Measures:
    depth: int = 0
    aliases: int = 0
    cost: int = 0


NOTHING = Measures()


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
    *,
    default_page_size: int,
    read: set[str] | None = None,
) -> Measures:
    root = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }[operation.operation]
    walker = _Walker(schema, document, operation, variables or {}, default_page_size)
    if read is not None:
        walker.read = read
    return walker.selection_set(root, operation.selection_set, None)


class _Walker:
    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
        default_page_size: int,
    ) -> None:
        self.schema = schema
        self.fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.variables = dict(variables)
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            if name not in self.variables and definition.default_value is not None:
                self.variables[name] = value_from_ast_untyped(definition.default_value)
        self.default_page_size = default_page_size
        self.memo: dict[tuple[str, int | None], Measures] = {}
        self.open: set[str] = set()
        self.read: set[str] = set()

    def selection_set(
        self, parent: GraphQLNamedType | None, selection_set: SelectionSetNode, page: int | None
    ) -> Measures:
        """The measures of one instance of `parent`; `page` sizes the lists directly inside."""
        depth = aliases = cost = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                part = self.field(parent, selection, page)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                part = self.selection_set(inner, selection.selection_set, page)
            elif isinstance(selection, FragmentSpreadNode):
                part = self.spread(selection.name.value, page)
            else:  # pragma: no cover - graphql-core has no other kind of selection
                continue
            depth = max(depth, part.depth)
            aliases += part.aliases
            cost = min(cost + part.cost, CEILING)
        return Measures(depth=depth, aliases=aliases, cost=cost)

    def spread(self, name: str, page: int | None) -> Measures:
        fragment = self.fragments.get(name)
        # A cycle is a validation error; guard anyway so measuring always ends.
        if fragment is None or name in self.open:
            return NOTHING
        key = (name, page)
        if key not in self.memo:
            self.open.add(name)
            try:
                parent = self.schema.get_type(fragment.type_condition.name.value)
                self.memo[key] = self.selection_set(parent, fragment.selection_set, page)
            finally:
                self.open.discard(name)
        return self.memo[key]

    def field(self, parent: GraphQLNamedType | None, node: FieldNode, page: int | None) -> Measures:
        aliases = 1 if node.alias else 0
        definition = _field_definition(parent, node.name.value)
        if definition is None or node.selection_set is None:
            return Measures(depth=1, aliases=aliases)
        named = get_named_type(definition.type)
        if not is_composite_type(named):  # pragma: no cover - validation forbids it
            return Measures(depth=1, aliases=aliases)
        own_page = self.page_size(node) if _is_paginated(definition) else None
        inner = self.selection_set(named, node.selection_set, own_page)
        instances = self.list_size(definition, node, page) if _is_list(definition) else 1
        return Measures(
            depth=1 + inner.depth,
            aliases=aliases + inner.aliases,
            cost=min(instances * (1 + inner.cost), CEILING),
        )

    def page_size(self, node: FieldNode) -> int:
        arguments = {argument.name.value: argument.value for argument in node.arguments or ()}
        for name in ("first", "last"):
            value = self.value(arguments.get(name))
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool):
                return min(max(value, 0), CEILING)
        return self.default_page_size

    def list_size(self, definition: GraphQLField, node: FieldNode, page: int | None) -> int:
        if page is not None:
            return page
        for argument in node.arguments or ():
            argument_definition = definition.args.get(argument.name.value)
            if argument_definition is None or not _is_list_type(argument_definition.type):
                continue
            value = self.value(argument.value)
            if isinstance(value, list):
                return len(value)
            if value is not None:
                return 1  # a single value given for a list argument is a list of one
        return self.default_page_size

    def value(self, node: ValueNode | None) -> Any:
        if node is None or isinstance(node, NullValueNode):
            return None
        if isinstance(node, VariableNode):
            self.read.add(node.name.value)
            return self.variables.get(node.name.value)
        if isinstance(node, IntValueNode):
            return int(node.value)
        return value_from_ast_untyped(node)


def _field_definition(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if name.startswith("__") or not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        return None
    field: GraphQLField | None = parent.fields.get(name)
    return field


def _is_paginated(definition: GraphQLField) -> bool:
    return "first" in definition.args or "last" in definition.args


def _is_list(definition: GraphQLField) -> bool:
    return _is_list_type(definition.type)


def _is_list_type(type_: Any) -> bool:
    return isinstance(get_nullable_type(type_), GraphQLList)
