from __future__ import annotations

from sqlalchemy import func, select

from db.models import Conversation, Message
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api


async def _count(sm: Sessionmaker, model: type[Conversation] | type[Message]) -> int:
    async with sm() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_deleting_a_user_deletes_their_conversations_and_messages(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    doomed = await make_user(sessionmaker)
    keeper = await make_user(sessionmaker)
    for owner in (doomed, keeper):
        conversation = await make_conversation(sessionmaker, owner_id=owner)
        await make_messages(sessionmaker, conversation_id=conversation, count=3)
    await api.data(
        "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }",
        {"id": gid("User", doomed)},
        token=token_for(doomed),
    )
    assert await _count(sessionmaker, Conversation) == 1
    assert await _count(sessionmaker, Message) == 3
