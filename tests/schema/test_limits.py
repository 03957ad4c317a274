"""Every limit at exactly its bound (allowed) and one above (refused with QUERY_TOO_COMPLEX)."""

from __future__ import annotations

from typing import Any

import pytest

from app.settings import Settings
from schema.limits import TOO_COSTLY, TOO_DEEP, TOO_MANY_ALIASES, TOO_MANY_TOKENS
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, StatementCounter, serve


def too_complex(
    template: str, *, limit: int, actual: int, at: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The error of a refusal; `at` is where the parser stopped, for the token limit."""
    error: dict[str, Any] = {"message": template.format(limit=limit, actual=actual)}
    if at is not None:
        error["locations"] = [{"line": at[0], "column": at[1]}]
    error["extensions"] = {"code": "QUERY_TOO_COMPLEX", "limit": limit, "actual": actual}
    return error


async def admin_token(sessionmaker: Sessionmaker) -> str:
    return token_for(await make_user(sessionmaker, is_admin=True))


# ---- depth ------------------------------------------------------------------------------

# me > conversations > edges > node > owner > conversations > edges > node > messages > edges
# > node > id: twelve fields on the longest path.
DEPTH_12 = """{ me { conversations { edges { node { owner { conversations { edges { node {
  messages { edges { node { id } } } } } } } } } } } }"""
DEPTH_13 = DEPTH_12.replace("node { id }", "node { conversation { id } }")


async def test_a_query_twelve_levels_deep_runs(api: Api) -> None:
    assert await api.run(DEPTH_12) == {"data": {"me": None}}


async def test_a_query_thirteen_levels_deep_is_refused(api: Api) -> None:
    result = await api.run(DEPTH_13)
    assert result == {"errors": [too_complex(TOO_DEEP, limit=12, actual=13)]}


async def test_depth_counts_the_fields_inside_fragments(api: Api) -> None:
    query = """{ me { ...Deep } }
    fragment Deep on User { conversations { edges { node { owner { conversations { edges {
      node { messages { edges { node { conversation { id } } } } } } } } } } } }"""
    result = await api.run(query)
    assert result["errors"] == [too_complex(TOO_DEEP, limit=12, actual=13)]


# ---- aliases ----------------------------------------------------------------------------


def aliased(count: int) -> str:
    return " ".join(f"a{i}: __typename" for i in range(count))


async def test_thirty_aliases_are_allowed(api: Api) -> None:
    result = await api.run("{ " + aliased(30) + " }")
    assert result == {"data": {f"a{i}": "Query" for i in range(30)}}


async def test_thirty_one_aliases_are_refused(api: Api) -> None:
    result = await api.run("{ " + aliased(31) + " }")
    assert result == {"errors": [too_complex(TOO_MANY_ALIASES, limit=30, actual=31)]}


async def test_aliases_count_in_every_place_a_fragment_is_spread(api: Api) -> None:
    fragment = "fragment F on User { " + " ".join(f"u{i}: id" for i in range(15)) + " }"
    allowed = await api.run('{ me { ...F } user(username: "x") { ...F } } ' + fragment)
    refused = await api.run(
        '{ me { ...F } user(username: "x") { ...F } x: __typename } ' + fragment
    )
    assert "QUERY_TOO_COMPLEX" not in str(allowed)
    assert refused == {
        "errors": [too_complex(TOO_MANY_ALIASES, limit=30, actual=31)],
    }


# ---- tokens -----------------------------------------------------------------------------


def tokens(count: int) -> str:
    """A document of exactly `count` tokens: `{ nodes(ids: [` ... `]) { id } }` is 12 of them.

    (Thousands of sibling fields would be stopped earlier by graphql-core's own budget for
    comparing overlapping fields.)
    """
    return "{ nodes(ids: [" + ' "x"' * (count - 12) + " ]) { id } }"


async def test_a_document_of_five_thousand_tokens_runs(api: Api) -> None:
    result = await api.run(tokens(5000))
    # It ran: `nodes` needs a login.
    assert result == {
        "data": None,
        "errors": [
            {
                "message": "You must be logged in.",
                "locations": [{"line": 1, "column": 3}],
                "path": ["nodes"],
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
    }


async def test_five_thousand_tokens_may_be_mostly_comments(api: Api) -> None:
    assert await api.run("# a comment\n" * 4997 + "{ __typename }") == {
        "data": {"__typename": "Query"}
    }


async def test_a_document_of_five_thousand_and_one_tokens_is_refused(api: Api) -> None:
    result = await api.run(tokens(5001))
    # The parser stops at the token past the limit: the last one.
    stop = (1, len(tokens(5001)))
    assert result == {
        "errors": [too_complex(TOO_MANY_TOKENS, limit=5000, actual=5001, at=stop)],
    }


async def test_comments_count_as_tokens(api: Api) -> None:
    result = await api.run("# a comment\n" * 5000 + "{ __typename }")
    stop = (5001, 1)
    assert result["errors"] == [too_complex(TOO_MANY_TOKENS, limit=5000, actual=5003, at=stop)]


async def test_a_huge_document_is_refused_with_its_token_count(api: Api) -> None:
    result = await api.run(tokens(60_000))
    assert [error["extensions"] for error in result["errors"]] == [
        {"code": "QUERY_TOO_COMPLEX", "limit": 5000, "actual": 60_000}
    ]


# ---- cost -------------------------------------------------------------------------------

# 1 me + 1 conversations + 26 x (edge + node + messages + 30 x (edge + node + conversation
# + messages + 30 x (edge + node))) = 2 + 26 x (3 + 30 x 64) = 50,000, through fragments and
# variables (one of them from its default value). Twelve levels deep, too.
COST_50_000 = """
query Cost($conversations: Int!, $messages: Int!, $more: Int = 30) {
  me { conversations(first: $conversations) { ...ConversationEdges } }
}
fragment ConversationEdges on ConversationConnection {
  edges { node { messages(first: $messages) { ...MessageEdges } } }
}
fragment MessageEdges on MessageConnection {
  edges { node { conversation { messages(last: $more) { edges { node { id } } } } } }
}
"""
COST_VARIABLES = {"conversations": 26, "messages": 30}


async def test_a_query_that_may_return_fifty_thousand_objects_runs(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=admin)
    [message] = await make_messages(sessionmaker, conversation_id=conversation, count=1)
    data = await api.data(COST_50_000, COST_VARIABLES, token=token_for(admin))
    node = {"id": gid("Message", message)}
    assert data == {
        "me": {
            "conversations": {
                "edges": [
                    {
                        "node": {
                            "messages": {
                                "edges": [
                                    {
                                        "node": {
                                            "conversation": {
                                                "messages": {"edges": [{"node": node}]}
                                            }
                                        }
                                    }
                                ]
                            }
                        }
                    }
                ]
            }
        }
    }


async def test_one_object_more_is_refused(api: Api, sessionmaker: Sessionmaker) -> None:
    token = await admin_token(sessionmaker)
    query = COST_50_000.replace("me { conversations", "me { id } me { conversations")
    result = await api.run(query, COST_VARIABLES, token=token)
    assert result == {
        "errors": [too_complex(TOO_COSTLY, limit=50_000, actual=50_001)],
    }


async def test_the_cost_follows_the_variables(api: Api, sessionmaker: Sessionmaker) -> None:
    token = await admin_token(sessionmaker)
    result = await api.run(COST_50_000, {**COST_VARIABLES, "more": 31}, token=token)
    # 2 + 26 x (3 + 30 x 66)
    assert result["errors"] == [too_complex(TOO_COSTLY, limit=50_000, actual=51_560)]


async def test_a_cost_attack_is_refused_before_any_sql_but_the_viewer_lookup(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    token = await admin_token(sessionmaker)
    query = """{ users(first: 100) { edges { node { conversations(first: 100) { edges { node {
      messages(first: 100) { edges { node { id content } } } } } } } } } }"""
    statements.reset()
    result = await api.run(query, token=token)
    assert result == {
        "errors": [too_complex(TOO_COSTLY, limit=50_000, actual=2_030_301)],
    }
    assert statements.count == 1 and "FROM users" in statements.seen[0]


@pytest.fixture
def small_cost_limit(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_query_cost": 42})


async def test_an_omitted_page_size_counts_as_twenty(
    small_cost_limit: Settings, sessionmaker: Sessionmaker
) -> None:
    token = await admin_token(sessionmaker)
    async with serve(small_cost_limit) as api:
        # 1 me + 1 conversations + 20 x (edge + node) = 42
        allowed = await api.run("{ me { conversations { edges { node { id } } } } }", token=token)
        refused = await api.run(
            "{ me { conversations { edges { node { id } } pageInfo { hasNextPage } } } }",
            token=token,
        )
    assert allowed == {"data": {"me": {"conversations": {"edges": []}}}}
    assert refused == {"errors": [too_complex(TOO_COSTLY, limit=42, actual=43)]}


async def test_a_list_of_ids_counts_one_object_per_id(
    small_cost_limit: Settings, sessionmaker: Sessionmaker
) -> None:
    token = await admin_token(sessionmaker)
    query = "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    async with serve(small_cost_limit) as api:
        allowed = await api.run(query, {"ids": ["VXNlcjox"] * 42}, token=token)
        refused = await api.run(query, {"ids": ["VXNlcjox"] * 43}, token=token)
    assert allowed == {"data": {"nodes": [{"id": "VXNlcjox"}] * 42}}
    assert refused["errors"] == [too_complex(TOO_COSTLY, limit=42, actual=43)]


async def test_one_document_is_measured_again_when_the_variables_it_reads_change(
    small_cost_limit: Settings, sessionmaker: Sessionmaker
) -> None:
    token = await admin_token(sessionmaker)
    # 1 me + 1 conversations + n x (edge + node); the limit is 42, so n = 20 is the most.
    query = """query ($n: Int, $skip: Boolean = false) {
      me @skip(if: $skip) { conversations(first: $n) { edges { node { id } } } }
    }"""
    variables: list[dict[str, Any]] = [
        {"n": 20},
        {"n": 21},
        {"n": 20, "skip": False},  # a variable the measures do not read
        {},  # the default page size: 20
        {"n": 21.0},
        {"n": 21},
        {"n": None},
    ]
    async with serve(small_cost_limit) as api:
        results = [await api.run(query, each, token=token) for each in variables]
    allowed: dict[str, Any] = {"data": {"me": {"conversations": {"edges": []}}}}
    refused = {"errors": [too_complex(TOO_COSTLY, limit=42, actual=44)]}
    assert results == [allowed, refused, allowed, allowed, refused, refused, allowed]


async def test_limits_are_configurable(settings: Settings) -> None:
    strict = settings.model_copy(update={"max_query_depth": 2, "max_aliases": 1, "max_tokens": 12})
    async with serve(strict) as api:
        thirteen_tokens = await api.run("{ a: me { b: conversations { totalCount } } }")
        three_deep = await api.run("{ me { conversations { totalCount } } }")
        two_aliases = await api.run("{ a: me { id } b: __typename }")
    assert [thirteen_tokens["errors"], three_deep["errors"], two_aliases["errors"]] == [
        [too_complex(TOO_MANY_TOKENS, limit=12, actual=13, at=(1, 45))],
        [too_complex(TOO_DEEP, limit=2, actual=3)],
        [too_complex(TOO_MANY_ALIASES, limit=1, actual=2)],
    ]


# ---- page sizes -------------------------------------------------------------------------


async def test_page_sizes_are_allowed_up_to_one_hundred(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token = await admin_token(sessionmaker)
    allowed = await api.run("{ me { conversations(first: 100) { totalCount } } }", token=token)
    refused = await api.error("{ me { conversations(last: 101) { totalCount } } }", token=token)
    assert allowed == {"data": {"me": {"conversations": {"totalCount": 0}}}}
    assert refused["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"last": "must be between 1 and 100"},
    }


# ---- introspection and suggestions ------------------------------------------------------


async def test_introspection_is_on_by_default(api: Api) -> None:
    data = await api.data("{ __schema { queryType { name } } }")
    assert data == {"__schema": {"queryType": {"name": "Query"}}}


async def test_introspection_can_be_switched_off(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"introspection": False})) as api:
        refused = await api.run("{ __schema { queryType { name } } }")
        typename = await api.run("{ __typename }")
    assert refused == {
        "errors": [
            {
                "message": "GraphQL introspection has been disabled, but the requested query "
                f"contained the field '{field}'.",
                "locations": [{"line": 1, "column": column}],
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
            for field, column in [("__schema", 3), ("queryType", 14)]
        ],
    }
    assert typename == {"data": {"__typename": "Query"}}


MISTAKES = """
mutation { sendMessage(input: {conversationId: "x", content: "hi", role: USR}) { id } }
"""


async def test_suggestions_are_hidden_by_default(api: Api) -> None:
    field = await api.error("{ mee { id } }")
    argument = await api.error("{ users(frist: 1) { totalCount } }")
    enum = await api.error(MISTAKES)
    assert [field["message"], argument["message"], enum["message"]] == [
        "Cannot query field 'mee' on type 'Query'.",
        "Unknown argument 'frist' on field 'Query.users'.",
        "Value 'USR' does not exist in 'MessageRole' enum.",
    ]


async def test_suggestions_are_shown_in_debug_mode(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"debug": True})) as api:
        field = await api.error("{ mee { id } }")
        enum = await api.error(MISTAKES)
    assert [field["message"], enum["message"]] == [
        "Cannot query field 'mee' on type 'Query'. Did you mean 'me'?",
        "Value 'USR' does not exist in 'MessageRole' enum. Did you mean the enum value 'USER'?",
    ]
