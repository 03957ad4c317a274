"""Every input inside the databases' domain, checked at the edge: ids within the id columns,
times within what both databases store, text without NUL or lone surrogates, and cursors that
are short and flat. Anything else is BAD_USER_INPUT before it reaches a driver.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from db.formats import OUT_OF_RANGE
from db.models import Conversation
from schema.limits import TEXT_REFUSED
from schema.validation import HAS_NUL, NOT_UNICODE
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api

NOT_AN_ID = "not a valid id"
NOT_A_CURSOR = "not a valid cursor for this connection"


def answer_of(result: dict[str, Any]) -> dict[str, Any]:
    """The answer without its errors' locations (positions in the document)."""
    errors = [{k: v for k, v in error.items() if k != "locations"} for error in result["errors"]]
    return {**result, "errors": errors}


def bad(field: str, reason: str, path: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": f"{field}: {reason}",
        "extensions": {"code": "BAD_USER_INPUT", "fields": {field: reason}},
    }
    if path is not None:
        error["path"] = [path]
    return error


def text_refused(**fields: str) -> dict[str, Any]:
    extensions = {"code": "BAD_USER_INPUT", "fields": fields}
    return {"errors": [{"message": TEXT_REFUSED, "extensions": extensions}]}


async def post_escaped(
    api: Api, query: str, variables: dict[str, Any] | None = None, *, token: str
) -> dict[str, Any]:
    """The result of a request whose JSON is in ASCII escapes: a lone surrogate is valid JSON
    ("\\ud800") but no UTF-8, so it cannot be sent any other way."""
    body = json.dumps({"query": query, "variables": variables or {}})
    headers = {"Content-Type": "application/json"}
    response = await api.raw("POST", content=body, headers=headers, token=token)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture
async def admin_id(sessionmaker: Sessionmaker) -> int:
    return await make_user(sessionmaker, is_admin=True)


@pytest.fixture
def admin(admin_id: int) -> str:
    return token_for(admin_id)


@pytest.fixture
async def conversation(sessionmaker: Sessionmaker, admin_id: int) -> str:
    """The global id of one of the admin's conversations."""
    return gid("Conversation", await make_conversation(sessionmaker, owner_id=admin_id))


async def conversation_count(sessionmaker: Sessionmaker) -> int:
    async with sessionmaker() as session:
        return int(
            (await session.execute(select(func.count()).select_from(Conversation))).scalar_one()
        )


# ---- ids ----------------------------------------------------------------------------------

BEYOND = 2**31  # one past PostgreSQL's INTEGER
CASES = {
    "node": ("query ($id: ID!) { node(id: $id) { id } }", {"node": None}, "id"),
    "nodes": ("query ($id: ID!) { nodes(ids: [$id]) { id } }", None, "ids.0"),
    "user": ("query ($id: ID!) { user(id: $id) { id } }", {"user": None}, "id"),
    "deleteUser": ("mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }", None, "id"),
    "updateUser": (
        'mutation ($id: ID!) { updateUser(id: $id, input: {fullName: "x"}) { id } }',
        None,
        "id",
    ),
}


# Only node and nodes take a message id.
@pytest.mark.parametrize(
    ("field", "kind"),
    [(field, "User") for field in CASES] + [("node", "Message"), ("nodes", "Message")],
)
async def test_an_id_whose_integer_no_id_column_holds_is_bad_user_input(
    api: Api, admin: str, field: str, kind: str
) -> None:
    query, data, name = CASES[field]
    result = await api.run(query, {"id": gid(kind, BEYOND)}, token=admin)
    assert answer_of(result) == {"data": data, "errors": [bad(name, NOT_AN_ID, field)]}


async def test_a_transfer_to_an_id_no_id_column_holds_is_bad_user_input(
    api: Api, admin: str, conversation: str
) -> None:
    result = await api.run(
        """mutation ($input: TransferConversationInput!) {
          transferConversation(input: $input) { id }
        }""",
        {"input": {"conversationId": conversation, "toUserId": gid("User", 2**63)}},
        token=admin,
    )
    assert answer_of(result) == {
        "data": None,
        "errors": [bad("toUserId", NOT_AN_ID, "transferConversation")],
    }


