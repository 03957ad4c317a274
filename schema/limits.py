"""Limits on an operation, checked before any resolver runs.

Over a limit, the operation is refused with QUERY_TOO_COMPLEX, `extensions.limit` and
`extensions.actual`:

- tokens: the parser stops past the limit, so a huge document costs little to refuse;
- depth, aliases and cost (see `schema.complexity`): measured on the validated document with
  its fragments and variables, after validation and before execution.

Page sizes are checked where the arguments are read (`schema.pagination`), the request body at
the HTTP edge. Introspection can be switched off (`Config.introspection`).

And text no database can store: a NUL character (U+0000) in any string input is
BAD_USER_INPUT. PostgreSQL refuses NUL in text, so such a string would otherwise fail deep in
the driver as an unexpected error. It is refused in argument literals and in variables alike,
with the path of each bad value (`input.login`, or `$input.login` in a variable).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    get_operation_ast,
    visit,
)
from graphql.language import Visitor
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import PreExecutionError

from schema.caches import PerDocument
from schema.complexity import Measures, measure
from schema.config import Config, config_of
from schema.errors import BadUserInput, QueryTooComplex
from schema.validation import HAS_NUL

TOO_MANY_TOKENS = "The query has {actual} tokens; the limit is {limit}."
TOO_DEEP = "The query is {actual} levels deep; the limit is {limit}."
TOO_MANY_ALIASES = "The query has {actual} aliases; the limit is {limit}."
TOO_COSTLY = "The query may return {actual} objects; the limit is {limit}."


def too_complex(template: str, *, limit: int, actual: int) -> QueryTooComplex:
    return QueryTooComplex(template.format(limit=limit, actual=actual), limit=limit, actual=actual)


# The tokens of GraphQL's lexical grammar, comments included (graphql-core counts them towards
# `max_tokens`); anything else counts as one token. A regular expression, because graphql-core's
# own lexer takes seconds over a 1 MiB document and this runs only on documents already refused.
TOKEN = re.compile(
    r'"""(?:[^"\\]++|\\"""|\\|"(?!""))*+"""'
    r'|"(?:[^"\\\n\r]++|\\.)*+"'
    r"|#[^\n\r]*+"
    r"|\.\.\."
    r"|-?\d++(?:\.\d++)?(?:[eE][+-]?\d++)?"
    r"|[_A-Za-z][_0-9A-Za-z]*+"
    r"|[^\s,\ufeff]"
)


def count_tokens(query: str) -> int:
    return len(TOKEN.findall(query))


def token_refusal(query: str | None, error: GraphQLError, config: Config) -> QueryTooComplex | None:
    """The token refusal behind a parse error, if the parser stopped at the token limit."""
    stopped = f"Syntax Error: Document contains more than {config.max_tokens} tokens."
    if not isinstance(error, GraphQLSyntaxError) or not error.message.startswith(stopped):
        return None
    # The parser knows the document has more than the limit, whatever the count says.
    actual = max(count_tokens(query or ""), config.max_tokens + 1)
    return too_complex(TOO_MANY_TOKENS, limit=config.max_tokens, actual=actual)


class Limits(SchemaExtension):
    """Every check of this module, in as few hooks as they need: each hook an extension has
    costs every request the same again in Strawberry's machinery, whatever it does."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        config = config_of(context.context)
        context.parse_options["max_tokens"] = config.max_tokens
        if not config.introspection:
            context.validation_rules = (*context.validation_rules, NoSchemaIntrospectionCustomRule)
        yield
        for error in context.pre_execution_errors or ():
            refusal = token_refusal(context.query, error, config)
            if refusal is not None:
                # The error is shared with the result Strawberry has already built: edit it.
                error.message = refusal.message
                error.extensions = refusal.extensions

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        # Another extension may have answered already (a bad token): nothing will run.
        if context.result is None and context.graphql_document is not None:
            errors = [
                GraphQLError(refusal.message, original_error=refusal) for refusal in self.refusals()
            ]
            if errors:
                context.result = PreExecutionError(data=None, errors=errors)
            else:
                context.result = nul_refusal(context.graphql_document, context.variables)
        yield

    def refusals(self) -> list[QueryTooComplex]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None
        return refusals(
            context.schema._schema,
            document,
            context.operation_name,
            context.variables,
            config_of(context.context),
        )


def refusals(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    config: Config,
) -> list[QueryTooComplex]:
    """The limits an operation goes over, if any."""
    measures = MEASURED(document).measures(
        schema,
        document,
        operation_name,
        variables or {},
        default_page_size=config.default_page_size,
    )
    if measures is None:  # pragma: no cover - Strawberry refuses such a request earlier
        return []
    checks = [
        (TOO_DEEP, config.max_query_depth, measures.depth),
        (TOO_MANY_ALIASES, config.max_aliases, measures.aliases),
        (TOO_COSTLY, config.max_query_cost, measures.cost),
    ]
    return [
        too_complex(template, limit=limit, actual=actual)
        for template, limit, actual in checks
        if actual > limit
    ]


# The variables one measuring read: (name, whether it was sent, the value sent).
Reading = tuple[tuple[str, bool, Any], ...]


class Measured:
    """A document's measures, by operation, schema and default page size, and by the values
    of the variables each measuring read: measuring is deterministic in what it reads, so
    the same values give the same measures. Most documents read none."""

    READINGS = 8

    def __init__(self) -> None:
        self.operations: dict[tuple[Any, ...], OperationDefinitionNode | None] = {}
        self.found: dict[tuple[Any, ...], list[tuple[Reading, Measures]]] = {}

    def measures(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any],
        *,
        default_page_size: int,
    ) -> Measures | None:
        key = (schema, operation_name, default_page_size)
        found = self.found.get(key)
        if found is None:
            found = self.found[key] = []
            self.operations[key] = get_operation_ast(document, operation_name)
        for reading, measures in found:
            if all(
                (name in variables) is sent and same(variables.get(name), value)
                for name, sent, value in reading
            ):
                return measures
        operation = self.operations[key]
        if operation is None:
            return None
        read: set[str] = set()
        measures = measure(
            schema, document, operation, variables, default_page_size=default_page_size, read=read
        )
        reading = tuple(
            (name, name in variables, copy.deepcopy(variables.get(name))) for name in sorted(read)
        )
        if len(found) >= self.READINGS:
            del found[0]
        found.append((reading, measures))
        return measures


def same(left: Any, right: Any) -> bool:
    """Equal, and of the same types all the way down (`1`, `1.0` and `true` are not the same
    page size)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    return bool(left == right)


MEASURED: PerDocument[DocumentNode, Measured] = PerDocument(lambda _: Measured())


# ---- text ---------------------------------------------------------------------------------

NUL = "\x00"
NUL_REFUSED = "Text must not contain NUL characters (U+0000)."


def inside_argument(path: str) -> str:
    """The contract names a field by its path inside an input object argument (`username`,
    `messages.3.content`), else by the argument's own name (`search`, or `ids.1` in a list)."""
    _, dot, rest = path.partition(".")
    return rest if dot and not rest.split(".", 1)[0].isdecimal() else path


@dataclass(frozen=True)
class Inputs:
    """A document's argument literals that hold a NUL (as the contract names them), and where
    each variable stands: the argument, and the path inside it (`input.login`)."""

    nul_literals: tuple[str, ...]
    homes: dict[str, str]


def inputs_of(document: DocumentNode) -> Inputs:
    found: list[str] = []
    homes: dict[str, str] = {}

    def walk(node: ValueNode, path: str) -> None:
        if isinstance(node, VariableNode):
            homes.setdefault(node.name.value, path)
        elif isinstance(node, ListValueNode):
            for index, item in enumerate(node.values):
                walk(item, f"{path}.{index}")
        elif isinstance(node, ObjectValueNode):
            for field in node.fields:
                walk(field.value, f"{path}.{field.name.value}")

    class Arguments(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
            found.extend(_value_paths(node.value, node.name.value))
            walk(node.value, node.name.value)

    visit(document, Arguments())
    return Inputs(nul_literals=tuple(inside_argument(path) for path in found), homes=homes)


INPUTS = PerDocument(inputs_of)


def _value_paths(node: ValueNode, path: str) -> Iterator[str]:
    if isinstance(node, StringValueNode) and NUL in node.value:
        yield path
    elif isinstance(node, ListValueNode):
        for index, item in enumerate(node.values):
            yield from _value_paths(item, f"{path}.{index}")
    elif isinstance(node, ObjectValueNode):
        for field in node.fields:
            yield from _value_paths(field.value, f"{path}.{field.name.value}")


def variable_paths(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, str):
        if NUL in value:
            yield path
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from variable_paths(item, f"{path}.{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from variable_paths(item, f"{path}.{key}")


def nul_refusal(
    document: DocumentNode, variables: dict[str, Any] | None
) -> PreExecutionError | None:
    """The refusal of an operation with a NUL in its arguments or variables, if it has one."""
    inputs = INPUTS(document)
    paths = list(inputs.nul_literals)
    for name, value in (variables or {}).items():
        if isinstance(value, str) and NUL not in value:
            continue
        home = inputs.homes.get(name, name)
        paths.extend(
            inside_argument(f"{home}{path[len(name) :]}") for path in variable_paths(value, name)
        )
    if not paths:
        return None
    error = BadUserInput(dict.fromkeys(paths, HAS_NUL), NUL_REFUSED)
    return PreExecutionError(data=None, errors=[GraphQLError(error.message, original_error=error)])
