from __future__ import annotations

import base64
import uuid

import pytest

from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api

NODE = """
query ($id: ID!) {
  node(id: $id) {
    __typename id
    ... on User { username }
    ... on Conversation { title owner { username } }
    ... on Message { content conversation { title } }
  }
}
"""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_node_resolves_every_type_for_its_owner(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker, username="owner")
    conversation = await make_conversation(sessionmaker, owner_id=user, title="Plans")
    [message] = await make_messages(sessionmaker, conversation_id=conversation, count=1)
    token = token_for(user)
    assert await api.data(NODE, {"id": gid("User", user)}, token=token) == {
        "node": {"__typename": "User", "id": gid("User", user), "username": "owner"}
    }
    assert await api.data(NODE, {"id": gid("Conversation", conversation)}, token=token) == {
        "node": {
            "__typename": "Conversation",
            "id": gid("Conversation", conversation),
            "title": "Plans",
            "owner": {"username": "owner"},
        }
    }
    assert await api.data(NODE, {"id": gid("Message", message)}, token=token) == {
        "node": {
            "__typename": "Message",
            "id": gid("Message", message),
            "content": "message 0",
            "conversation": {"title": "Plans"},
        }
    }


async def test_others_conversations_and_messages_are_null_from_node_and_nodes(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    stranger = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    [message] = await make_messages(sessionmaker, conversation_id=conversation, count=1)
    token = token_for(stranger)
    for global_id in (gid("Conversation", conversation), gid("Message", message)):
        assert await api.data(NODE, {"id": global_id}, token=token) == {"node": None}
    data = await api.data(
        "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {
            "ids": [
                gid("Conversation", conversation),
                gid("User", owner),
                gid("Message", message),
                gid("Conversation", str(uuid.uuid4())),
            ]
        },
        token=token,
    )
    assert data == {"nodes": [None, {"id": gid("User", owner)}, None, None]}


async def test_an_admin_sees_every_conversation(api: Api, sessionmaker: Sessionmaker) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner, title="Secret")
    data = await api.data(
        "query ($id: ID!) { conversation(id: $id) { title } }",
        {"id": gid("Conversation", conversation)},
        token=token_for(admin),
    )
    assert data == {"conversation": {"title": "Secret"}}


async def test_another_users_conversation_and_a_random_one_look_the_same(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    stranger = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    query = "query ($id: ID!) { conversation(id: $id) { title } }"
    foreign = await api.run(
        query, {"id": gid("Conversation", conversation)}, token=token_for(stranger)
    )
    missing = await api.run(
        query, {"id": gid("Conversation", str(uuid.uuid4()))}, token=token_for(stranger)
    )
    assert foreign == missing
    assert foreign["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert foreign["errors"][0]["message"] == "Not found."


@pytest.mark.parametrize(
    "bad_id",
    [
        "not base64!",
        b64("Robot:1"),
        b64("User:abc"),
        b64("Conversation:x"),
        b64("User:1"),
        b64("no colon"),
    ],
    ids=["not-base64", "unknown-type", "user-abc", "conversation-x", "wrong-type", "no-colon"],
)
async def test_malformed_conversation_ids_are_bad_user_input(
    api: Api, sessionmaker: Sessionmaker, bad_id: str
) -> None:
    user = await make_user(sessionmaker)
    error = await api.error(
        "query ($id: ID!) { conversation(id: $id) { title } }",
        {"id": bad_id},
        token=token_for(user),
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert list(error["extensions"]["fields"]) == ["id"]


async def test_malformed_node_ids_are_bad_user_input(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    error = await api.error(NODE, {"id": b64("User:abc")}, token=token_for(user))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    error = await api.error(
        "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        {"ids": [gid("User", user), "%%%"]},
        token=token_for(user),
    )
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "fields": {"ids.1": "not a valid id"}}


async def test_email_is_hidden_from_other_users_but_not_from_admins(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    user = await make_user(sessionmaker, username="plain", email="plain@example.com")
    other = await make_user(sessionmaker)
    query = "query ($u: String) { user(username: $u) { username email } }"
    assert await api.data(query, {"u": "PLAIN"}, token=token_for(other)) == {
        "user": {"username": "plain", "email": None}
    }
    assert await api.data(query, {"u": "plain"}, token=token_for(admin)) == {
        "user": {"username": "plain", "email": "plain@example.com"}
    }
    assert await api.data(query, {"u": "plain"}, token=token_for(user)) == {
        "user": {"username": "plain", "email": "plain@example.com"}
    }
    assert await api.data(query, {"u": "nobody"}, token=token_for(user)) == {"user": None}


async def test_user_needs_exactly_one_of_id_and_username(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    for query in ("{ user { id } }", '{ user(id: "x", username: "y") { id } }'):
        error = await api.error(query, token=token_for(user))
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert set(error["extensions"]["fields"]) == {"id", "username"}


async def test_others_conversations_are_forbidden_through_user(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    stranger = await make_user(sessionmaker)
    await make_conversation(sessionmaker, owner_id=owner)
    query = "query ($id: ID!) { user(id: $id) { conversationCount } }"
    error = await api.error(query, {"id": gid("User", owner)}, token=token_for(stranger))
    assert error["extensions"] == {"code": "FORBIDDEN"}
    error = await api.error(
        "query ($id: ID!) { user(id: $id) { conversations { totalCount } } }",
        {"id": gid("User", owner)},
        token=token_for(stranger),
    )
    assert error["extensions"] == {"code": "FORBIDDEN"}
    assert await api.data(query, {"id": gid("User", owner)}, token=token_for(owner)) == {
        "user": {"conversationCount": 1}
    }


async def test_read_fields_need_a_login(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    for query in (
        f'{{ node(id: "{gid("User", user)}") {{ id }} }}',
        f'{{ nodes(ids: ["{gid("User", user)}"]) {{ id }} }}',
        f'{{ user(id: "{gid("User", user)}") {{ id }} }}',
        "{ users { totalCount } }",
        f'{{ conversation(id: "{gid("Conversation", conversation)}") {{ id }} }}',
    ):
        error = await api.error(query)
        assert error["extensions"] == {"code": "UNAUTHENTICATED"}, query


async def test_conversation_fields_resolve_owner_counts_and_last_message(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker, username="talker")
    conversation = await make_conversation(sessionmaker, owner_id=user, title="Chat")
    await make_messages(sessionmaker, conversation_id=conversation, count=3)
    empty = await make_conversation(sessionmaker, owner_id=user, title="Empty")
    query = """
    query ($a: ID!, $b: ID!) {
      a: conversation(id: $a) { title owner { username } messageCount lastMessage { content role } }
      b: conversation(id: $b) { title messageCount lastMessage { content } }
    }
    """
    data = await api.data(
        query,
        {"a": gid("Conversation", conversation), "b": gid("Conversation", empty)},
        token=token_for(user),
    )
    assert data == {
        "a": {
            "title": "Chat",
            "owner": {"username": "talker"},
            "messageCount": 3,
            "lastMessage": {"content": "message 2", "role": "USER"},
        },
        "b": {"title": "Empty", "messageCount": 0, "lastMessage": None},
    }


async def test_datetimes_are_utc_with_microseconds(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    await make_messages(sessionmaker, conversation_id=conversation, count=1)
    data = await api.data(
        "query ($id: ID!) { conversation(id: $id) { lastMessage { createdAt } } }",
        {"id": gid("Conversation", conversation)},
        token=token_for(user),
    )
    assert data == {
        "conversation": {"lastMessage": {"createdAt": "2026-01-01T00:00:00.000000+00:00"}}
    }
