"""Real concurrent requests (asyncio.gather over the HTTP API, each request on its own pooled
connection), on PostgreSQL and on SQLite, where writes begin IMMEDIATE and so queue instead of
failing with "database is locked"."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from sqlalchemy import func, select

from db.models import Conversation, Message, User
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, codes

SEND = "mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id } }"
TRANSFER = """
mutation ($input: TransferConversationInput!) {
  transferConversation(input: $input) { owner { id } messageCount }
}
"""
SIGN_UP = "mutation ($input: SignUpInput!) { signUp(input: $input) { user { username } } }"


async def count(sm: Sessionmaker, model: Any) -> int:
    async with sm() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def owner_of(sm: Sessionmaker, conversation_id: str) -> int:
    async with sm() as session:
        statement = select(Conversation.user_id).where(Conversation.id == conversation_id)
        return int((await session.execute(statement)).scalar_one())


async def test_ten_concurrent_sends_with_one_client_id_store_one_message(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    variables = {
        "input": {
            "conversationId": gid("Conversation", conversation),
            "content": "retried",
            "clientId": "flaky-network-1",
        }
    }
    results = await asyncio.gather(
        *(api.data(SEND, variables, token=token_for(user)) for _ in range(10))
    )
    ids = {result["sendMessage"]["id"] for result in results}
    assert len(ids) == 1
    async with sessionmaker() as session:
        stored = list((await session.execute(select(Message.id))).scalars())
    assert [gid("Message", key) for key in stored] == list(ids)


async def test_ten_concurrent_sends_of_different_messages_are_all_stored(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    results = await asyncio.gather(
        *(
            api.run(
                SEND,
                {
                    "input": {
                        "conversationId": gid("Conversation", conversation),
                        "content": f"m{i}",
                    }
                },
                token=token_for(user),
            )
            for i in range(10)
        )
    )
    assert [codes(result) for result in results] == [[]] * 10
    assert await count(sessionmaker, Message) == 10


async def test_eight_concurrent_transfers_by_an_admin_all_apply_in_turn(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    owner = await make_user(sessionmaker)
    targets = [await make_user(sessionmaker) for _ in range(8)]
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    await make_messages(sessionmaker, conversation_id=conversation, count=25)
    results = await asyncio.gather(
        *(
            api.data(
                TRANSFER,
                {
                    "input": {
                        "conversationId": gid("Conversation", conversation),
                        "toUserId": gid("User", target),
                    }
                },
                token=token_for(admin),
            )
            for target in targets
        )
    )
    # Each transfer answered with the owner it set, and every message came along.
    assert [result["transferConversation"] for result in results] == [
        {"owner": {"id": gid("User", target)}, "messageCount": 25} for target in targets
    ]
    assert await owner_of(sessionmaker, conversation) in targets
    assert await count(sessionmaker, Message) == 25
    assert await count(sessionmaker, Conversation) == 1


async def test_eight_concurrent_transfers_by_the_owner_let_exactly_one_through(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    targets = [await make_user(sessionmaker) for _ in range(8)]
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    await make_messages(sessionmaker, conversation_id=conversation, count=25)
    results = await asyncio.gather(
        *(
            api.run(
                TRANSFER,
                {
                    "input": {
                        "conversationId": gid("Conversation", conversation),
                        "toUserId": gid("User", target),
                    }
                },
                token=token_for(owner),
            )
            for target in targets
        )
    )
    # The first to take the row lock moves it; the others then find the owner changed, and a
    # former owner sees nothing.
    assert Counter(tuple(codes(result)) for result in results) == {(): 1, ("NOT_FOUND",): 7}
    winner = next(result for result in results if not codes(result))["data"]["transferConversation"]
    assert winner["owner"]["id"] == gid("User", await owner_of(sessionmaker, conversation))
    assert winner["messageCount"] == 25
    assert await count(sessionmaker, Message) == 25


async def test_twenty_concurrent_sign_ups_with_one_username_make_one_user(api: Api) -> None:
    results = await asyncio.gather(
        *(
            api.run(
                SIGN_UP,
                {
                    "input": {
                        "username": "Popular",
                        "email": f"popular{i}@example.com",
                        "password": "password-123",
                    }
                },
            )
            for i in range(20)
        )
    )
    assert Counter(tuple(codes(result)) for result in results) == {(): 1, ("CONFLICT",): 19}
    conflict = next(result for result in results if codes(result))["errors"][0]
    assert conflict["extensions"] == {
        "code": "CONFLICT",
        "fields": {"username": "this username is already taken"},
    }


async def test_concurrent_sends_during_a_transfer_lose_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    owner = await make_user(sessionmaker)
    target = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    sends = [
        api.run(
            SEND,
            {"input": {"conversationId": gid("Conversation", conversation), "content": f"m{i}"}},
            token=token_for(admin),
        )
        for i in range(6)
    ]
    transfer = api.data(
        TRANSFER,
        {
            "input": {
                "conversationId": gid("Conversation", conversation),
                "toUserId": gid("User", target),
            }
        },
        token=token_for(admin),
    )
    results = await asyncio.gather(transfer, *sends)
    assert [codes(result) for result in results[1:]] == [[]] * 6
    assert await count(sessionmaker, Message) == 6
    assert await owner_of(sessionmaker, conversation) == target
    assert await count(sessionmaker, User) == 3


async def test_racing_first_sign_ups_make_exactly_one_admin(api: Api) -> None:
    sign_up = "mutation ($input: SignUpInput!) { signUp(input: $input) { user { isAdmin } } }"
    results = await asyncio.gather(
        *(
            api.data(
                sign_up,
                {
                    "input": {
                        "username": f"early{i}",
                        "email": f"early{i}@example.com",
                        "password": "password-123",
                    }
                },
            )
            for i in range(10)
        )
    )
    admins = [result["signUp"]["user"]["isAdmin"] for result in results]
    assert sorted(admins) == [False] * 9 + [True]
