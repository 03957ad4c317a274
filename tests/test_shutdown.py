"""Stopping the app: nothing it started is left running, to give a connection back to a pool
already closed (aiosqlite's and asyncpg's connections warn when they are garbage-collected,
at a random later test: "ResourceWarning: ... was deleted before being closed")."""

from __future__ import annotations

import asyncio
from typing import Any

from app.settings import Settings
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import running
from tests.schema.test_subscriptions import MESSAGE_ADDED, wait_for_subscribers
from tests.ws import TRANSPORT_WS, asgi_socket


async def test_an_app_stopped_as_a_client_completes_its_subscription_leaves_nothing_running(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    ada = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=ada)
    before = asyncio.all_tasks()
    left: list[set[asyncio.Task[Any]]] = []
    async with running(settings) as app:
        async with asgi_socket(app, TRANSPORT_WS) as socket:
            await socket.login(token_for(ada))
            await socket.subscribe("1", MESSAGE_ADDED, {"id": gid("Conversation", conversation)})
            await wait_for_subscribers(app, 1)
            await socket.stop("1")
    left.append({task for task in asyncio.all_tasks() - before if not task.done()})
    assert left == [set()]
