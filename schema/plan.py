"""Planned execution: a validated query run level by level instead of field by field.

graphql-core completes a result one field of one object at a time: a Q1 page is some 65,000
resolver calls, each with its own info object, awaitable checks and serialisation. Here the
query is walked once per nesting *level*: the fields of a level are collected once (with
graphql-core's own `collect_fields`, so aliases, fragments, variables and `@include`/`@skip`
mean exactly what they mean to it), every field becomes one column of values for all the
objects of the level, made by the field's one definition (`schema.fields`, the same batch
resolver Strawberry's resolvers run), and the rows go straight into the response dicts.
Nothing here knows a field: scalars are serialised by their GraphQL type, relations recurse
with the child rows, lists are flattened into one level and split back.

A connection whose edges the database wrote as JSON (`db.page_json`, asked for by a definition
through `Selection.shape`) is spliced into the answer unparsed. What the plan collects of a
document is kept with it across requests (`Memo`).

An error for one object (a `Failed` value in a column: FORBIDDEN, NOT_FOUND) is reported as
graphql-core reports a resolver's: at its path, with its locations and code, and a null where
the type forbids one makes the nearest nullable parent null (`Walk.finished`). Anything else
raises `Miss`: a second such error (which of several Strawberry reports first is a race of its
own), an exception (a bad argument is an error for every object), or a field without a
definition. Then the operation is run again, from the start, by Strawberry's own executor,
which reports it (logged as PLAN_MISSED, with the field and the reason). A query has no side
effects, so running it twice is safe. Field middleware (extensions that wrap resolvers) turns
the plan off, since it would skip them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from inspect import isawaitable
from operator import is_
from typing import Any, TypeVar

import orjson
from graphql import (
    DirectiveNode,
    ExecutionResult,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    Node,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    get_named_type,
    visit,
)
from graphql.execution.collect_fields import (
    FieldDetailsList,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import get_argument_values
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from db.page_json import Shape
from schema.caches import PerDocument
from schema.context import Context
from schema.fields import ROOT, Args, Column, Failed, Level, Prefetch, gather
from schema.resolvers import BACKREF, definition_of

logger = logging.getLogger("chatql.plan")
PLAN_MISSED = "the plan does not cover this operation; Strawberry runs it"
IS_NONE = partial(is_, None)
# Scalars whose values the definitions give as graphql-core would serialise them.
AS_THEY_ARE = frozenset({"String", "Int", "Float", "Boolean", "ID"})


class Miss(Exception):
    """The plan does not cover this operation: Strawberry runs it instead."""


class PlanExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, with queries tried on the plan first."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        middleware = self.middleware_manager
        if (
            self.operation.operation is not OperationType.QUERY
            or not isinstance(self.context_value, Context)
            or (middleware is not None and middleware.middlewares)
        ):
            return super().execute_operation(serially)
        return self._planned(serially)

    async def _planned(self, serially: bool | None) -> Any:
        try:
            return await Walk(self).root()
        except Exception:
            # A Miss, or anything else: Strawberry runs the operation and reports it.
            logger.debug(PLAN_MISSED, exc_info=True)
            # From a clean slate, so that Strawberry's run is the one it would have made:
            # which errors it reports can depend on what is already cached.
            self.context_value.reset_loaders()
            result = super().execute_operation(serially)
            return await result if isawaitable(result) else result


@dataclass
class Memo:
    """The selections the plan collected below each field, and the shapes of JSON pages.

    They follow from the document alone unless a directive reads a variable (`@include(if:
    $x)`): then they are found afresh for each request; else they are kept with the operation
    (as long as its document lives, see `PerDocument`) and found once.
    """

    fields: dict[tuple[str, tuple[int, ...]], GroupedFieldSet] = field(default_factory=dict)
    shapes: dict[tuple[int, ...], Shape | None] = field(default_factory=dict)
    varies: bool | None = None


MEMOS: PerDocument[OperationDefinitionNode, Memo] = PerDocument(lambda _: Memo())


class _ReadsVariables(Visitor):
    found = False

    def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
        if any(isinstance(argument.value, VariableNode) for argument in node.arguments or ()):
            self.found = True


def memo_for(executor: PlanExecutor) -> Memo:
    memo = MEMOS(executor.operation)
    if memo.varies is None:
        seen = _ReadsVariables()
        fragments = (details.definition for details in executor.fragments.values())
        nodes: list[Node] = [executor.operation, *fragments]
        for node in nodes:
            visit(node, seen)
        memo.varies = seen.found
    return Memo() if memo.varies else memo


def _name(details: FieldDetailsList) -> str:
    return details[0].node.name.value


class Selection:
    """What the selection asks below one field (`schema.fields.Below`), for its definition."""

    def __init__(self, walk: Walk, field: GraphQLField, details: FieldDetailsList) -> None:
        self.walk = walk
        self.field = field
        self.details = details

    def _child(self) -> GraphQLObjectType:
        child = get_named_type(self.field.type)
        if not isinstance(child, GraphQLObjectType):
            raise Miss(f"{child} is not an object type")
        return child

    def selects(self, *path: str) -> bool:
        return self.walk.selects(self._child(), self.details, *path)

    def shape(self) -> Shape | None:
        return self.walk.shape(self._child(), self.details)

    def prefetch(self, keys: Sequence[Any]) -> Prefetch:
        walk, child = self.walk, self._child()
        loads, brings = [], False
        for sub in walk.fields(child, self.details).values():
            below = child.fields.get(_name(sub))
            definition = definition_of(below) if below is not None else None
            if below is None or definition is None or definition.prefetch is None:
                continue
            args = walk.arguments(below, sub)
            started = definition.prefetch(keys, walk.context, args, Selection(walk, below, sub))
            loads += started.loads
            brings = brings or started.brings_parents
        return Prefetch(loads, brings)


class Walk:
    """One run of the plan over one request."""

    def __init__(self, executor: PlanExecutor) -> None:
        self.executor = executor
        self.schema = executor.schema
        context: Context = executor.context_value
        self.context = context
        self.memo = memo_for(executor)
        self.errors = 0

    # ---- selections ----------------------------------------------------------------------

    def fields(self, parent: GraphQLObjectType, details: FieldDetailsList) -> GroupedFieldSet:
        """The fields selected below `details` on `parent` (see `Memo`)."""
        key = (parent.name, tuple(id(detail.node) for detail in details))
        found = self.memo.fields.get(key)
        if found is None:
            x = self.executor
            collected = collect_subfields(
                self.schema, x.fragments, x.variable_values, x.operation, parent, details
            )
            grouped = self._checked(collected.grouped_field_set, collected.new_defer_usages)
            found = self.memo.fields[key] = grouped
        return found

    def _checked(self, grouped: GroupedFieldSet, defers: Sequence[Any]) -> GroupedFieldSet:
        if defers:
            raise Miss("@defer")
        for details in grouped.values():
            for detail in details:
                if detail.fragment_variable_values is not None:
                    raise Miss("fragment variables")
        return grouped

    def arguments(self, field: GraphQLField, details: FieldDetailsList) -> Args:
        """The field's arguments by their Python names, as Strawberry passes them."""
        if not field.args:
            return {}
        values = get_argument_values(field, details[0].node, self.executor.variable_values)
        names = {
            name: getattr(argument.extensions.get(BACKREF), "python_name", None) or name
            for name, argument in field.args.items()
        }
        return {names.get(name, name): value for name, value in values.items()}

    def selects(self, parent: GraphQLObjectType, details: FieldDetailsList, *path: str) -> bool:
        """Whether the selection below `details` reaches the fields named by `path`."""
        first, *rest = path
        for sub in self.fields(parent, details).values():
            name = _name(sub)
            if name != first:
                continue
            if not rest:
                return True
            child = get_named_type(parent.fields[name].type)
            if isinstance(child, GraphQLObjectType) and self.selects(child, sub, *rest):
                return True
        return False

    def shape(self, connection: GraphQLObjectType, details: FieldDetailsList) -> Shape | None:
        """The `Shape` of a connection's edges, when every field selected below them declares
        what `db.page_json` writes for it (its `json`); else None."""
        key = tuple(id(detail.node) for detail in details)
        shapes = self.memo.shapes
        if key not in shapes:
            shapes[key] = self._shape(connection, details)
        return shapes[key]

    def _json(self, parent: GraphQLObjectType, details: FieldDetailsList) -> str | None:
        name = _name(details)
        if name == "__typename":
            return "typename"
        definition = definition_of(parent.fields[name])
        return definition.json if definition is not None else None

    def _shape(self, connection: GraphQLObjectType, details: FieldDetailsList) -> Shape | None:
        edge: list[tuple[str, str]] | None = None
        node: list[tuple[str, str]] = []
        edge_type = node_type = None
        ends = False
        for sub in self.fields(connection, details).values():
            name = _name(sub)
            if name == "__typename":
                continue
            child = get_named_type(connection.fields[name].type)
            if not isinstance(child, GraphQLObjectType):
                continue
            if self._json(connection, sub) != "edges":
                below = self.fields(child, sub).values()
                ends = ends or any(self._json(child, s) == "ends" for s in below)
                continue
            if edge is not None:
                return None
            edge, edge_type = [], child
            for response_key, parts in self.fields(child, sub).items():
                what = self._json(child, parts)
                if what is None:
                    return None
                if what == "node":
                    if node:
                        return None
                    node_type = get_named_type(child.fields[_name(parts)].type)
                    if not isinstance(node_type, GraphQLObjectType):
                        return None
                    for field_key, leaf in self.fields(node_type, parts).items():
                        plain = self._json(node_type, leaf)
                        if plain is None:
                            return None
                        node.append((field_key, plain))
                edge.append((response_key, what))
        if not edge or edge_type is None or node_type is None:
            return None
        return Shape(
            edge=tuple(edge),
            node=tuple(node),
            edge_type=edge_type.name,
            node_type=node_type.name,
            ends=ends,
        )

    # ---- levels --------------------------------------------------------------------------
    # A column that needs no waiting is made on the spot: only definitions that load data
    # return awaitables (`Later`), and only those become tasks.

    async def root(self) -> ExecutionResult:
        x = self.executor
        query = self.schema.query_type
        assert query is not None
        collected = collect_fields(
            self.schema, x.fragments, x.variable_values, query, x.operation, x.hide_suggestions
        )
        grouped = self._checked(collected.grouped_field_set, collected.new_defer_usages)
        (data,) = await now(self.objects(query, grouped, [ROOT]))
        if not self.errors:
            return ExecutionResult(data=data)
        errors: list[GraphQLError] = []
        finished = self.finished(data, query, grouped, (), errors)
        return ExecutionResult(data=finished, errors=errors)

    # ---- errors --------------------------------------------------------------------------

    def finished(
        self,
        data: dict[str, Any],
        parent: GraphQLObjectType,
        grouped: GroupedFieldSet,
        path: tuple[str | int, ...],
        errors: list[GraphQLError],
    ) -> dict[str, Any] | None:
        """`data` with its error reported at its path, and the nulls it makes: as graphql-core
        does, a null where the type forbids one makes the nearest nullable parent null."""
        for key, details in grouped.items():
            name = _name(details)
            if name == "__typename" or key not in data:
                continue
            value = self.finished_value(
                data[key], parent.fields[name].type, details, (*path, key), errors
            )
            if value is NULLED:
                return None
            data[key] = value
        return data

    def finished_value(
        self,
        value: Any,
        output: GraphQLOutputType,
        details: FieldDetailsList,
        path: tuple[str | int, ...],
        errors: list[GraphQLError],
    ) -> Any:
        """The value, or NULLED: null where the type forbids it."""
        if isinstance(output, GraphQLNonNull):
            done = self.finished_value(value, output.of_type, details, path, errors)
            return NULLED if done is None or done is NULLED else done
        if type(value) is Erred:
            error = value.failed.error
            nodes = [detail.node for detail in value.details]
            errors.append(GraphQLError(error.message, nodes, path=list(path), original_error=error))
            return None
        if value is None or isinstance(value, orjson.Fragment):
            return value
        if isinstance(output, GraphQLList):
            for index, item in enumerate(value):
                done = self.finished_value(item, output.of_type, details, (*path, index), errors)
                if done is NULLED:
                    return None
                value[index] = done
            return value
        named = get_named_type(output)
        if isinstance(named, GraphQLInterfaceType):
            found = self.schema.get_type(value.get("__typename", ""))
            if not isinstance(found, GraphQLObjectType):
                raise Miss("an error, and an object of an interface without its __typename")
            named = found
        if isinstance(named, GraphQLObjectType):
            return self.finished(value, named, self.fields(named, details), path, errors)
        return value

    def objects(
        self, parent: GraphQLObjectType, grouped: GroupedFieldSet, rows: Sequence[Any]
    ) -> Later[dict[str, Any]]:
        """The result objects of `rows`, all of type `parent`, one column per field."""
        if not rows:
            return []
        if not grouped:  # every field skipped
            return [{} for _ in rows]
        keys = list(grouped)
        columns: list[Any] = []
        try:
            for sub in grouped.values():
                columns.append(self.column(parent, sub, rows))
        except Exception as error:
            started = [column for column in columns if not isinstance(column, list)]
            if not started:
                raise
            missed = error  # `error` is gone once the `except` ends

            async def failed() -> list[dict[str, Any]]:
                # As `gather` does: the columns already made run out before the plan misses.
                await asyncio.gather(*started, return_exceptions=True)
                raise missed

            return failed()

        def assemble(columns: list[Column]) -> list[dict[str, Any]]:
            return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]

        waiting = [index for index, column in enumerate(columns) if not isinstance(column, list)]
        if not waiting:
            return assemble(columns)

        async def after() -> list[dict[str, Any]]:
            done = await gather(*(columns[index] for index in waiting))
            for index, column in zip(waiting, done, strict=True):
                columns[index] = column
            return assemble(columns)

        return after()

    def column(
        self, parent: GraphQLObjectType, details: FieldDetailsList, rows: Sequence[Any]
    ) -> Later[Any]:
        """One field of every object of a level: its definition's column, completed."""
        name = _name(details)
        if name == "__typename":
            return [parent.name] * len(rows)
        field = parent.fields[name]
        definition = definition_of(field)
        if definition is None:
            raise Miss(f"{parent.name}.{name} has no definition")
        level = Level(rows, self.context, Selection(self, field, details))
        made = definition.resolve(level, self.arguments(field, details))
        where = f"{parent.name}.{name}"
        if isinstance(made, list):
            return self.completed(field, details, definition.attribute is None, made, where)

        async def after() -> Column:
            values = await made
            completed = self.completed(field, details, True, values, where)
            return await now(completed)

        return after()

    def completed(
        self,
        field: GraphQLField,
        details: FieldDetailsList,
        check: bool,
        values: Column,
        where: str,
    ) -> Later[Any]:
        if check and Failed in map(type, values):  # (in C: this runs for every column)
            values = [
                self.error(value, details, where) if type(value) is Failed else value
                for value in values
            ]
        return self.complete(field.type, details, values, where)

    def error(self, failed: Failed, details: FieldDetailsList, where: str) -> Erred:
        """An error for one object, left in the answer where its value would be: its path and
        the nulls it makes are found once the walk is done (`finished`)."""
        self.errors += 1
        if self.errors > 1:
            # Which of several errors Strawberry reports first is its own affair.
            raise Miss(f"{where}: a second error for an object")
        return Erred(failed, details)

    def complete(
        self, output: GraphQLOutputType, details: FieldDetailsList, values: Column, where: str
    ) -> Later[Any]:
        """`values` of a field of type `output` as the answer holds them."""
        if isinstance(output, GraphQLNonNull):
            if any(map(IS_NONE, values)):  # (`None in` would compare rows with ==)
                raise Miss(f"{where}: null where the type forbids it")
            output = output.of_type
        if isinstance(output, GraphQLList):
            # Every list of the level is one level below: flattened, completed, split back.
            lists = [v for v in values if type(v) is list]
            flat = [item for items in lists for item in items]

            def split(done: Column) -> Column:
                items = iter(done)
                return [[next(items) for _ in v] if type(v) is list else v for v in values]

            return then(self.complete(output.of_type, details, flat, where), split)
        if isinstance(output, GraphQLObjectType):
            children = [v for v in values if v is not None and type(v) is not Erred]

            def put(made: list[dict[str, Any]]) -> Column:
                objects = iter(made)
                return [
                    next(objects) if v is not None and type(v) is not Erred else v for v in values
                ]

            return then(self.objects(output, self.fields(output, details), children), put)
        if isinstance(output, GraphQLScalarType | GraphQLEnumType):
            serialize = _serializer(output)
            if serialize is None:
                return values
            # (inline: this runs for every value of a scalar column)
            return [serialize(v) if v is not None and type(v) is not Erred else v for v in values]
        return self.abstract(details, values)

    async def abstract(self, details: FieldDetailsList, values: Column) -> Column:
        """Values of an interface type (`Of`): each concrete type one level of its own."""
        by_type: dict[str, list[Any]] = {}
        for value in values:
            if _present(value):
                by_type.setdefault(value.type_name, []).append(value.row)
        kinds = list(by_type)
        made: list[list[dict[str, Any]]] = []
        for type_name in kinds:
            concrete = self.schema.get_type(type_name)
            assert isinstance(concrete, GraphQLObjectType)
            made.append(
                await now(
                    self.objects(concrete, self.fields(concrete, details), by_type[type_name])
                )
            )
        objects = {kind: iter(done) for kind, done in zip(kinds, made, strict=True)}
        return [next(objects[value.type_name]) if _present(value) else value for value in values]


