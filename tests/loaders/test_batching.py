"""One SQL statement per level of nesting, whatever the page sizes."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, StatementCounter

ADMIN_QUERY = """
{
  users(first: 20) {
    edges { node {
      username
      conversations(first: 10) {
        edges { node {
          messageCount
          lastMessage { content }
          messages(last: 20) { edges { node { content } } }
        } }
      }
    } }
  }
}
"""


async def _populate(sm: Sessionmaker, *, users: int, conversations: int, messages: int) -> None:
    for _ in range(users):
        owner = await make_user(sm)
        for _ in range(conversations):
            conversation = await make_conversation(sm, owner_id=owner)
            await make_messages(sm, conversation_id=conversation, count=messages)


async def _count(api: Api, statements: StatementCounter, token: str) -> tuple[int, dict[str, Any]]:
    await api.data("{ me { id } }", token=token)  # warm the pool and the dialect
    statements.reset()
    data = await api.data(ADMIN_QUERY, token=token)
    return statements.count, data


async def test_the_admin_query_costs_the_same_few_statements_at_any_size(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter, database_url: str
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    await _populate(sessionmaker, users=2, conversations=1, messages=2)
    small, small_data = await _count(api, statements, token_for(admin))
    assert len(small_data["users"]["edges"]) == 3

    await _populate(sessionmaker, users=17, conversations=10, messages=50)
    large, large_data = await _count(api, statements, token_for(admin))
    users = large_data["users"]["edges"]
    assert len(users) == 20
    busy = [u for u in users if len(u["node"]["conversations"]["edges"]) == 10]
    assert len(busy) == 17
    conversation = busy[-1]["node"]["conversations"]["edges"][0]["node"]
    assert conversation["messageCount"] == 50
    assert len(conversation["messages"]["edges"]) == 20
    assert conversation["lastMessage"] == conversation["messages"]["edges"][-1]["node"]

    # the viewer, the users page, the conversations pages with their message counts, the last
    # messages, the messages pages: one statement per level, whatever the sizes. Once the
    # document is known (the fast lane) on PostgreSQL, the viewer the process read before is
    # checked in the users page's statement.
    expected = 4 if database_url.startswith("postgresql") else 5
    assert (small, large) == (5, expected), statements.seen


async def test_sibling_fields_load_concurrently_without_sharing_a_session(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    ids = []
    for i in range(4):
        conversation = await make_conversation(sessionmaker, owner_id=user, title=f"c{i}")
        await make_messages(sessionmaker, conversation_id=conversation, count=5 + i)
        ids.append(gid("Conversation", conversation))
    fields = " ".join(
        f'c{i}: conversation(id: "{cid}") {{ title messageCount lastMessage {{ content }} '
        f"messages(first: 3) {{ totalCount edges {{ node {{ content }} }} }} "
        f"owner {{ username }} }}"
        for i, cid in enumerate(ids)
    )
    query = f"{{ me {{ conversationCount conversations {{ totalCount }} }} {fields} }}"
    token = token_for(user)
    results = await asyncio.gather(*(api.data(query, token=token) for _ in range(40)))
    expected = results[0]
    assert expected["me"] == {"conversationCount": 4, "conversations": {"totalCount": 4}}
    assert [expected[f"c{i}"]["messageCount"] for i in range(4)] == [5, 6, 7, 8]
    assert all(result == expected for result in results)
