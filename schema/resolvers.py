"""Strawberry's resolvers, made from the definitions of `schema.fields`.

`defined("Type.field")` is the Strawberry field of a definition: its arguments are the
definition's, and its resolver answers for one object by running the batch definition for all
the objects of the level that ask the same field with the same arguments (`FieldLoader`, one
per request, field and arguments; graphql-core starts the resolvers of sibling objects before
any of them waits, so they land in one batch). A definition that reads no data (`User.email`,
a cursor) runs for the one object directly, and a plain attribute is read as it is.

Every Strawberry object wraps what the definitions take as a row (`Wrapper.row`): a database
row, a `Paged` for a connection, an edge. A value of the column becomes this object's answer:
a row is wrapped in the field's Strawberry type, `Of` in its concrete type, `Failed` is raised.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from collections.abc import Callable, Hashable
from operator import attrgetter
from typing import Any, Self

import strawberry
from aiodataloader import DataLoader
from graphql import (
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
)
from strawberry.types.field import StrawberryField

from schema.context import Context
from schema.fields import DEFINITIONS, ROOT, Args, Column, Definition, Failed, Level, Of

BACKREF = "strawberry-definition"


@dataclass
class Wrapper:
    """A Strawberry object over the row its fields' definitions read."""

    row: strawberry.Private[object]  # builtins alone: Strawberry reads it in every subclass's module

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


class FieldLoader(DataLoader[Any, Any]):
    """The objects of one level that ask one field with the same arguments: one batch."""

    def __init__(self, definition: Definition, context: Context, args: Args) -> None:
        super().__init__(cache=False)  # keys are rows: not hashed, not kept
        self.definition = definition
        self.context = context
        self.args = args

    async def batch_load_fn(self, rows: list[Any]) -> Column:
        column = self.definition.resolve(Level(rows, self.context), self.args)
        assert inspect.isawaitable(column)
        return await column


def _frozen(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _frozen(item)) for key, item in value.items()))
    assert isinstance(value, Hashable)
    return value


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


def _answer(value: Any, info: GraphQLResolveInfo[Any]) -> Any:
    if isinstance(value, Failed):
        raise value.error
    if value is None:
        return None
    return _wrap(info.schema, info.return_type)(value)


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
            return _answer(column[0], info._raw_info)

        return run

    async def load(root: Any, info: strawberry.Info, **args: Any) -> Any:
        context: Context = info.context
        key = (definition.name, _frozen(args))
        loader = context.loaders.by_field.get(key)
        if loader is None:
            loader = context.loaders.by_field[key] = FieldLoader(definition, context, args)
        return _answer(await loader.load(_row_of(root)), info._raw_info)

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
