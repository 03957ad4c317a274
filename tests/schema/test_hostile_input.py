"""Hostile strings in every string input of every mutation: each one is either refused with a
clear BAD_USER_INPUT (or the error the mutation gives any wrong value) or stored exactly and
read back unchanged in a later request. Never a 500."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import delete

from db.models import LoginFailure, User
from schema.validation import HAS_NUL, NOT_UNICODE
from tests.factories import PASSWORD, Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api

HOSTILE = {
    "sql": "'; DROP TABLE users; --",
    "sql-union": "x' UNION SELECT hashed_password FROM users WHERE '1'='1",
    "nul": "nul\x00byte",
    "huge": "x" * 100_000,
    "emoji": "😀 👩‍👩‍👧‍👦 🏳️‍🌈",
    # "مرحبا עברית" behind a right-to-left override, then a right-to-left mark.
    "rtl": "\u202e\u0645\u0631\u062d\u0628\u0627 \u05e2\u05d1\u05e8\u05d9\u05ea\u200f",
    "surrogate": "half \ud800 a pair",
}
STORED = "stored"
# "stored", or the extensions of the error a value was refused with.
Outcome = Any
Driver = Callable[[Api, Sessionmaker, str], Awaitable[Outcome]]


def text_rule(field: str, *, high: int, low: int = 1) -> dict[str, Outcome]:
    """What a free-text input of `low`-`high` characters makes of each hostile string."""
    length = f"must be {low}-{high} characters" if low else f"must be at most {high} characters"

    def outcome(value: str) -> Outcome:
        if low <= len(value) <= high:
            return STORED
        return {"code": "BAD_USER_INPUT", "fields": {field: length}}

    return {name: outcome(value) for name, value in HOSTILE.items()}


def every(outcome: Outcome) -> dict[str, Outcome]:
    return dict.fromkeys(HOSTILE, outcome)


def bad(field: str, reason: str) -> dict[str, Any]:
    return {"code": "BAD_USER_INPUT", "fields": {field: reason}}


async def outcome_of(api: Api, query: str, variables: dict[str, Any], *, token: str | None) -> Any:
    """The data of a request, or its one error's extensions."""
    # Encoded here with ASCII escapes: a lone surrogate is valid JSON ("\\ud800") but no UTF-8.
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables})
    response = await api.client.post("/graphql", content=body, headers=headers)
    assert response.status_code == 200, response.text
    result = response.json()
    if result.get("errors"):
        assert len(result["errors"]) == 1, result
        extensions: dict[str, Any] = result["errors"][0]["extensions"]
        assert extensions["code"] != "INTERNAL_SERVER_ERROR", result
        return extensions
    return result["data"]


def stored(returned: Any, read_back: Any, value: str) -> Outcome:
    assert returned == read_back == value, (returned, read_back)
    return STORED


SIGN_UP = """
mutation ($input: SignUpInput!) { signUp(input: $input) { token user { username email fullName } } }
"""
LOG_IN = "mutation ($input: LogInInput!) { logIn(input: $input) { token } }"
ME = "{ me { username email fullName } }"
UPDATE_USER = """
mutation ($id: ID!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) { email fullName }
}
"""
CREATE = (
    "mutation ($input: CreateConversationInput!) { createConversation(input: $input) { id title } }"
)
UPDATE = """
mutation ($id: ID!, $input: UpdateConversationInput!) {
  updateConversation(id: $id, input: $input) { title }
}
"""
DELETE_USER = "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }"
DELETE = "mutation ($id: ID!) { deleteConversation(id: $id) { deletedId } }"
TRANSFER = """
mutation ($input: TransferConversationInput!) { transferConversation(input: $input) { id } }
"""
SEND = "mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id content clientId } }"
IMPORT = """
mutation ($input: ImportMessagesInput!) {
  importMessages(input: $input) { conversation { messages { edges { node { content } } } } }
}
"""
MESSAGE = "query ($id: ID!) { node(id: $id) { ... on Message { content clientId } } }"
TITLE = "query ($id: ID!) { conversation(id: $id) { title } }"


def sign_up_input(**changes: str) -> dict[str, Any]:
    fields = {"username": "hostile", "email": "hostile@example.com", "password": "password-1"}
    return {"input": {**fields, **changes}}


async def signed_up(api: Api, field: str, value: str) -> Any:
    result = await outcome_of(api, SIGN_UP, sign_up_input(**{field: value}), token=None)
    if "signUp" not in result:
        return result
    me = await api.data(ME, token=result["signUp"]["token"])
    return stored(result["signUp"]["user"][field], me["me"][field], value)


async def logs_in(api: Api, login: str, password: str) -> Any:
    result = await outcome_of(
        api, LOG_IN, {"input": {"login": login, "password": password}}, token=None
    )
    return STORED if "logIn" in result else result