async def test_the_largest_id_a_column_holds_is_an_id_of_nothing(api: Api, admin: str) -> None:
    largest = gid("User", BEYOND - 1)
    found = await api.run("query ($id: ID!) { node(id: $id) { id } }", {"id": largest}, token=admin)
    deleted = await api.run(
        "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }", {"id": largest}, token=admin
    )
    assert found == {"data": {"node": None}}
    assert answer_of(deleted) == {
        "data": None,
        "errors": [
            {"message": "Not found.", "path": ["deleteUser"], "extensions": {"code": "NOT_FOUND"}}
        ],
    }


# ---- cursors ------------------------------------------------------------------------------


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


USERS_AFTER = "query ($c: String) { users(after: $c) { totalCount } }"
USERS_BEFORE = "query ($c: String) { users(before: $c) { totalCount } }"


@pytest.mark.parametrize(
    "raw",
    [
        b'["u",2147483648]',
        b'["u",9223372036854775808]',
        b'["u",0]',
        b"[" * 100_000 + b"]" * 100_000,
        b'["u",[[[[1]]]]]',
        b'["u",{"id":1}]',
    ],
    ids=["2^31", "2^63", "zero", "nested-100000", "nested-list", "object"],
)
@pytest.mark.parametrize(("query", "field"), [(USERS_AFTER, "after"), (USERS_BEFORE, "before")])
async def test_a_cursor_out_of_the_domain_is_bad_user_input(
    api: Api, admin: str, raw: bytes, query: str, field: str
) -> None:
    result = await api.run(query, {"c": cursor_of(raw)}, token=admin)
    assert answer_of(result) == {"data": None, "errors": [bad(field, NOT_A_CURSOR, "users")]}


async def test_a_message_cursor_before_the_first_time_is_bad_user_input(
    api: Api, admin: str, conversation: str
) -> None:
    cursor = cursor_of(b'["m","0001-01-01T00:00:00+01:00",1]')
    result = await api.run(
        """query ($id: ID!, $c: String) {
          conversation(id: $id) { messages(after: $c) { totalCount } }
        }""",
        {"id": conversation, "c": cursor},
        token=admin,
    )
    error = bad("after", NOT_A_CURSOR)
    error["path"] = ["conversation", "messages"]
    assert answer_of(result) == {"data": {"conversation": None}, "errors": [error]}


# ---- times --------------------------------------------------------------------------------

IMPORT_VARIABLE = """
mutation ($input: ImportMessagesInput!) { importMessages(input: $input) { importedCount } }
"""
IMPORT_LITERAL = """
mutation ($id: ID!) {
  importMessages(
    input: {conversationId: $id, messages: [{role: USER, content: "x", createdAt: %s}]}
  ) { importedCount }
}
"""
QUERY_COUNT = "query ($id: ID!) { conversation(id: $id) { messageCount } }"
OUTSIDE = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-01:00",
]


@pytest.mark.parametrize("moment", OUTSIDE)
async def test_a_time_outside_what_both_databases_store_is_bad_user_input(
    api: Api, sessionmaker: Sessionmaker, admin: str, conversation: str, moment: str
) -> None:
    message = {"role": "USER", "content": "x", "createdAt": moment}
    as_variable = await api.run(
        IMPORT_VARIABLE,
        {"input": {"conversationId": conversation, "messages": [message]}},
        token=admin,
    )
    as_literal = await api.run(
        IMPORT_LITERAL % json.dumps(moment), {"id": conversation}, token=admin
    )
    assert [answer_of(as_variable), answer_of(as_literal)] == [
        {
            "errors": [
                {
                    "message": "Variable '$input' has invalid value at .messages[0].createdAt: "
                    f"Expected value of type 'DateTime', but encountered error '{OUT_OF_RANGE}'; "
                    f"found: '{moment}'.",
                    "extensions": {"code": "BAD_USER_INPUT"},
                }
            ],
        },
        {
            "errors": [
                {
                    "message": f"Expected value of type 'DateTime', found \"{moment}\"; "
                    + OUT_OF_RANGE,
                    "extensions": {"code": "BAD_USER_INPUT"},
                }
            ],
        },
    ]
    data = await api.data(QUERY_COUNT, {"id": conversation}, token=admin)
    assert data == {"conversation": {"messageCount": 0}}


