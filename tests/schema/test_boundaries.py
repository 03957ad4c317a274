"""Every argument of the schema at the edges of its type's domain, on both databases at once.

The schema is walked: every argument of every root field and of every field below them, and
every field of every input object inside those arguments, each one a *slot*. Each slot gets
the boundary values of its type (integers around 2^31 and 2^63, NUL and lone surrogates,
ids of every type with those integers, times in years 1 and 9999, cursors that are not ours,
nested JSON) as a variable and as a literal, with valid values in the other required
arguments; then hypothesis draws more values of each type. One SQLite app and one PostgreSQL
app, seeded alike, take the same requests in the same order: neither may answer 500 or
INTERNAL_SERVER_ERROR, and both must give the same answer (status and body, once the ids that
differ between them are named alike).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from graphql import (
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLNamedType,
    GraphQLObjectType,
    get_named_type,
    is_enum_type,
    is_input_object_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.engine import make_engine, make_sessionmaker
from db.formats import encode_cursor
from schema import make_schema
from tests.conftest import ApiFactory
from tests.factories import (
    BASE_TIME,
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api

SCHEMA = make_schema()._schema
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")

# ---- the values ---------------------------------------------------------------------------

INTEGERS = [0, -1, 1, 100, 101, 2**31 - 1, 2**31, -(2**31) - 1, 2**53, 2**63, -(2**63) - 1]
STRINGS = [
    "",
    " ",
    "a\x00b",
    "\ud800",
    "pair \udbff\udfff reversed",
    "x" * 100_000,
    "é",
    "😀",
    "\u202eevil",
    "'; DROP TABLE users; --",
    "%",
    "_",
]
KEYS = [0, -1, 2**31 - 1, 2**31, 2**53, 2**63, -(2**63) - 1]
UUIDS = ["00000000-0000-0000-0000-000000000000", "0f8b6f1e-6a3c-4a8e-9d5b-2f1c3e4d5a6b"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


IDS = [
    *(gid("User", key) for key in KEYS),
    *(gid("Message", key) for key in (2**31, 2**63)),
    *(gid("Conversation", key) for key in (UUIDS[0], "not-a-uuid")),
    b64(b"User:01"),
    b64(b"Nope:1"),
    b64(b"\xff\xfe:1"),
    "User:1",
    "",
    "\x00",
    "\ud800",
    "A" * 100_000,
]
TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T23:59:59-01:00",
    "0001-01-02T00:00:00Z",
    "9999-12-30T23:59:59.999999Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-01:00",
    "1970-01-01T00:00:00+23:59",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "2026-13-01T00:00:00Z",
    "garbage",
    "",
    "\x00",
    "\ud800",
]
NESTED = b"[" * 100_000 + b"]" * 100_000
CURSORS = [
    encode_cursor("user", (1,)),
    encode_cursor("conversation", (BASE_TIME, UUIDS[1])),
    encode_cursor("message", (BASE_TIME, 1)),
    *(b64url(json.dumps(["u", key]).encode()) for key in KEYS),
    b64url(b'["u",true]'),
    b64url(b'["m","0001-01-01T00:00:00+01:00",1]'),
    b64url(b'["m","9999-12-31T23:59:59.999999+00:00",1]'),
    b64url(b'["c","2026-01-01T00:00:00+00:00",7]'),
    b64url(b'{"u":1}'),
    b64url(NESTED),
    b64url(b"\xff"),
    "!!!",
]


def boundaries(named: GraphQLNamedType, name: str) -> list[Any]:
    """The boundary values of a slot's type (its name tells a cursor from other text)."""
    values: list[Any]
    if named.name == "Int":
        values = list(INTEGERS)
    elif named.name == "ID":
        values = list(IDS)
    elif named.name == "DateTime":
        values = list(TIMES)
    elif named.name == "Boolean":
        values = [True, False]
    elif is_enum_type(named):
        values = [*named.values, "NOPE"]
    elif name in ("after", "before"):
        values = [*CURSORS, "", "\x00", "\ud800"]
    else:
        assert named.name == "String", named
        values = list(STRINGS)
    return [None, *values]


