"""Limits on an operation, checked before any resolver runs.

Over a limit, the operation is refused with QUERY_TOO_COMPLEX, `extensions.limit` and
`extensions.actual`:

- tokens: the parser stops past the limit, so a huge document costs little to refuse;
- depth, aliases and cost (see `schema.complexity`): measured on the validated document with
  its fragments and variables, after validation and before execution.

Page sizes are checked where the arguments are read (`schema.pagination`), the request body at
the HTTP edge. Introspection can be switched off (`Config.introspection`).

And text no database can store: a NUL character (U+0000), which PostgreSQL refuses, or a lone
surrogate ("\\ud800" is valid JSON, but no UTF-8), in any text of the request is BAD_USER_INPUT
before anything runs; it would otherwise fail deep in the driver as an unexpected error. The
text is the document itself, its argument literals and variables' defaults, the variables and
the operation name, each bad value named by its path (`login` inside `input`, `ids.1`, `query`).
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
    VariableDefinitionNode,
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
from schema.errors import BadRequest, BadUserInput, QueryTooComplex
from schema.validation import text_problem

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
                context.result = text_refusal(
                    context.graphql_document, context.variables, context.operation_name
                )
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

TEXT_REFUSED = "Text must be valid Unicode, without NUL characters (U+0000)."
BAD_OPERATION_NAME = "The operationName must be a string or null."
# The request's own text fields, named as the client sends them.
DOCUMENT, OPERATION_NAME = "query", "operationName"


def inside_argument(path: str) -> str:
    """The contract names a field by its path inside an input object argument (`username`,
    `messages.3.content`), else by the argument's own name (`search`, or `ids.1` in a list)."""
    _, dot, rest = path.partition(".")
    return rest if dot and not rest.split(".", 1)[0].isdecimal() else path


@dataclass(frozen=True)
class Inputs:
    """What the text check needs of a document: the bad text in the document itself and in
    its literals (as the contract names each place, with the reason), and where each variable
    stands: the argument, and the path inside it (`input.login`)."""

    problems: tuple[tuple[str, str], ...]
    homes: dict[str, str]


def inputs_of(document: DocumentNode) -> Inputs:
    problems: list[tuple[str, str]] = []
    homes: dict[str, str] = {}
    defaults: list[tuple[str, ValueNode]] = []
    if document.loc is not None:  # a NUL in a comment, say: the document is stored as it is
        reason = text_problem(document.loc.source.body)
        if reason:
            problems.append((DOCUMENT, reason))

    def walk(node: ValueNode, path: str) -> None:
        if isinstance(node, VariableNode):
            homes.setdefault(node.name.value, path)
        elif isinstance(node, StringValueNode):
            reason = text_problem(node.value)
            if reason:
                problems.append((inside_argument(path), reason))
        elif isinstance(node, ListValueNode):
            for index, item in enumerate(node.values):
                walk(item, f"{path}.{index}")
        elif isinstance(node, ObjectValueNode):
            for field in node.fields:
                walk(field.value, f"{path}.{field.name.value}")

    class Arguments(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
            walk(node.value, node.name.value)

        def enter_variable_definition(self, node: VariableDefinitionNode, *_: Any) -> None:
            if node.default_value is not None:
                defaults.append((node.variable.name.value, node.default_value))

    visit(document, Arguments())
    # A variable's default value stands where the variable does.
    for name, value in defaults:
        walk(value, homes.get(name, f"${name}"))
    return Inputs(problems=tuple(problems), homes=homes)


INPUTS = PerDocument(inputs_of)


def printable(text: str) -> str:
    """Text as a path may name it in an answer: a lone surrogate as its escape (no JSON
    encoder of ours writes one)."""
    return text.encode("utf-8", "backslashreplace").decode()


def variable_problems(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        reason = text_problem(value)
        if reason:
            yield path, reason
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from variable_problems(item, f"{path}.{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            # A key is text too: graphql-core would name a bad one in its error message.
            named = f"{path}.{printable(key)}"
            reason = text_problem(key)
            if reason:
                yield named, reason
            yield from variable_problems(item, named)


def operation_name_refusal(name: object) -> BadRequest | BadUserInput | None:
    """The refusal of a request's `operationName`, checked by every transport as it reads the
    request (before the name can be echoed in an error): not a string, or text no database
    keeps."""
    if not isinstance(name, str | None):
        return BadRequest(BAD_OPERATION_NAME)
    problem = text_problem(name or "")
    return BadUserInput({OPERATION_NAME: problem}, TEXT_REFUSED) if problem else None


def text_refusal(
    document: DocumentNode,
    variables: dict[str, Any] | None,
    operation_name: str | None = None,
) -> PreExecutionError | None:
    """The refusal of an operation with text no database keeps in its document, its literals,
    its variables or its operation name, if it has any: one BAD_USER_INPUT whose `fields` name
    every bad place (a variable's by where it stands in the document). What the document
    alone decides is found once per document; a plain string variable costs a scan or two.
    Every transport calls this before an operation runs (HTTP through `Limits`)."""
    inputs = INPUTS(document)
    problems = list(inputs.problems)
    if operation_name is not None:
        reason = text_problem(operation_name)
        if reason:
            problems.append((OPERATION_NAME, reason))
    for name, value in (variables or {}).items():
        # A variable's name is text too (and is echoed when no operation declares it).
        named = text_problem(name)
        if named:
            problems.append((printable(name), named))
        if isinstance(value, str) and text_problem(value) is None:
            continue
        home = inputs.homes.get(name) or printable(name)
        problems.extend(
            (inside_argument(f"{home}{path[len(name) :]}"), reason)
            for path, reason in variable_problems(value, name)
        )
    if not problems:
        return None
    fields: dict[str, str] = {}
    for path, reason in problems:
        fields.setdefault(path, reason)
    error = BadUserInput(fields, TEXT_REFUSED)
    return PreExecutionError(data=None, errors=[GraphQLError(error.message, original_error=error)])