async def test_a_literal_that_is_no_time_is_bad_user_input(
    api: Api, admin: str, conversation: str
) -> None:
    result = await api.run(IMPORT_LITERAL % '"garbage"', {"id": conversation}, token=admin)
    assert answer_of(result) == {
        "errors": [
            {
                "message": "Expected value of type 'DateTime', found \"garbage\"; "
                "not an ISO 8601 date and time: 'garbage'",
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ],
    }


async def test_the_first_and_last_times_of_the_domain_are_stored_and_read_back_exactly(
    api: Api, admin: str, conversation: str, sessionmaker: Sessionmaker
) -> None:
    messages = [{"role": "USER", "content": "first", "createdAt": "0001-01-02T01:00:00+01:00"}]
    await api.data(
        IMPORT_VARIABLE,
        {"input": {"conversationId": conversation, "messages": messages}},
        token=admin,
    )
    # The last time of the domain is in the future, which an import refuses: written directly.
    last = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
    conversation_pk = base64.b64decode(conversation).decode().split(":", 1)[1]
    await make_messages(
        sessionmaker, conversation_id=conversation_pk, count=1, start=last, content="last"
    )
    page = """query ($id: ID!, $after: String) {
      conversation(id: $id) {
        messages(after: $after) { edges { cursor node { content createdAt } } }
      }
    }"""
    data = await api.data(page, {"id": conversation}, token=admin)
    edges = data["conversation"]["messages"]["edges"]
    assert [edge["node"] for edge in edges] == [
        {"content": "first", "createdAt": "0001-01-02T00:00:00.000000+00:00"},
        {"content": "last", "createdAt": "9999-12-30T23:59:59.999999+00:00"},
    ]
    after_first = await api.data(
        page, {"id": conversation, "after": edges[0]["cursor"]}, token=admin
    )
    assert after_first["conversation"]["messages"]["edges"] == edges[1:]


# ---- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("query ($v: String) { users(search: $v) { totalCount } }", "search"),
        ("query ($v: String) { user(username: $v) { id } }", "username"),
        ("query ($v: ID!) { node(id: $v) { id } }", "id"),
        ("query ($v: String) { users(after: $v) { totalCount } }", "after"),
    ],
    ids=["search", "username", "id", "cursor"],
)
@pytest.mark.parametrize(("value", "reason"), [("\ud800", NOT_UNICODE), ("a\x00", HAS_NUL)])
async def test_text_no_database_keeps_is_bad_user_input_in_any_argument(
    api: Api, admin: str, query: str, field: str, value: str, reason: str
) -> None:
    result = await post_escaped(api, query, {"v": value}, token=admin)
    assert result == text_refused(**{field: reason})


async def test_a_nul_in_a_comment_is_refused_and_nothing_runs(
    api: Api, sessionmaker: Sessionmaker, admin: str
) -> None:
    result = await api.run(
        'mutation { createConversation(input: {title: "t"}) { id } } # \x00', token=admin
    )
    assert result == text_refused(query=HAS_NUL)
    assert await conversation_count(sessionmaker) == 0


async def test_a_variables_default_is_checked_where_the_variable_stands(
    api: Api, admin: str
) -> None:
    result = await api.run(
        'query ($s: String = "a\\u0000") { users(search: $s) { totalCount } }', token=admin
    )
    assert result == text_refused(search=HAS_NUL)


async def test_a_bad_key_in_a_variable_is_named_in_escapes(api: Api, admin: str) -> None:
    result = await post_escaped(
        api,
        "mutation ($input: CreateConversationInput!) { createConversation(input: $input) { id } }",
        {"input": {"title": "t", "\ud800": "x"}},
        token=admin,
    )
    assert result == text_refused(**{"\\ud800": NOT_UNICODE})


@pytest.mark.parametrize(("name", "reason"), [("\ud800", NOT_UNICODE), ("A\x00", HAS_NUL)])
async def test_an_operation_name_no_database_keeps_is_bad_user_input(
    api: Api, admin: str, name: str, reason: str
) -> None:
    body = json.dumps({"query": "query A { me { id } }", "operationName": name})
    headers = {"Content-Type": "application/json"}
    response = await api.raw("POST", content=body, headers=headers, token=admin)
    # Refused before Strawberry reads the request, as a request error: no `data`.
    assert (response.status_code, response.json()) == (200, text_refused(operationName=reason))


async def test_a_variable_no_operation_declares_is_named_in_escapes(api: Api, admin: str) -> None:
    result = await post_escaped(api, "{ me { id } }", {"\ud800": "a\x00"}, token=admin)
    # The name is refused first (its value would be too): both stand at the same place.
    assert result == text_refused(**{"\\ud800": NOT_UNICODE})
