"""Strawberry's resolvers, made from the definitions of `schema.fields`.

`defined("Type.field")` is the Strawberry field of a definition: its arguments are the
definition's, and its resolver answers for one object by running the batch definition over a
level of that one object. Definitions read data through the request's DataLoaders, so the
calls of sibling objects still meet in one batch per loader, at the same turns of the event
loop as hand-written resolvers (the statement counts of Strawberry's runs, mutations' payloads
and subscriptions included, are what they were). A batching DataLoader per field in front of
the definitions was tried: it adds a turn of the loop per level, and sibling branches of
different depths then miss each other's batches. A plain attribute is read as it is.

Every Strawberry object wraps what the definitions take as a row (`Wrapper.row`): a database
row, a `Paged` for a connection, an edge. A value of the column becomes this object's answer:
a row is wrapped in the field's Strawberry type, `Of` in its concrete type, `Failed` is raised.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Self

import strawberry
from graphql import (
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
)
from strawberry.types.field import StrawberryField

from schema.fields import DEFINITIONS, ROOT, Definition, Failed, Level, Of

BACKREF = "strawberry-definition"


@dataclass
class Wrapper:
    """A Strawberry object over the row its fields' definitions read."""

    # Builtins alone in the annotation: Strawberry reads it in every subclass's module.
    row: strawberry.Private[object]

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(row=row)


class DefinedField(StrawberryField):
    """A Strawberry field whose resolver is made from `definition` (the planned executor
    reads it from here too)."""

    definition: Definition

    def __copy__(self) -> Self:  # Strawberry copies fields (for generic types)
        copied = super().__copy__()
        copied.definition = self.definition
        return copied


def _wrap(schema: GraphQLSchema, output: GraphQLOutputType) -> Callable[[Any], Any]:
    """How a value of a column becomes what Strawberry completes as `output`."""
    if isinstance(output, GraphQLNonNull):
        return _wrap(schema, output.of_type)
    if isinstance(output, GraphQLList):
        item = _wrap(schema, output.of_type)
        return lambda values: [item(value) for value in values]
    if isinstance(output, GraphQLObjectType):
        origin = output.extensions[BACKREF].origin
        return lambda row: origin(row=row)
    if isinstance(output, GraphQLInterfaceType):

        def concrete(value: Of) -> Any:
            named = schema.get_type(value.type_name)
            assert named is not None
            return named.extensions[BACKREF].origin(row=value.row)

        return concrete
    return lambda value: value  # a scalar or an enum: Strawberry serialises it


def _answer(value: Any, wrap: Callable[[Any], Any]) -> Any:
    """A value of a column as Strawberry takes it; an object's error is returned, not raised."""
    if isinstance(value, Failed):
        return value.error
    if value is None:
        return None
    return wrap(value)


def _raised(answer: Any) -> Any:
    if isinstance(answer, Exception):
        raise answer
    return answer


def _row_of(root: Any) -> Any:
    return ROOT if root is None else root.row


def _resolver(definition: Definition) -> Callable[..., Any]:
    if definition.attribute is not None:
        get = attrgetter(definition.attribute)

        def read(root: Any, info: strawberry.Info) -> Any:
            return get(root.row)

        return read

    if not definition.is_async:

        def run(root: Any, info: strawberry.Info, **args: Any) -> Any:
            level = Level([_row_of(root)], info.context)
            column = definition.resolve(level, args)
            assert isinstance(column, list)
            raw = info._raw_info
            return _raised(_answer(column[0], _wrap(raw.schema, raw.return_type)))

        return run

    async def load(root: Any, info: strawberry.Info, **args: Any) -> Any:
        made = definition.resolve(Level([_row_of(root)], info.context), args)
        assert inspect.isawaitable(made)
        column = await made
        raw = info._raw_info
        return _raised(_answer(column[0], _wrap(raw.schema, raw.return_type)))

    return load


def defined(name: str) -> Any:
    """The Strawberry field of the definition `name` ("Type.field", GraphQL names)."""
    definition = DEFINITIONS[name]
    resolver = _resolver(definition)
    parameters = [
        inspect.Parameter("root", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter(
            "info", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=strawberry.Info
        ),
    ]
    for argument, (annotation, default) in definition.arguments.items():
        parameters.append(
            inspect.Parameter(
                argument, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
            )
        )
    resolver.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    resolver.__name__ = name.rpartition(".")[2]
    field = DefinedField(description=definition.description)
    field.definition = definition
    return field(resolver)


def definition_of(field: Any) -> Definition | None:
    """The definition behind a graphql-core field, if it has one."""
    return getattr(field.extensions.get(BACKREF), "definition", None)
