"""One definition per field (`schema.fields`): the plan and Strawberry both run it.

A field added the one way (a definition, and a loader when it reads new data) is served by the
planned executor, not the fallback, and answers as Strawberry does, byte for byte. Every object
field of the exported schema has such a definition, and a document that asks every one of them
is answered by the plan.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import strawberry
from graphql import (
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    get_named_type,
    is_leaf_type,
)
from sqlalchemy import text

from app.settings import Settings
from db.changes import ChangeKind, NewChange, record
from db.conversations import DEFAULT_FILTER
from db.pagination import PageRequest
from schema import make_schema
from schema.errors import Unauthenticated
from schema.fields import Args, Column, Failed, Level, define
from schema.plan import PLAN_MISSED
from schema.queries import Query
from schema.resolvers import Wrapper, defined, definition_of
from schema.types import Conversation, Message
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, serve
from tests.process import ROOT
from tests.schema.test_plan import settle

# ---- a test-only schema: a new type with a new scalar field and a new relation --------------

FIRST_ONE = PageRequest(first=1)


@define("Query.digests")
async def query_digests(level: Level, args: Args) -> Column:
    """The viewer's conversations, newest first, as digests (rows of conversations)."""
    if level.viewer is None:
        return [Failed(Unauthenticated())]
    request = PageRequest(first=10)
    page = await level.loaders.conversations_page_by_user((request, DEFAULT_FILTER)).load(
        level.viewer.id
    )
    return [list(page.rows)]


@define("Digest.words")
def digest_words(level: Level, args: Args) -> Column:
    """A new scalar: the number of words of the conversation's title."""
    return [len(row.title.split()) for row in level.rows]


@define("Digest.opener")
async def digest_opener(level: Level, args: Args) -> Column:
    """A new relation: the conversation's first message, through one loader family."""
    ids = [row.id for row in level.rows]
    pages = await level.loaders.messages_page_by_conversation(FIRST_ONE).load_many(ids)
    return [page.rows[0] if page.rows else None for page in pages]


@define("Digest.conversation")
def digest_conversation(level: Level, args: Args) -> Column:
    return list(level.rows)


@strawberry.type
class Digest(Wrapper):
    words: int = defined("Digest.words")
    opener: Message | None = defined("Digest.opener")
    conversation: Conversation = defined("Digest.conversation")


@strawberry.type(name="Query")
class DigestQuery(Query):
    digests: list[Digest] = defined("Query.digests")


DIGESTS = """{
  digests {
    __typename words
    opener { id role content createdAt conversation { title } }
    conversation { title messageCount owner { username } messages(last: 2) {
      totalCount edges { cursor node { content } } pageInfo { hasPreviousPage endCursor }
    } }
  }
  me { username }
}"""


def missed(caplog: pytest.LogCaptureFixture) -> int:
    return sum(record.message == PLAN_MISSED for record in caplog.records)


async def both_answers(
    settings: Settings, query: str, variables: dict[str, Any], token: str
) -> tuple[httpx.Response, httpx.Response]:
    """The answers of the planned app and of plain Strawberry (no plan, no document cache)."""
    plain = settings.model_copy(update={"query_plan": False, "document_cache": 0})
    answers = []
    for each in (settings, plain):
        api: Api
        async with serve(each) as api:
            headers = {"X-Request-Id": "same-for-both", "Authorization": f"Bearer {token}"}
            before = asyncio.all_tasks()
            answers.append(await api.post(query, variables, headers=headers))
            await settle(before)  # loads an error cut loose finish before the app stops
    return answers[0], answers[1]


