from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Message
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

CREATE = """
mutation ($input: CreateConversationInput!) {
  createConversation(input: $input) { title owner { username } messageCount }
}
"""
UPDATE = """
mutation ($id: ID!, $input: UpdateConversationInput!) {
  updateConversation(id: $id, input: $input) { id title updatedAt }
}
"""
DELETE = "mutation ($id: ID!) { deleteConversation(id: $id) { deletedId } }"
TRANSFER = """
mutation ($input: TransferConversationInput!) {
  transferConversation(input: $input) {
    id owner { username } messages { totalCount } messageCount
  }
}
"""
CONVERSATION = "query ($id: ID!) { conversation(id: $id) { title owner { username } } }"
NOT_FOUND = {"message": "Not found.", "extensions": {"code": "NOT_FOUND"}}
TITLE_LENGTH = {"title": "must be 1-200 characters"}


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result[key] for key in ("message", "extensions")}


def transfer_input(conversation: str, user: int) -> dict[str, Any]:
    return {
        "input": {
            "conversationId": gid("Conversation", conversation),
            "toUserId": gid("User", user),
        }
    }


async def message_total(sm: Sessionmaker) -> int:
    async with sm() as session:
        return int((await session.execute(select(func.count()).select_from(Message))).scalar_one())


async def test_a_created_conversation_has_its_title_trimmed(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker, username="ada")
    data = await api.data(CREATE, {"input": {"title": "  Plans  "}}, token=token_for(user))
    assert data == {
        "createConversation": {"title": "Plans", "owner": {"username": "ada"}, "messageCount": 0}
    }