def drawn(named: GraphQLNamedType, name: str) -> st.SearchStrategy[Any]:
    """Any value of a slot's type, its boundaries most often."""
    more: st.SearchStrategy[Any]
    if named.name == "Int":
        more = st.integers()
    elif named.name == "ID":
        kinds = st.sampled_from(["User", "Message", "Conversation", "Nope"])
        more = st.builds(gid, kinds, st.integers() | st.uuids().map(str) | st.text()) | st.text()
    elif named.name == "DateTime":
        zones = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
        stamps = st.builds(
            lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), st.datetimes(), zones
        )
        more = stamps | st.text()
    elif named.name == "Boolean":
        more = st.booleans()
    elif is_enum_type(named):
        more = st.text()
    elif name in ("after", "before"):
        lists = st.recursive(
            st.integers() | st.text(), lambda inner: st.lists(inner, max_size=3), max_leaves=6
        )
        more = (
            lists.map(lambda value: b64url(json.dumps(value).encode()))
            | st.binary().map(b64url)
            | st.text()
        )
    else:
        more = st.text()
    return st.sampled_from(boundaries(named, name)) | more


# ---- the slots ------------------------------------------------------------------------------

# How a field below the roots is reached, by its type: the opening and closing text around it.
ROUTES = {
    "User": [("me {", "}")],
    "Conversation": [
        ('conversation(id: "@C3@") {', "}"),
        ("me { conversations(first: 3) { edges { node {", "} } } }"),
    ],
}
# Valid values for required inputs, by name (and root field, for ids). A sign-up conflicts on
# its username alone: which of two taken values a database reports first is its own affair.
BASELINE: dict[str, Any] = {
    "username": "admin",
    "password": "password-1",
    "login": "admin",
    "title": "a title",
    "content": "a message",
    "query": "a message",
    "conversationId": "@C1@",
    "toUserId": gid("User", 2),
    "messageId": gid("Message", 1),
    "seq": 1,
    "delta": "a delta",
    "inputTokens": 1,
    "outputTokens": 1,
}
# Message 1 is the first of the admin's conversation @C1@ (ids are alike on both databases).
ID_BASELINE = {
    "updateUser": gid("User", 2),
    "updateConversation": "@C1@",
    "editMessage": gid("Message", 1),
    "markConversationRead": "@C1@",
}
FRESH = itertools.count()
TRANSFERRED = "@C2@"  # transferConversation moves the victim's conversation, never the admin's


@dataclass(frozen=True)
class Slot:
    """One input of the schema: a field's argument, or a path inside it."""

    operation: str  # "query" or "mutation"
    owner: str  # the type whose field this is
    route: tuple[str, str]  # the text around the field, for fields below the roots
    field: str
    argument: str
    path: tuple[str | int, ...]
    named: GraphQLNamedType

    @property
    def name(self) -> str:
        last = [part for part in (self.argument, *self.path) if isinstance(part, str)][-1]
        return last

    def __str__(self) -> str:
        inside = "".join(f".{part}" for part in self.path)
        above = self.route[0].split("{")[0].split("(")[0].strip()
        return (
            f"{self.operation} {above + '.' if above else ''}{self.field}({self.argument}{inside})"
        )


def leaves(
    type_: GraphQLInputType, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], GraphQLNamedType]]:
    """Every leaf inside an input type: lists by their first item, objects by each field."""
    while is_non_null_type(type_):
        type_ = type_.of_type
    if is_list_type(type_):
        yield from leaves(type_.of_type, (*path, 0))
    elif is_input_object_type(type_):
        assert isinstance(type_, GraphQLInputObjectType)
        for name, field in type_.fields.items():
            yield from leaves(field.type, (*path, name))
    else:
        yield path, get_named_type(type_)


def field_slots(
    operation: str, owner: GraphQLObjectType, route: tuple[str, str], name: str
) -> Iterator[Slot]:
    for argument, definition in owner.fields[name].args.items():
        for path, named in leaves(definition.type):
            yield Slot(operation, owner.name, route, name, argument, path, named)


def all_slots() -> list[Slot]:
    found: list[Slot] = []
    for operation, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type)):
        assert root is not None
        for name in root.fields:
            found.extend(field_slots(operation, root, ("", ""), name))
    for type_name, named in SCHEMA.type_map.items():
        roots = (SCHEMA.query_type, SCHEMA.mutation_type, SCHEMA.subscription_type)
        if type_name.startswith("__") or not isinstance(named, GraphQLObjectType) or named in roots:
            continue
        for name, field in named.fields.items():
            if field.args:
                assert type_name in ROUTES, f"no route reaches {type_name}.{name}"
                for route in ROUTES[type_name]:
                    found.extend(field_slots("query", named, route, name))
    return found


SLOTS = all_slots()


