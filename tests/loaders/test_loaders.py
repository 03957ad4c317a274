"""Every loader answers a whole batch with one statement, in a session of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from db.conversations import DEFAULT_FILTER
from db.pagination import PageRequest
from loaders import EVERYONE, Viewer, make_loaders
from tests.factories import Sessionmaker, make_conversation, make_messages, make_user
from tests.helpers import StatementCounter


async def _world(sm: Sessionmaker) -> tuple[list[int], list[str], list[int]]:
    users = [await make_user(sm) for _ in range(3)]
    conversations = [await make_conversation(sm, owner_id=u) for u in users for _ in range(2)]
    messages: list[int] = []
    for conversation in conversations:
        messages += await make_messages(sm, conversation_id=conversation, count=4)
    return users, conversations, messages


async def test_each_loader_costs_one_statement_per_batch(
    sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    users, conversations, messages = await _world(sessionmaker)
    loaders = make_loaders(sessionmaker, Viewer(id=users[0], is_admin=True))
    page = PageRequest(first=2)
    batches: list[list[Awaitable[object]]] = [
        [loaders.user_by_id.get(u) for u in [*users, 999]],
        [loaders.conversation_by_id.get(c) for c in conversations],
        [loaders.message_by_id.get(m) for m in messages],
        [loaders.conversation_count_by_user.get(u) for u in users],
        [loaders.message_count_by_conversation.get(c) for c in conversations],
        [loaders.conversations_page_by_user((page, DEFAULT_FILTER)).get(u) for u in users],
        [loaders.messages_page_by_conversation(page).get(c) for c in conversations],
        [loaders.users_page((page, None)).get(EVERYONE)],
    ]
    for batch in batches:
        statements.reset()
        results: list[object] = list(await asyncio.gather(*batch))
        assert statements.count == 1, statements.seen
        assert len(results) == len(batch)


async def test_loaders_scope_conversations_and_messages_to_their_viewer(
    sessionmaker: Sessionmaker,
) -> None:
    users, conversations, messages = await _world(sessionmaker)
    loaders = make_loaders(sessionmaker, Viewer(id=users[0], is_admin=False))
    found = await asyncio.gather(*(loaders.conversation_by_id.get(c) for c in conversations))
    assert [row is not None for row in found] == [True, True, False, False, False, False]
    found_messages = await asyncio.gather(*(loaders.message_by_id.get(m) for m in messages))
    assert sum(row is not None for row in found_messages) == 8


async def test_a_value_primed_when_made_is_there_without_a_statement(
    sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    viewer, other = await make_user(sessionmaker), await make_user(sessionmaker)
    loaders = make_loaders(sessionmaker, Viewer(id=viewer, is_admin=False))
    viewer_row: Any = ("the viewer's row",)
    other_row: Any = ("another row",)
    loaders.prime_when_made("user_by_id", viewer, viewer_row)
    made_before = "user_by_id" in vars(loaders)
    statements.reset()
    primed = await loaders.user_by_id.get(viewer)
    # Once made, a further value is primed at once.
    loaders.prime_when_made("user_by_id", other, other_row)
    also = await loaders.user_by_id.get(other)

    assert (made_before, primed, also, statements.count) == (False, viewer_row, other_row, 0)
