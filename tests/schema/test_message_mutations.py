from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette

from db.formats import stamp
from db.models import Message, utcnow
from schema.validation import HAS_NUL
from tests.factories import (
    BASE_TIME,
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, StatementCounter

SEND = """
mutation ($input: SendMessageInput!) {
  sendMessage(input: $input) {
    id content clientId createdAt conversation { updatedAt messageCount }
  }
}
"""
IMPORT = """
mutation ($input: ImportMessagesInput!) {
  importMessages(input: $input) {
    importedCount
    conversation {
      updatedAt messageCount
      messages(first: 100) { edges { node { role content createdAt } } }
    }
  }
}
"""
CONVERSATION = """
query ($id: ID!) { conversation(id: $id) { updatedAt messageCount lastMessage { content } } }
"""


class RecordingBroker:
    """Keeps what was published, once the publishing transaction has committed."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, list[int]]] = []

    async def publish(
        self, session: AsyncSession, *, conversation_id: str, message_ids: Sequence[int]
    ) -> None:
        ids = list(message_ids)

        def deliver(_: object) -> None:
            self.delivered.append((conversation_id, ids))

        event.listen(session.sync_session, "after_commit", deliver, once=True)


@pytest.fixture
def broker(app: Starlette) -> RecordingBroker:
    recorder = RecordingBroker()
    app.state.services = dataclasses.replace(app.state.services, broker=recorder)
    return recorder


def send_input(conversation: str, content: str = "hi", **more: Any) -> dict[str, Any]:
    return {
        "input": {"conversationId": gid("Conversation", conversation), "content": content, **more}
    }


def import_input(conversation: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"input": {"conversationId": gid("Conversation", conversation), "messages": messages}}


async def stored_ids(sm: Sessionmaker) -> list[int]:
    async with sm() as session:
        return list((await session.execute(select(Message.id).order_by(Message.id))).scalars())


async def test_sending_bumps_updated_at_to_the_message_and_publishes_it(
    api: Api, sessionmaker: Sessionmaker, broker: RecordingBroker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    data = await api.data(SEND, send_input(conversation), token=token_for(user))
    message = data["sendMessage"]
    assert message["conversation"] == {"updatedAt": message["createdAt"], "messageCount": 1}
    assert broker.delivered == [(conversation, await stored_ids(sessionmaker))]


async def test_a_resent_client_id_is_not_published_twice(
    api: Api, sessionmaker: Sessionmaker, broker: RecordingBroker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    variables = send_input(conversation, clientId="once")
    first = await api.data(SEND, variables, token=token_for(user))
    second = await api.data(
        SEND, send_input(conversation, "other text", clientId="once"), token=token_for(user)
    )
    assert first == second
    assert len(broker.delivered) == 1


@pytest.mark.parametrize(
    ("more", "fields"),
    [
        ({"content": ""}, {"content": "must be 1-32000 characters"}),
        ({"content": "x" * 32_001}, {"content": "must be 1-32000 characters"}),
        ({"content": "a\x00b"}, {"content": HAS_NUL}),
        ({"clientId": ""}, {"clientId": "must be 1-64 characters"}),
        ({"clientId": "k" * 65}, {"clientId": "must be 1-64 characters"}),
        (
            {"content": "", "clientId": "k" * 65},
            {
                "content": "must be 1-32000 characters",
                "clientId": "must be 1-64 characters",
            },
        ),
    ],
    ids=["empty", "too-long", "nul", "empty-client-id", "long-client-id", "both"],
)
async def test_a_bad_message_is_refused_and_stores_nothing(
    api: Api,
    sessionmaker: Sessionmaker,
    broker: RecordingBroker,
    more: dict[str, Any],
    fields: dict[str, str],
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    variables = send_input(conversation)
    variables["input"].update(more)
    error = await api.error(SEND, variables, token=token_for(user))
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "fields": fields}
    assert await stored_ids(sessionmaker) == []
    assert broker.delivered == []


async def test_content_of_exactly_32000_characters_is_stored(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    data = await api.data(SEND, send_input(conversation, "z" * 32_000), token=token_for(user))
    assert data["sendMessage"]["content"] == "z" * 32_000


async def test_sending_needs_a_login_and_a_conversation_id(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    anonymous = await api.error(SEND, send_input(conversation))
    wrong_id = await api.error(
        SEND,
        {"input": {"conversationId": gid("User", user), "content": "x"}},
        token=token_for(user),
    )
    missing = await api.error(
        SEND, send_input("00000000-0000-4000-8000-000000000000"), token=token_for(user)
    )
    assert [anonymous["extensions"], wrong_id["extensions"], missing["extensions"]] == [
        {"code": "UNAUTHENTICATED"},
        {"code": "BAD_USER_INPUT", "fields": {"conversationId": "not the id of a Conversation"}},
        {"code": "NOT_FOUND"},
    ]


async def test_an_admin_may_send_to_anyones_conversation(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    data = await api.data(SEND, send_input(conversation, "from admin"), token=token_for(admin))
    assert data["sendMessage"]["content"] == "from admin"


async def test_an_import_keeps_given_times_and_bumps_updated_at_to_the_moment_of_the_import(
    api: Api, sessionmaker: Sessionmaker, broker: RecordingBroker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(
        sessionmaker, owner_id=user, updated_at=BASE_TIME.replace(year=2020)
    )
    messages = [
        {"role": "SYSTEM", "content": "be nice", "createdAt": "2025-05-01T10:00:00Z"},
        {"role": "USER", "content": "hello", "createdAt": "2025-05-01T12:00:00+02:00"},
        {"role": "ASSISTANT", "content": "hi!", "createdAt": "2025-05-01T10:00:01Z"},
    ]
    before = stamp(utcnow())
    data = await api.data(IMPORT, import_input(conversation, messages), token=token_for(user))
    updated_at = data["importMessages"]["conversation"]["updatedAt"]
    assert before <= updated_at <= stamp(utcnow())
    assert data == {
        "importMessages": {
            "importedCount": 3,
            "conversation": {
                "updatedAt": updated_at,
                "messageCount": 3,
                "messages": {
                    "edges": [
                        {
                            "node": {
                                "role": "SYSTEM",
                                "content": "be nice",
                                "createdAt": "2025-05-01T10:00:00.000000+00:00",
                            }
                        },
                        {
                            "node": {
                                "role": "USER",
                                "content": "hello",
                                "createdAt": "2025-05-01T10:00:00.000000+00:00",
                            }
                        },
                        {
                            "node": {
                                "role": "ASSISTANT",
                                "content": "hi!",
                                "createdAt": "2025-05-01T10:00:01.000000+00:00",
                            }
                        },
                    ]
                },
            },
        }
    }
    assert broker.delivered == [(conversation, await stored_ids(sessionmaker))]


async def test_imported_messages_without_times_get_now_in_their_given_order(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    messages = [{"role": "USER", "content": f"m{i}"} for i in range(5)]
    data = await api.data(IMPORT, import_input(conversation, messages), token=token_for(user))
    imported = data["importMessages"]["conversation"]
    edges = imported["messages"]["edges"]
    assert [edge["node"]["content"] for edge in edges] == ["m0", "m1", "m2", "m3", "m4"]
    assert {edge["node"]["createdAt"] for edge in edges} == {imported["updatedAt"]}
    assert imported["updatedAt"] > BASE_TIME.isoformat()


async def test_importing_old_history_bumps_updated_at_to_now_and_keeps_the_last_message(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    """A client that syncs by `updatedAt` must see the import (RULES, "updatedAt")."""
    user = await make_user(sessionmaker)
    older = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    newer = await make_conversation(
        sessionmaker, owner_id=user, updated_at=BASE_TIME + timedelta(days=1)
    )
    await make_messages(sessionmaker, conversation_id=older, count=1, content="latest")
    messages = [{"role": "USER", "content": "old", "createdAt": "2001-01-01T00:00:00Z"}]
    before = stamp(utcnow())
    await api.data(IMPORT, import_input(older, messages), token=token_for(user))
    data = await api.data(
        "{ me { conversations { edges { node { id updatedAt messageCount lastMessage {"
        " content createdAt } } } } } }",
        token=token_for(user),
    )
    edges = data["me"]["conversations"]["edges"]
    updated_at = edges[0]["node"]["updatedAt"]
    assert before <= updated_at <= stamp(utcnow())
    assert edges == [
        {
            "node": {
                "id": gid("Conversation", older),
                "updatedAt": updated_at,
                "messageCount": 2,
                "lastMessage": {"content": "latest", "createdAt": stamp(BASE_TIME)},
            }
        },
        {
            "node": {
                "id": gid("Conversation", newer),
                "updatedAt": stamp(BASE_TIME + timedelta(days=1)),
                "messageCount": 0,
                "lastMessage": None,
            }
        },
    ]


async def test_an_import_dated_after_now_is_bad_input_and_stores_nothing(
    api: Api, sessionmaker: Sessionmaker, broker: RecordingBroker
) -> None:
    """A message from 2999 would be the last message, and `updatedAt`, for good."""
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    soon = stamp(utcnow() + timedelta(minutes=1))
    messages = [
        {"role": "USER", "content": "now"},
        {"role": "USER", "content": "past", "createdAt": "2001-01-01T00:00:00Z"},
        {"role": "USER", "content": "far", "createdAt": "2999-01-01T00:00:00Z"},
        {"role": "USER", "content": "soon", "createdAt": soon},
    ]
    error = await api.error(IMPORT, import_input(conversation, messages), token=token_for(user))
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {
            "messages.2.createdAt": "must not be in the future",
            "messages.3.createdAt": "must not be in the future",
        },
    }
    assert await stored_ids(sessionmaker) == []
    assert broker.delivered == []
    assert await api.data(
        CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(user)
    ) == {"conversation": {"updatedAt": stamp(BASE_TIME), "messageCount": 0, "lastMessage": None}}


async def test_an_import_with_one_bad_item_stores_nothing_and_names_it(
    api: Api, sessionmaker: Sessionmaker, broker: RecordingBroker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    messages = [{"role": "USER", "content": f"fine {i}"} for i in range(6)]
    messages[3]["content"] = ""
    messages[5]["content"] = "x" * 32_001
    error = await api.error(IMPORT, import_input(conversation, messages), token=token_for(user))
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {
            "messages.3.content": "must be 1-32000 characters",
            "messages.5.content": "must be 1-32000 characters",
        },
    }
    assert await stored_ids(sessionmaker) == []
    assert broker.delivered == []


@pytest.mark.parametrize("count", [0, 1001], ids=["none", "one-too-many"])
async def test_an_import_of_the_wrong_size_is_bad_input_and_stores_nothing(
    api: Api, sessionmaker: Sessionmaker, count: int
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    messages = [{"role": "USER", "content": f"m{i}"} for i in range(count)]
    error = await api.error(IMPORT, import_input(conversation, messages), token=token_for(user))
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"messages": "must hold 1-1000 messages"},
    }
    assert await stored_ids(sessionmaker) == []


async def test_an_import_of_a_thousand_messages_is_one_insert(
    api: Api, sessionmaker: Sessionmaker, broker: RecordingBroker, statements: StatementCounter
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    messages = [{"role": "USER", "content": f"m{i}"} for i in range(1000)]
    query = """
    mutation ($input: ImportMessagesInput!) { importMessages(input: $input) { importedCount } }
    """
    statements.reset()
    data = await api.data(query, import_input(conversation, messages), token=token_for(user))
    assert data == {"importMessages": {"importedCount": 1000}}
    inserts = [s for s in statements.seen if s.startswith("INSERT INTO messages")]
    assert len(inserts) == 1
    ids = await stored_ids(sessionmaker)
    assert len(ids) == 1000
    assert broker.delivered == [(conversation, ids)]


async def test_importing_into_a_foreign_conversation_is_not_found(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    other = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    messages = [{"role": "USER", "content": "x"}]
    foreign = await api.error(IMPORT, import_input(conversation, messages), token=token_for(other))
    missing = await api.error(
        IMPORT,
        import_input("00000000-0000-4000-8000-000000000000", messages),
        token=token_for(other),
    )
    assert foreign["extensions"] == missing["extensions"] == {"code": "NOT_FOUND"}
    assert await stored_ids(sessionmaker) == []


async def test_importing_needs_a_login_and_a_valid_id(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    messages = [{"role": "USER", "content": "x"}]
    anonymous = await api.error(IMPORT, import_input(conversation, messages))
    malformed = await api.error(
        IMPORT, {"input": {"conversationId": "x", "messages": messages}}, token=token_for(user)
    )
    assert [anonymous["extensions"], malformed["extensions"]] == [
        {"code": "UNAUTHENTICATED"},
        {"code": "BAD_USER_INPUT", "fields": {"conversationId": "not a valid id"}},
    ]


async def test_an_unreadable_created_at_is_bad_input(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    messages = [{"role": "USER", "content": "x", "createdAt": "yesterday"}]
    error = await api.error(IMPORT, import_input(conversation, messages), token=token_for(user))
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert await stored_ids(sessionmaker) == []


async def test_imported_and_sent_messages_are_read_back_in_order(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    await make_messages(sessionmaker, conversation_id=conversation, count=2)
    await api.data(
        IMPORT,
        import_input(conversation, [{"role": "USER", "content": "imported"}]),
        token=token_for(user),
    )
    sent = await api.data(SEND, send_input(conversation, "sent last"), token=token_for(user))
    data = await api.data(
        CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(user)
    )
    assert data == {
        "conversation": {
            "updatedAt": sent["sendMessage"]["createdAt"],
            "messageCount": 4,
            "lastMessage": {"content": "sent last"},
        }
    }
    async with sessionmaker() as session:
        count = (await session.execute(select(func.count()).select_from(Message))).scalar_one()
    assert count == 4