async def test_a_blank_or_overlong_title_is_bad_input(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    blank = await api.error(CREATE, {"input": {"title": "   "}}, token=token_for(user))
    long = await api.error(CREATE, {"input": {"title": "x" * 201}}, token=token_for(user))
    assert (
        blank["extensions"]
        == long["extensions"]
        == {
            "code": "BAD_USER_INPUT",
            "fields": TITLE_LENGTH,
        }
    )


async def test_a_title_of_exactly_200_characters_is_kept(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    data = await api.data(CREATE, {"input": {"title": "é" * 200}}, token=token_for(user))
    assert data["createConversation"]["title"] == "é" * 200


async def test_creating_a_conversation_needs_a_login(api: Api) -> None:
    error = await api.error(CREATE, {"input": {"title": "x"}})
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_renaming_changes_the_title_and_bumps_updated_at(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user, updated_at=BASE_TIME)
    data = await api.data(
        UPDATE,
        {"id": gid("Conversation", conversation), "input": {"title": " New name "}},
        token=token_for(user),
    )
    renamed = data["updateConversation"]
    assert renamed == {
        "id": gid("Conversation", conversation),
        "title": "New name",
        "updatedAt": renamed["updatedAt"],
    }
    assert renamed["updatedAt"] > BASE_TIME.isoformat()
    again = await api.data(
        CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(user)
    )
    assert again["conversation"]["title"] == "New name"


async def test_renaming_to_the_same_title_leaves_updated_at_alone(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(
        sessionmaker, owner_id=user, title="Same", updated_at=BASE_TIME
    )
    data = await api.data(
        UPDATE,
        {"id": gid("Conversation", conversation), "input": {"title": "Same"}},
        token=token_for(user),
    )
    assert data["updateConversation"]["updatedAt"] == "2026-01-01T00:00:00.000000+00:00"


async def test_an_admin_may_rename_anyones_conversation(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    data = await api.data(
        UPDATE,
        {"id": gid("Conversation", conversation), "input": {"title": "By admin"}},
        token=token_for(admin),
    )
    assert data["updateConversation"]["title"] == "By admin"


async def test_renaming_another_users_conversation_looks_like_a_missing_one(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    other = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner, title="Mine")
    foreign = await api.error(
        UPDATE,
        {"id": gid("Conversation", conversation), "input": {"title": "Theirs"}},
        token=token_for(other),
    )
    missing = await api.error(
        UPDATE,
        {
            "id": gid("Conversation", "00000000-0000-4000-8000-000000000000"),
            "input": {"title": "x"},
        },
        token=token_for(other),
    )
    assert error_of(foreign) == error_of(missing) == NOT_FOUND
    kept = await api.data(
        CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(owner)
    )
    assert kept["conversation"]["title"] == "Mine"


async def test_renaming_with_a_bad_title_or_id_is_bad_input(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    title = await api.error(
        UPDATE,
        {"id": gid("Conversation", conversation), "input": {"title": ""}},
        token=token_for(user),
    )
    malformed = await api.error(
        UPDATE, {"id": "nope", "input": {"title": "x"}}, token=token_for(user)
    )
    wrong_type = await api.error(
        UPDATE, {"id": gid("User", user), "input": {"title": "x"}}, token=token_for(user)
    )
    assert [title["extensions"], malformed["extensions"], wrong_type["extensions"]] == [
        {"code": "BAD_USER_INPUT", "fields": TITLE_LENGTH},
        {"code": "BAD_USER_INPUT", "fields": {"id": "not a valid id"}},
        {"code": "BAD_USER_INPUT", "fields": {"id": "not the id of a Conversation"}},
    ]


async def test_renaming_needs_a_login(api: Api, sessionmaker: Sessionmaker) -> None:
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    error = await api.error(
        UPDATE, {"id": gid("Conversation", conversation), "input": {"title": "x"}}
    )
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_deleting_a_conversation_deletes_its_messages(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    doomed = await make_conversation(sessionmaker, owner_id=user)
    kept = await make_conversation(sessionmaker, owner_id=user)
    await make_messages(sessionmaker, conversation_id=doomed, count=3)
    await make_messages(sessionmaker, conversation_id=kept, count=2)
    data = await api.data(DELETE, {"id": gid("Conversation", doomed)}, token=token_for(user))
    assert data == {"deleteConversation": {"deletedId": gid("Conversation", doomed)}}
    gone = await api.error(CONVERSATION, {"id": gid("Conversation", doomed)}, token=token_for(user))
    assert error_of(gone) == NOT_FOUND
    assert await message_total(sessionmaker) == 2


async def test_deleting_another_users_conversation_is_not_found_and_keeps_it(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    other = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    await make_messages(sessionmaker, conversation_id=conversation, count=2)
    foreign = await api.error(
        DELETE, {"id": gid("Conversation", conversation)}, token=token_for(other)
    )
    missing = await api.error(
        DELETE,
        {"id": gid("Conversation", "00000000-0000-4000-8000-000000000000")},
        token=token_for(other),
    )
    assert error_of(foreign) == error_of(missing) == NOT_FOUND
    assert await message_total(sessionmaker) == 2


async def test_an_admin_may_delete_anyones_conversation(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    data = await api.data(DELETE, {"id": gid("Conversation", conversation)}, token=token_for(admin))
    assert data == {"deleteConversation": {"deletedId": gid("Conversation", conversation)}}


async def test_deleting_needs_a_login_and_a_valid_id(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    anonymous = await api.error(
        DELETE, {"id": gid("Conversation", "00000000-0000-4000-8000-000000000000")}
    )
    malformed = await api.error(DELETE, {"id": "Q29udmVyc2F0aW9uOng="}, token=token_for(user))
    assert [anonymous["extensions"], malformed["extensions"]] == [
        {"code": "UNAUTHENTICATED"},
        {"code": "BAD_USER_INPUT", "fields": {"id": "not a valid id"}},
    ]


async def test_a_transfer_moves_the_conversation_and_its_messages(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    old = await make_user(sessionmaker, username="old")
    new = await make_user(sessionmaker, username="new")
    conversation = await make_conversation(sessionmaker, owner_id=old)
    await make_messages(sessionmaker, conversation_id=conversation, count=3)
    data = await api.data(TRANSFER, transfer_input(conversation, new), token=token_for(old))
    assert data == {
        "transferConversation": {
            "id": gid("Conversation", conversation),
            "owner": {"username": "new"},
            "messages": {"totalCount": 3},
            "messageCount": 3,
        }
    }
    lost = await api.error(
        CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(old)
    )
    assert error_of(lost) == NOT_FOUND
    found = await api.data(
        CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(new)
    )
    assert found["conversation"]["owner"] == {"username": "new"}


async def test_the_old_owner_cannot_write_to_a_transferred_conversation(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    old = await make_user(sessionmaker)
    new = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=old)
    await api.data(TRANSFER, transfer_input(conversation, new), token=token_for(old))
    again = await api.error(TRANSFER, transfer_input(conversation, old), token=token_for(old))
    rename = await api.error(
        UPDATE,
        {"id": gid("Conversation", conversation), "input": {"title": "x"}},
        token=token_for(old),
    )
    assert error_of(again) == error_of(rename) == NOT_FOUND


async def test_an_admin_may_transfer_anyones_conversation(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    owner = await make_user(sessionmaker)
    target = await make_user(sessionmaker, username="target")
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    data = await api.data(TRANSFER, transfer_input(conversation, target), token=token_for(admin))
    assert data["transferConversation"]["owner"] == {"username": "target"}


async def test_a_transfer_to_a_missing_user_is_not_found(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    error = await api.error(TRANSFER, transfer_input(conversation, 999_999), token=token_for(owner))
    assert error_of(error) == NOT_FOUND


async def test_a_transfer_to_a_deactivated_user_is_bad_input_and_changes_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker, username="keeper")
    inactive = await make_user(sessionmaker, is_active=False)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    error = await api.error(
        TRANSFER, transfer_input(conversation, inactive), token=token_for(owner)
    )
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"toUserId": "this user is deactivated"},
    }
    kept = await api.data(
        CONVERSATION, {"id": gid("Conversation", conversation)}, token=token_for(owner)
    )
    assert kept["conversation"]["owner"] == {"username": "keeper"}


async def test_transferring_another_users_conversation_is_not_found(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    thief = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    error = await api.error(TRANSFER, transfer_input(conversation, thief), token=token_for(thief))
    assert error_of(error) == NOT_FOUND


async def test_a_transfer_with_malformed_ids_names_the_bad_field(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    bad_conversation = await api.error(
        TRANSFER,
        {"input": {"conversationId": gid("User", owner), "toUserId": gid("User", owner)}},
        token=token_for(owner),
    )
    bad_user = await api.error(
        TRANSFER,
        {"input": {"conversationId": gid("Conversation", conversation), "toUserId": "User:1"}},
        token=token_for(owner),
    )
    assert [bad_conversation["extensions"], bad_user["extensions"]] == [
        {"code": "BAD_USER_INPUT", "fields": {"conversationId": "not the id of a Conversation"}},
        {"code": "BAD_USER_INPUT", "fields": {"toUserId": "not a valid id"}},
    ]


async def test_transferring_needs_a_login(api: Api, sessionmaker: Sessionmaker) -> None:
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    error = await api.error(TRANSFER, transfer_input(conversation, owner))
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_a_nested_transfer_payload_is_loaded_in_batches(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter, engine: AsyncEngine
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    old = await make_user(sessionmaker)
    new = await make_user(sessionmaker, username="new")
    moved = await make_conversation(sessionmaker, owner_id=old)
    for _ in range(3):
        conversation = await make_conversation(sessionmaker, owner_id=new)
        await make_messages(sessionmaker, conversation_id=conversation, count=2)
    await make_messages(sessionmaker, conversation_id=moved, count=4)
    query = """
    mutation ($input: TransferConversationInput!) {
      transferConversation(input: $input) {
        owner {
          username
          conversations(first: 10) {
            totalCount
            edges { node { messageCount lastMessage { content } owner { username } } }
          }
        }
        messages(last: 2) { totalCount edges { node { content conversation { id } } } }
      }
    }
    """
    statements.reset()
    data = await api.data(query, transfer_input(moved, new), token=token_for(admin))
    payload = data["transferConversation"]
    assert payload["owner"]["conversations"]["totalCount"] == 4
    assert sorted(
        edge["node"]["messageCount"] for edge in payload["owner"]["conversations"]["edges"]
    ) == [2, 2, 2, 4]
    assert payload["messages"] == {
        "totalCount": 4,
        "edges": [
            {"node": {"content": "message 2", "conversation": {"id": gid("Conversation", moved)}}},
            {"node": {"content": "message 3", "conversation": {"id": gid("Conversation", moved)}}},
        ],
    }
    # The viewer's row (1), the transfer's lock, target, update and one feed write per owner
    # (5), then one statement per loader batch, however many conversations the owner has:
    # conversations page and count, message pages (last 1 and last 2) and message counts (5).
    # SQLite adds BEGIN; on PostgreSQL the NOTIFY that tells the conversation's subscribers
    # rides in the feed write (`db.notifications`), no statement of its own.
    writes = [s for s in statements.seen if not s.startswith("BEGIN")]
    notify = [s for s in writes if "pg_notify(" in s and "INSERT INTO changes" not in s]
    assert (len(writes), len(notify)) == (11, 0), writes
