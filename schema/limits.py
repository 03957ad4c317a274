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

import re
from collections.abc import Iterator
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLSyntaxError,
    ListValueNode,
    ObjectValueNode,
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

from schema.complexity import measure
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
    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        config = config_of(context.context)
        context.parse_options["max_tokens"] = config.max_tokens
        if not config.introspection:
            context.validation_rules = (*context.validation_rules, NoSchemaIntrospectionCustomRule)
        yield

    def on_parse(self) -> Iterator[None]:
        yield
        context = self.execution_context
        config = config_of(context.context)
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
        yield

    def refusals(self) -> list[QueryTooComplex]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None
        operation = get_operation_ast(document, context.operation_name)
        if operation is None:  # pragma: no cover - Strawberry refuses such a request earlier
            return []
        config = config_of(context.context)
        measures = measure(
            context.schema._schema,
            document,
            operation,
            context.variables,
            default_page_size=config.default_page_size,
        )
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


# ---- text ---------------------------------------------------------------------------------

NUL = "\x00"
NUL_REFUSED = "Text must not contain NUL characters (U+0000)."


def inside_argument(path: str) -> str:
    """The contract names a field by its path inside an input object argument (`username`,
    `messages.3.content`), else by the argument's own name (`search`, or `ids.1` in a list)."""
    _, dot, rest = path.partition(".")
    return rest if dot and not rest.split(".", 1)[0].isdecimal() else path


def variable_homes(document: DocumentNode) -> dict[str, str]:
    """Where each variable stands: the argument, and the path inside it (`input.login`)."""
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
            walk(node.value, node.name.value)

    visit(document, Arguments())
    return homes


def literal_paths(document: DocumentNode) -> list[str]:
    found: list[str] = []

    class Arguments(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
            found.extend(_value_paths(node.value, node.name.value))

    visit(document, Arguments())
    return found


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
    if isinstance(value, str) and NUL in value:
        yield path
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from variable_paths(item, f"{path}.{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from variable_paths(item, f"{path}.{key}")


class RejectNul(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.result is None and context.graphql_document is not None:
            document = context.graphql_document
            paths = [inside_argument(path) for path in literal_paths(document)]
            homes = variable_homes(document)
            for name, value in (context.variables or {}).items():
                home = homes.get(name, name)
                paths.extend(
                    inside_argument(f"{home}{path[len(name) :]}")
                    for path in variable_paths(value, name)
                )
            if paths:
                error = BadUserInput(dict.fromkeys(paths, HAS_NUL), NUL_REFUSED)
                context.result = PreExecutionError(
                    data=None, errors=[GraphQLError(error.message, original_error=error)]
                )
        yield