def test_the_walk_finds_every_argument() -> None:
    assert {str(slot) for slot in SLOTS} >= {
        "query node(id)",
        "query nodes(ids.0)",
        "query users(after)",
        "query me.conversations(before)",
        "query conversation.messages(first)",
        "mutation importMessages(input.messages.0.createdAt)",
        "mutation transferConversation(input.toUserId)",
        "mutation updateUser(input.isActive)",
    }


# ---- requests -------------------------------------------------------------------------------


def baseline(type_: GraphQLInputType, name: str, field: str) -> Any:
    """A valid value for a required input; None (omitted) for an optional one."""
    if not is_non_null_type(type_):
        return None
    inner = type_.of_type
    if is_list_type(inner):
        return [baseline(inner.of_type, name, field)]
    if is_input_object_type(inner):
        return {
            key: value
            for key, definition in inner.fields.items()
            if (value := baseline(definition.type, key, field)) is not None
        }
    named = get_named_type(inner)
    if named.name == "ID":
        if field == "transferConversation" and name == "conversationId":
            return TRANSFERRED
        return BASELINE.get(name) if name in BASELINE else ID_BASELINE[field]
    if is_enum_type(named):
        return next(iter(named.values))
    if name == "email":
        return f"fresh{next(FRESH)}@example.com"
    return BASELINE[name]


def filled(
    type_: GraphQLInputType, path: tuple[str | int, ...], value: Any, name: str, field: str
) -> Any:
    """The baseline value of an argument with `value` at `path` inside it."""
    if not path:
        return value
    inner = type_.of_type if is_non_null_type(type_) else type_
    if is_list_type(inner):
        return [filled(inner.of_type, path[1:], value, name, field)]
    assert isinstance(inner, GraphQLInputObjectType)
    result = {}
    for key, definition in inner.fields.items():
        if key == path[0]:
            result[key] = filled(definition.type, path[1:], value, key, field)
        elif (default := baseline(definition.type, key, field)) is not None:
            result[key] = default
    return result


def literal(value: Any, type_: GraphQLInputType) -> str:
    """`value` written in GraphQL, as `type_` reads it (enum values bare)."""
    while is_non_null_type(type_):
        type_ = type_.of_type
    if value is None:
        return "null"
    if is_list_type(type_):
        items = value if isinstance(value, list) else [value]
        return "[" + ", ".join(literal(item, type_.of_type) for item in items) + "]"
    if is_input_object_type(type_):
        fields = type_.fields
        return (
            "{"
            + ", ".join(f"{key}: {literal(item, fields[key].type)}" for key, item in value.items())
            + "}"
        )
    if is_enum_type(type_) and isinstance(value, str) and NAME.fullmatch(value):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # JSON's escapes are GraphQL's too


def selection(field: GraphQLField, route: tuple[str, str]) -> str:
    named = get_named_type(field.type)
    if is_leaf_type(named):
        return ""
    if not named.name.endswith("Connection"):
        return "{ __typename }"
    node = "__typename"
    if named.name == "MessageConnection" and route[0].startswith("conversation"):
        node = "id role content clientId createdAt"  # the read-only conversation's messages
    return (
        f"{{ totalCount pageInfo {{ hasNextPage hasPreviousPage }} edges {{ node {{ {node} }} }} }}"
    )


def request(slot: Slot, value: Any, *, literals: bool) -> dict[str, Any]:
    """The operation that puts `value` in `slot`, as JSON (placeholders not yet replaced)."""
    owner = SCHEMA.type_map[slot.owner]
    assert isinstance(owner, GraphQLObjectType)
    field = owner.fields[slot.field]
    arguments: list[str] = []
    declarations: list[str] = []
    variables: dict[str, Any] = {}
    for name, definition in field.args.items():
        if name == slot.argument:
            given = filled(definition.type, slot.path, value, name, slot.field)
        else:
            given = baseline(definition.type, name, slot.field)
            if given is None:
                continue
        if literals:
            arguments.append(f"{name}: {literal(given, definition.type)}")
        else:
            declarations.append(f"${name}: {definition.type}")
            arguments.append(f"{name}: ${name}")
            variables[name] = given
    head = f"{slot.operation} Boundary" + (f"({', '.join(declarations)})" if declarations else "")
    call = f"{slot.field}({', '.join(arguments)})" if arguments else slot.field
    body = f"{slot.route[0]} {call} {selection(field, slot.route)} {slot.route[1]}"
    return {"query": f"{head} {{ {body} }}", "variables": variables}


# ---- two databases --------------------------------------------------------------------------