T = TypeVar("T")
U = TypeVar("U")
# A value made on the spot, or an awaitable of it (a list is never awaitable).
Later = list[T] | Awaitable[list[T]]


async def now(later: Later[T]) -> list[T]:
    return later if isinstance(later, list) else await later


def then(later: Later[T], use: Callable[[list[T]], list[U]]) -> Later[U]:
    """`use` of `later`'s value: on the spot, or once it is there."""
    if isinstance(later, list):
        return use(later)

    async def after() -> list[U]:
        return use(await later)

    return after()


@dataclass(frozen=True)
class Erred:
    """Where an object's field failed, in an answer still being made."""

    failed: Failed
    details: FieldDetailsList


NULLED = object()  # a null where the type forbids one: the parent is null


def _present(value: Any) -> bool:
    """Whether a value of a column is one to complete (not null, not an error)."""
    return value is not None and type(value) is not Erred


def _serializer(output: GraphQLScalarType | GraphQLEnumType) -> Callable[[Any], Any] | None:
    """How a value of a leaf type is written (None: as it is)."""
    if isinstance(output, GraphQLEnumType):
        names: dict[Any, Any] = {}

        def name(value: Any) -> Any:
            found = names.get(value)
            if found is None:
                found = names[value] = output.serialize(value)
            return found

        return name
    if output.name in AS_THEY_ARE:
        return None
    return output.serialize