async def sign_up_username(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await signed_up(api, "username", value)


async def sign_up_email(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await signed_up(api, "email", value)


async def sign_up_full_name(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await signed_up(api, "fullName", value)


async def sign_up_password(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    result = await outcome_of(api, SIGN_UP, sign_up_input(password=value), token=None)
    if "signUp" not in result:
        return result
    # Stored exactly: the very same string logs in.
    return await logs_in(api, "hostile", value)


async def log_in_login(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await logs_in(api, value, PASSWORD)


async def log_in_password(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    await make_user(sm, username="someone")
    return await logs_in(api, "someone", value)


async def updated_user(sm: Sessionmaker, api: Api, field: str, value: str) -> Any:
    user = await make_user(sm, username="hostile")
    result = await outcome_of(
        api, UPDATE_USER, {"id": gid("User", user), "input": {field: value}}, token=token_for(user)
    )
    if "updateUser" not in result:
        return result
    if field == "password":
        return await logs_in(api, "hostile", value)
    me = await api.data(ME, token=token_for(user))
    return stored(result["updateUser"][field], me["me"][field], value)


async def update_user_full_name(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await updated_user(sm, api, "fullName", value)


async def update_user_email(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await updated_user(sm, api, "email", value)


async def update_user_password(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await updated_user(sm, api, "password", value)


async def update_user_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    user = await make_user(sm)
    variables = {"id": value, "input": {"fullName": "x"}}
    result = await outcome_of(api, UPDATE_USER, variables, token=token_for(user))
    return result


async def delete_user_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    user = await make_user(sm)
    result = await outcome_of(api, DELETE_USER, {"id": value}, token=token_for(user))
    return result


async def create_conversation_title(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    user = await make_user(sm)
    result = await outcome_of(api, CREATE, {"input": {"title": value}}, token=token_for(user))
    if "createConversation" not in result:
        return result
    created = result["createConversation"]
    again = await api.data(TITLE, {"id": created["id"]}, token=token_for(user))
    return stored(created["title"], again["conversation"]["title"], value)


async def update_conversation_title(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    user = await make_user(sm)
    conversation = gid("Conversation", await make_conversation(sm, owner_id=user))
    variables = {"id": conversation, "input": {"title": value}}
    result = await outcome_of(api, UPDATE, variables, token=token_for(user))
    if "updateConversation" not in result:
        return result
    again = await api.data(TITLE, {"id": conversation}, token=token_for(user))
    return stored(result["updateConversation"]["title"], again["conversation"]["title"], value)


async def update_conversation_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    user = await make_user(sm)
    variables = {"id": value, "input": {"title": "x"}}
    result = await outcome_of(api, UPDATE, variables, token=token_for(user))
    return result


async def delete_conversation_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    user = await make_user(sm)
    result = await outcome_of(api, DELETE, {"id": value}, token=token_for(user))
    return result


async def transfer(api: Api, sm: Sessionmaker, field: str, value: str) -> Outcome:
    user = await make_user(sm)
    conversation = gid("Conversation", await make_conversation(sm, owner_id=user))
    variables = {"conversationId": conversation, "toUserId": gid("User", user), field: value}
    result = await outcome_of(api, TRANSFER, {"input": variables}, token=token_for(user))
    return result


async def transfer_conversation_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await transfer(api, sm, "conversationId", value)


async def transfer_to_user_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await transfer(api, sm, "toUserId", value)


async def sent(api: Api, sm: Sessionmaker, field: str, value: str) -> Outcome:
    user = await make_user(sm)
    conversation = gid("Conversation", await make_conversation(sm, owner_id=user))
    variables = {"conversationId": conversation, "content": "x", "clientId": "k", field: value}
    result = await outcome_of(api, SEND, {"input": variables}, token=token_for(user))
    if "sendMessage" not in result:
        return result
    message = result["sendMessage"]
    again = await api.data(MESSAGE, {"id": message["id"]}, token=token_for(user))
    return stored(message[field], again["node"][field], value)


async def send_message_content(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await sent(api, sm, "content", value)


async def send_message_client_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await sent(api, sm, "clientId", value)


async def send_message_conversation_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await sent(api, sm, "conversationId", value)


async def imported(api: Api, sm: Sessionmaker, value: str, **changes: Any) -> Any:
    user = await make_user(sm)
    conversation = gid("Conversation", await make_conversation(sm, owner_id=user))
    message = {"role": "USER", "content": value, **changes.get("message", {})}
    variables = {"conversationId": conversation, "messages": [message], **changes.get("input", {})}
    result = await outcome_of(api, IMPORT, {"input": variables}, token=token_for(user))
    if "importMessages" not in result:
        return result
    edges = result["importMessages"]["conversation"]["messages"]["edges"]
    again = await api.data(
        "query ($id: ID!) { conversation(id: $id) { messages { edges { node { content } } } } }",
        {"id": conversation},
        token=token_for(user),
    )
    read_back = again["conversation"]["messages"]["edges"][0]["node"]["content"]
    return stored(edges[0]["node"]["content"], read_back, value)


async def import_messages_content(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    return await imported(api, sm, value)


async def import_messages_created_at(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    result = await imported(api, sm, "x", message={"createdAt": value})
    return result


async def import_messages_conversation_id(api: Api, sm: Sessionmaker, value: str) -> Outcome:
    result = await imported(api, sm, "x", input={"conversationId": value})
    return result


def not_an_id(field: str) -> dict[str, Outcome]:
    return every(bad(field, "not a valid id"))


def log_in_rule(field: str, high: int) -> dict[str, Outcome]:
    rule = text_rule(field, high=high)
    wrong = {"code": "UNAUTHENTICATED"}
    return {name: wrong if outcome == STORED else outcome for name, outcome in rule.items()}


def email_rule() -> dict[str, Outcome]:
    # None of them is an address, so the ones that are well-formed text fail that rule.
    rule = text_rule("email", high=100, low=3)
    invalid = bad("email", "must be a valid email address")
    return {name: invalid if outcome == STORED else outcome for name, outcome in rule.items()}


CASES: dict[str, tuple[Driver, dict[str, Outcome]]] = {
    "signUp.username": (
        sign_up_username,
        every(bad("username", "must be 3-50 letters, digits, '_', '.' or '-'")),
    ),
    "signUp.email": (sign_up_email, email_rule()),
    "signUp.password": (sign_up_password, text_rule("password", low=8, high=128)),
    "signUp.fullName": (sign_up_full_name, text_rule("fullName", low=0, high=100)),
    "logIn.login": (log_in_login, log_in_rule("login", 100)),
    "logIn.password": (log_in_password, log_in_rule("password", 128)),
    "updateUser.id": (update_user_id, not_an_id("id")),
    "updateUser.fullName": (update_user_full_name, text_rule("fullName", low=0, high=100)),
    "updateUser.email": (update_user_email, email_rule()),
    "updateUser.password": (update_user_password, text_rule("password", low=8, high=128)),
    "deleteUser.id": (delete_user_id, not_an_id("id")),
    "createConversation.title": (create_conversation_title, text_rule("title", high=200)),
    "updateConversation.id": (update_conversation_id, not_an_id("id")),
    "updateConversation.title": (update_conversation_title, text_rule("title", high=200)),
    "deleteConversation.id": (delete_conversation_id, not_an_id("id")),
    "transferConversation.conversationId": (
        transfer_conversation_id,
        not_an_id("conversationId"),
    ),
    "transferConversation.toUserId": (transfer_to_user_id, not_an_id("toUserId")),
    "sendMessage.conversationId": (send_message_conversation_id, not_an_id("conversationId")),
    "sendMessage.content": (send_message_content, text_rule("content", high=32_000)),
    "sendMessage.clientId": (send_message_client_id, text_rule("clientId", high=64)),
    "importMessages.conversationId": (
        import_messages_conversation_id,
        not_an_id("conversationId"),
    ),
    "importMessages.messages.content": (
        import_messages_content,
        text_rule("messages.0.content", high=32_000),
    ),
    # An unreadable DateTime fails while the variables are coerced, before any resolver.
    "importMessages.messages.createdAt": (
        import_messages_created_at,
        every({"code": "BAD_USER_INPUT"}),
    ),
}


def text_path(case: str) -> str:
    """The input field of a case, as the contract names it inside its argument."""
    field = case.split(".", 1)[1]
    return field.replace("messages.", "messages.0.")


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_hostile_strings_are_refused_clearly_or_stored_exactly(
    api: Api, sessionmaker: Sessionmaker, case: str
) -> None:
    driver, expected = CASES[case]
    # Text no database keeps is refused before anything runs, in whatever input it stands.
    field = text_path(case)
    expected = {**expected, "nul": bad(field, HAS_NUL), "surrogate": bad(field, NOT_UNICODE)}
    outcomes: dict[str, Outcome] = {}
    for name, value in HOSTILE.items():
        outcomes[name] = await driver(api, sessionmaker, value)
        # Each value starts from an empty database, so that usernames can repeat.
        await _empty(sessionmaker)
    assert outcomes == expected


async def _empty(sm: Sessionmaker) -> None:
    async with sm() as session, session.begin():
        await session.execute(delete(User))
        await session.execute(delete(LoginFailure))
