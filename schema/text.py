"""Text no database can store: a NUL character (U+0000) in any string input is BAD_USER_INPUT.

PostgreSQL refuses NUL in text, so such a string would otherwise fail deep in the driver as an
unexpected error. It is refused before anything runs, in argument literals and in variables
alike, with the path of each bad value (`input.login`, `$input.login` for a variable).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    ListValueNode,
    ObjectValueNode,
    StringValueNode,
    ValueNode,
    visit,
)
from graphql.language import Visitor
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import PreExecutionError

from schema.errors import BadUserInput

NUL = "\x00"
HAS_NUL = "must not contain NUL characters (U+0000)"
NUL_REFUSED = "Text must not contain NUL characters (U+0000)."


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
            paths = literal_paths(context.graphql_document)
            for name, value in (context.variables or {}).items():
                paths.extend(variable_paths(value, f"${name}"))
            if paths:
                error = BadUserInput(dict.fromkeys(paths, HAS_NUL), NUL_REFUSED)
                context.result = PreExecutionError(
                    data=None, errors=[GraphQLError(error.message, original_error=error)]
                )
        yield
