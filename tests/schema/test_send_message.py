from __future__ import annotations

from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api

SEND = """
mutation ($input: SendMessageInput!) {
  sendMessage(input: $input) { id role content clientId conversation { id messageCount } }
}
"""


async def test_a_sent_message_is_stored_and_counted(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    data = await api.data(
        SEND,
        {"input": {"conversationId": gid("Conversation", conversation), "content": "hi"}},
        token=token_for(user),
    )
    message = data["sendMessage"]
    assert message == {
        "id": message["id"],
        "role": "USER",
        "content": "hi",
        "clientId": None,
        "conversation": {"id": gid("Conversation", conversation), "messageCount": 1},
    }


async def test_resending_a_client_id_returns_the_first_message(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    variables = {
        "input": {
            "conversationId": gid("Conversation", conversation),
            "content": "once",
            "clientId": "k-1",
        }
    }
    first = await api.data(SEND, variables, token=token_for(user))
    second = await api.data(SEND, variables, token=token_for(user))
    assert first == second
    assert second["sendMessage"]["conversation"]["messageCount"] == 1


async def test_sending_to_a_foreign_conversation_is_not_found(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    other = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    error = await api.error(
        SEND,
        {"input": {"conversationId": gid("Conversation", conversation), "content": "x"}},
        token=token_for(other),
    )
    assert error["extensions"] == {"code": "NOT_FOUND"}
