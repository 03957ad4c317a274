"""The DateTime scalar: ISO 8601 with a timezone in, always UTC with microseconds out.

A time in is within the domain both databases store (`db.formats.parse_stamp`: from
0001-01-02 to 9999-12-30, UTC), in a variable and in a literal alike; anything else is
BAD_USER_INPUT before the operation runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError, StringValueNode, ValueNode, print_ast
from strawberry.types.scalar import ScalarDefinition

from db.formats import parse_stamp, stamp

serialize_datetime = stamp


def parse_datetime(value: Any) -> datetime:
    """A variable's value. graphql-core reports a ValueError as the variable's own error,
    which `schema.errors` gives BAD_USER_INPUT."""
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO 8601 string")
    return parse_stamp(value)


def parse_datetime_literal(node: ValueNode, _variables: Any = None) -> datetime:
    """A literal's value. Validation reports any exception but a GraphQLError as an unexpected
    one, so the refusal is a GraphQLError carrying its code."""
    try:
        if not isinstance(node, StringValueNode):
            raise ValueError("DateTime must be an ISO 8601 string")
        return parse_stamp(node.value)
    except ValueError as exc:
        raise GraphQLError(
            f"Expected value of type 'DateTime', found {print_ast(node)[:80]}; {exc}",
            node,
            extensions={"code": "BAD_USER_INPUT"},
        ) from None


DATETIME: ScalarDefinition = strawberry.scalar(
    name="DateTime",
    description='ISO 8601 with timezone, always UTC on output: "2026-11-26T08:00:00.123456+00:00"',
    serialize=serialize_datetime,
    parse_value=parse_datetime,
    parse_literal=parse_datetime_literal,
)
SCALARS: dict[object, ScalarDefinition] = {datetime: DATETIME}