@dataclass
class Twin:
    """One app, and how its ids are named alike in requests and answers."""

    api: Api
    token: str
    names: dict[str, str]  # placeholder -> this app's value

    def fill(self, text: str) -> str:
        for placeholder, actual in self.names.items():
            text = text.replace(placeholder, actual)
        return text

    def named(self, value: Any) -> Any:
        if isinstance(value, str):
            for placeholder, actual in self.names.items():
                value = value.replace(actual, placeholder)
            return value
        if isinstance(value, list):
            return [self.named(item) for item in value]
        if isinstance(value, dict):
            return {key: self.named(item) for key, item in value.items()}
        return value

    async def answer(self, body: dict[str, Any]) -> tuple[int, Any]:
        # Encoded with ASCII escapes: a lone surrogate is valid JSON ("\ud800") but no UTF-8.
        content = self.fill(json.dumps(body))
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        response = await self.api.client.post("/graphql", content=content, headers=headers)
        try:
            result = response.json()
        except ValueError:
            result = response.text
        return response.status_code, self.named(result)


async def seed(sm: Sessionmaker) -> dict[str, str]:
    """The same rows on both databases; conversations' ids (random UUIDs) by placeholder."""
    admin = await make_user(sm, username="admin", is_admin=True)
    victim = await make_user(sm, username="victim")
    await make_user(sm, username="bystander")
    await make_user(sm, username="gone", is_active=False)
    names: dict[str, str] = {}
    for index, owner in enumerate((admin, victim, admin), start=1):
        moment = BASE_TIME + timedelta(hours=index)
        conversation = await make_conversation(
            sm, owner_id=owner, title=f"c{index}", updated_at=moment
        )
        await make_messages(sm, conversation_id=conversation, count=3, start=moment)
        names[f"@C{index}@"] = gid("Conversation", conversation)
        names[f"@C{index}uuid@"] = conversation
    return names


@pytest.fixture
async def twins(
    other_app: ApiFactory, sessionmaker: Sessionmaker, sqlite_template: Path, tmp_path: Path
) -> AsyncIterator[list[Twin]]:
    """A SQLite app and a PostgreSQL app (this test's database), seeded alike."""
    path = tmp_path / "twin.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite+aiosqlite:///{path}"
    engine = make_engine(url)
    try:
        lite_names = await seed(make_sessionmaker(engine))
    finally:
        await engine.dispose()
    # A token names its account by a random key: each database's admin has its own.
    lite_token = token_for(1)
    names = await seed(sessionmaker)
    token = token_for(1)
    # Failed logins are counted with the time: no limit, so that answers do not depend on it.
    unlimited = {"login_failures_per_name": 10**9, "login_failures_per_address": 10**9}
    async with other_app(database_url=url, **unlimited) as lite, other_app(**unlimited) as pg:
        yield [Twin(lite, lite_token, lite_names), Twin(pg, token, names)]


async def differences(twins: list[Twin], slot: Slot, value: Any, *, literals: bool) -> list[str]:
    body = request(slot, value, literals=literals)
    answers = await asyncio.gather(*(twin.answer(body) for twin in twins))
    problems = []
    case = f"{slot} = {value!r:.80} ({'literal' if literals else 'variable'})"
    for (status, result), db in zip(answers, ("sqlite", "postgresql"), strict=True):
        errors = result.get("errors", []) if isinstance(result, dict) else []
        if status >= 500 or any(
            error.get("extensions", {}).get("code") in (None, "INTERNAL_SERVER_ERROR")
            for error in errors
        ):
            problems.append(f"{case}: {db} answered {status} {json.dumps(result)[:300]}")
    if answers[0] != answers[1]:
        sqlite, postgresql = (json.dumps(answer)[:300] for answer in answers)
        problems.append(f"{case}: sqlite {sqlite} != postgresql {postgresql}")
    return problems


# The test's database is PostgreSQL; the twin on SQLite is made by the test itself.
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@on_postgresql
async def test_every_argument_takes_every_boundary_value_alike_on_both_databases(
    twins: list[Twin],
) -> None:
    problems: list[str] = []
    for slot in SLOTS:
        for value in boundaries(slot.named, slot.name):
            for literals in (False, True):
                problems += await differences(twins, slot, value, literals=literals)
    assert problems == []


@on_postgresql
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_value_of_an_arguments_type_is_answered_alike_on_both_databases(
    twins: list[Twin], data: st.DataObject
) -> None:
    slot = data.draw(st.sampled_from(SLOTS), label="slot")
    value = data.draw(drawn(slot.named, slot.name), label="value")
    literals = data.draw(st.booleans(), label="literal")
    assert await differences(twins, slot, value, literals=literals) == []