async def test_a_field_added_by_one_definition_is_planned_and_answers_as_strawberry(
    settings: Settings,
    sessionmaker: Sessionmaker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = await make_user(sessionmaker, username="dana")
    await make_user(sessionmaker, username="eve")
    titled = await make_conversation(sessionmaker, owner_id=owner, title="three word title")
    await make_messages(sessionmaker, conversation_id=titled, count=3, content="hello {i}")
    await make_conversation(sessionmaker, owner_id=owner, title="empty")
    monkeypatch.setattr("schema.Query", DigestQuery)
    caplog.set_level(logging.DEBUG, logger="chatql.plan")

    planned, plain = await both_answers(settings, DIGESTS, {}, token_for(owner))

    assert missed(caplog) == 0  # the plan served it, not the fallback
    assert (planned.status_code, planned.content) == (plain.status_code, plain.content)
    digests = planned.json()["data"]["digests"]
    assert [(d["words"], d["conversation"]["title"]) for d in digests] == [
        (1, "empty"),
        (3, "three word title"),
    ]
    assert digests[0]["opener"] is None
    assert digests[1]["opener"] == {
        "id": digests[1]["opener"]["id"],
        "role": "USER",
        "content": "hello 0",
        "createdAt": digests[1]["opener"]["createdAt"],
        "conversation": {"title": "three word title"},
    }
    assert {d["__typename"] for d in digests} == {"Digest"}
    assert "errors" not in planned.json()


# ---- every field of the exported schema ----------------------------------------------------

# Mutation and Subscription are never planned (only queries are), and these types are only
# ever mutation (or subscription) results: Strawberry alone answers them, so they have no
# definitions.
ONLY_MUTATION_RESULTS = {
    "AuthPayload",
    "DeletePayload",
    "ImportMessagesPayload",
    "AppendMessagePayload",
    "MessageChunk",
}
UNPLANNED = {"Mutation", "Subscription", *ONLY_MUTATION_RESULTS}


def exported() -> GraphQLSchema:
    return build_schema((ROOT / "schema.graphql").read_text())


def planned_types(schema: GraphQLSchema) -> list[GraphQLObjectType]:
    return [
        named
        for name, named in sorted(schema.type_map.items())
        if isinstance(named, GraphQLObjectType)
        and not name.startswith("__")
        and name not in UNPLANNED
    ]


def test_every_object_field_of_the_exported_schema_has_one_definition() -> None:
    served = make_schema(planned=True)._schema
    missing = []
    fields = 0
    for named in planned_types(exported()):
        served_type = served.get_type(named.name)
        assert isinstance(served_type, GraphQLObjectType), named.name
        for name in named.fields:
            fields += 1
            if definition_of(served_type.fields[name]) is None:
                missing.append(f"{named.name}.{name}")
    assert missing == []
    assert fields > 40  # Query, User, Conversation, Message, connections, edges, PageInfo


def every_field(schema: GraphQLSchema, arguments: dict[str, str]) -> str:
    """A document that asks every field of every planned type, under every way down to it:
    a type already on the path asks only `__typename` (no cycles); `arguments` gives each
    "Type.field" that needs them."""

    def select(named: GraphQLObjectType | GraphQLInterfaceType, path: frozenset[str]) -> str:
        if isinstance(named, GraphQLInterfaceType):
            kinds = sorted(schema.get_possible_types(named), key=lambda kind: kind.name)
            each = " ".join(f"... on {kind.name} {{ {select(kind, path)} }}" for kind in kinds)
            return f"__typename {each}"
        if named.name in path:
            return "__typename"
        below = path | {named.name}
        parts = []
        for name, field in named.fields.items():
            given = arguments.get(f"{named.name}.{name}", "")
            child = get_named_type(field.type)
            if is_leaf_type(child):
                parts.append(f"{name}{given}")
            else:
                assert isinstance(child, GraphQLObjectType | GraphQLInterfaceType)
                parts.append(f"{name}{given} {{ {select(child, below)} }}")
        return " ".join(parts)

    query = schema.query_type
    assert query is not None
    selection = select(query, frozenset())
    return f"query Everything($user: ID!, $conversation: ID!) {{ {selection} }}"


def fields_answered(value: Any, named: str, schema: GraphQLSchema, seen: set[str]) -> None:
    """Every "Type.field" in an answer of type `named` (a null one too: it is a value)."""
    if isinstance(value, list):
        for item in value:
            fields_answered(item, named, schema, seen)
        return
    if not isinstance(value, dict):
        return
    kind = schema.get_type(value.get("__typename", named))
    assert isinstance(kind, GraphQLObjectType)
    for key, item in value.items():
        if key == "__typename":
            continue
        seen.add(f"{kind.name}.{key}")
        fields_answered(item, get_named_type(kind.fields[key].type).name, schema, seen)


async def test_a_document_asking_every_field_is_answered_by_the_plan_as_by_strawberry(
    settings: Settings, sessionmaker: Sessionmaker, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await make_user(sessionmaker, username="bob", full_name="Bob")
    conversation = await make_conversation(sessionmaker, owner_id=owner, title="plans")
    messages = await make_messages(sessionmaker, conversation_id=conversation, count=3)
    # The owner's feed and search have something to show, so every field of theirs answers.
    async with sessionmaker() as session, session.begin():
        await record(
            session,
            [
                NewChange(owner, ChangeKind.CONVERSATION_CREATED, conversation),
                NewChange(owner, ChangeKind.MESSAGE_ADDED, conversation, messages[0]),
            ],
        )
        # One message with a usage, so TokenUsage's fields answer too.
        await session.execute(
            text("UPDATE messages SET input_tokens = 1, output_tokens = 2 WHERE id = :id"),
            {"id": messages[0]},
        )
    schema = exported()
    document = every_field(
        schema,
        {
            "Query.node": "(id: $user)",
            "Query.nodes": "(ids: [$user, $conversation])",
            "Query.user": "(id: $user)",
            "Query.conversation": "(id: $conversation)",
            "Query.searchMessages": '(query: "message")',
        },
    )
    every = {f"{named.name}.{name}" for named in planned_types(schema) for name in named.fields}
    variables = {"user": gid("User", owner), "conversation": gid("Conversation", conversation)}
    caplog.set_level(logging.DEBUG, logger="chatql.plan")

    # Every field under every path is a big document: its estimate is over the default limit.
    roomy = settings.model_copy(update={"max_query_cost": 10_000_000})
    planned, plain = await both_answers(roomy, document, variables, token_for(owner))

    assert missed(caplog) == 0
    assert (planned.status_code, planned.content) == (plain.status_code, plain.content)
    assert "errors" not in planned.json(), planned.json()
    data = planned.json()["data"]
    assert "errors" not in planned.json()
    answered: set[str] = set()
    fields_answered(data, "Query", schema, answered)
    # Every field answered, once at least: the plan served them all.
    assert every - answered == set()
    assert data["user"]["username"] == "bob"
    assert data["conversation"]["messages"]["totalCount"] == 3
    assert [node["__typename"] for node in data["nodes"]] == ["User", "Conversation"]


async def test_an_error_for_one_object_is_the_plans_own_answer_and_two_go_to_strawberry(
    settings: Settings, sessionmaker: Sessionmaker, caplog: pytest.LogCaptureFixture
) -> None:
    viewer = await make_user(sessionmaker, username="fay")
    await make_user(sessionmaker, username="gus")
    query = "{ users { edges { node { username conversationCount } } } }"
    caplog.set_level(logging.DEBUG, logger="chatql.plan")

    planned, plain = await both_answers(settings, query, {}, token_for(viewer))

    assert (planned.status_code, planned.content) == (plain.status_code, plain.content)
    # conversationCount is Int!: the null goes up to the nearest nullable parent, the root.
    assert planned.json() == {
        "data": None,
        "errors": [
            {
                "message": "You are not allowed to do this.",
                "locations": [{"line": 1, "column": 35}],
                "path": ["users", "edges", 1, "node", "conversationCount"],
                "extensions": {"code": "FORBIDDEN"},
            }
        ],
    }
    assert missed(caplog) == 0

    # An error under a nullable field nulls that field alone.
    nullable = "query ($id: ID!) { me { username } conversation(id: $id) { title } }"
    missing = {"id": gid("Conversation", "0b1d5f9e-3c2a-4e8b-9d6f-2a7c1e4b5d60")}
    planned, plain = await both_answers(settings, nullable, missing, token_for(viewer))
    assert (planned.status_code, planned.content) == (plain.status_code, plain.content)
    assert planned.json() == {
        "data": {"me": {"username": "fay"}, "conversation": None},
        "errors": [
            {
                "message": "Not found.",
                "locations": [{"line": 1, "column": 36}],
                "path": ["conversation"],
                "extensions": {"code": "NOT_FOUND"},
            }
        ],
    }
    assert missed(caplog) == 0

    # Which of two errors Strawberry reports first is its own affair: it answers.
    await make_user(sessionmaker, username="hal")
    planned, plain = await both_answers(settings, query, {}, token_for(viewer))
    assert (planned.status_code, planned.content) == (plain.status_code, plain.content)
    assert [error["path"] for error in planned.json()["errors"]] == [
        ["users", "edges", 1, "node", "conversationCount"]
    ]
    reasons = [
        str(r.exc_info[1]) for r in caplog.records if r.message == PLAN_MISSED and r.exc_info
    ]
    assert reasons == ["User.conversationCount: a second error for an object"]
