"""A mutation that committed returns its result: every field of it reads, whoever the viewer
has become (issue 11). The root fields of Mutation are non-null, so an error in any of them
would take the whole `data`, committed results included, with it."""

from __future__ import annotations

from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api

ME = "{ me { username } }"


async def test_the_former_owner_reads_every_field_of_a_transferred_conversation(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    old = await make_user(sessionmaker, username="giver")
    new = await make_user(sessionmaker, username="taker")
    conversation = await make_conversation(sessionmaker, owner_id=old, title="Gift")
    await make_messages(sessionmaker, conversation_id=conversation, count=2)
    data = await api.data(
        """
        mutation ($input: TransferConversationInput!) {
          transferConversation(input: $input) {
            title owner { username email } messageCount
            messages { totalCount edges { node { content conversation { title } } } }
            lastMessage { content conversation { owner { username } } }
          }
        }
        """,
        {
            "input": {
                "conversationId": gid("Conversation", conversation),
                "toUserId": gid("User", new),
            }
        },
        token=token_for(old),
    )
    assert data == {
        "transferConversation": {
            "title": "Gift",
            "owner": {"username": "taker", "email": None},
            "messageCount": 2,
            "messages": {
                "totalCount": 2,
                "edges": [
                    {"node": {"content": "message 0", "conversation": {"title": "Gift"}}},
                    {"node": {"content": "message 1", "conversation": {"title": "Gift"}}},
                ],
            },
            "lastMessage": {
                "content": "message 1",
                "conversation": {"owner": {"username": "taker"}},
            },
        }
    }


async def test_after_a_sign_up_the_rest_of_the_operation_acts_as_the_new_account(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker)
    data = await api.data(
        """
        mutation {
          signUp(input: {username: "fresh", email: "fresh@x.io", password: "password1"}) {
            user { isAdmin }
          }
          createConversation(input: {title: "Hello"}) { title owner { username email } }
        }
        """
    )
    assert data == {
        "signUp": {"user": {"isAdmin": False}},
        "createConversation": {
            "title": "Hello",
            "owner": {"username": "fresh", "email": "fresh@x.io"},
        },
    }


async def test_after_deleting_oneself_the_rest_of_the_operation_has_no_viewer(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    other = await make_user(sessionmaker)
    user = await make_user(sessionmaker)
    result = await api.run(
        """
        mutation ($id: ID!) {
          deleteUser(id: $id) { deletedId }
          createConversation(input: {title: "Orphan"}) { id }
        }
        """,
        {"id": gid("User", user)},
        token=token_for(user),
    )
    # The second field is non-null: its error takes the whole `data` with it.
    assert result == {
        "data": None,
        "errors": [
            {
                "message": "You must be logged in.",
                "locations": [{"line": 4, "column": 11}],
                "path": ["createConversation"],
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
    }
    found = await api.data(
        "query ($id: ID!) { user(id: $id) { id } }",
        {"id": gid("User", user)},
        token=token_for(other),
    )
    assert found == {"user": None}


async def test_an_admin_who_deactivates_themselves_reads_the_result(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, username="leaving", is_admin=True)
    await make_conversation(sessionmaker, owner_id=admin, title="Last words")
    data = await api.data(
        """
        mutation ($id: ID!) {
          updateUser(id: $id, input: {isActive: false}) {
            isActive email conversationCount conversations { edges { node { title } } }
          }
        }
        """,
        {"id": gid("User", admin)},
        token=token_for(admin),
    )
    assert data == {
        "updateUser": {
            "isActive": False,
            "email": "leaving@example.com",
            "conversationCount": 1,
            "conversations": {"edges": [{"node": {"title": "Last words"}}]},
        }
    }
    error = await api.error(ME, token=token_for(admin))
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
