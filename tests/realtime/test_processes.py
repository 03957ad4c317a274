"""Real `python server.py` processes: real sockets, several processes, restarts, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from realtime.postgres import APPLICATION_NAME
from schema.errors import TOO_SLOW
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api
from tests.realtime.servers import ServerProcess, running_server
from tests.ws import PROTOCOLS, TRANSPORT_WS, GraphQLSocket, process_socket

MESSAGE_ADDED = """
subscription ($id: ID!) {
  messageAdded(conversationId: $id) { id role content conversation { id messageCount } }
}
"""
SEND = "mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id } }"
SIGN_UP = """
mutation ($input: SignUpInput!) { signUp(input: $input) { user { username } } }
"""
PROBE_SECONDS = 0.5
_probes = itertools.count()


async def send(server: ServerProcess, token: str, conversation: str, content: str) -> str:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        data = await Api(client).data(
            SEND,
            {"input": {"conversationId": gid("Conversation", conversation), "content": content}},
            token=token,
        )
    message_id: str = data["sendMessage"]["id"]
    return message_id


async def until_live(
    socket: GraphQLSocket, op_id: str, server: ServerProcess, token: str, conversation: str
) -> None:
    """Send probe messages until one arrives, then read the rest of them.

    A subscription is registered asynchronously, after the `subscribe` message; anything sent
    before that is not delivered. Delivery is in order, so once probe k arrives, every later
    probe arrives after it.
    """
    sent: list[str] = []
    while True:
        sent.append(f"probe {next(_probes)}")
        await send(server, token, conversation, sent[-1])
        try:
            event = await asyncio.wait_for(socket.receive(), PROBE_SECONDS)
        except TimeoutError:
            continue
        assert event.kind == "next" and event.id == op_id, event
        heard = event.payload["data"]["messageAdded"]["content"]
        for _ in sent[sent.index(heard) + 1 :]:
            await socket.next_data(op_id)
        return


async def subscribe_live(
    socket: GraphQLSocket, server: ServerProcess, token: str, conversation: str
) -> None:
    await socket.login(token)
    await socket.subscribe("1", MESSAGE_ADDED, {"id": gid("Conversation", conversation)})
    await until_live(socket, "1", server, token, conversation)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_real_server_delivers_a_sent_message_over_each_protocol(
    protocol: str, database_url: str, tmp_path: Path, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    token = token_for(user)
    with running_server(database_url, tmp_path) as server:
        async with process_socket(server.base_url, protocol) as socket:
            await subscribe_live(socket, server, token, conversation)
            count = (await socket_count(server, token, conversation)) + 1
            message_id = await send(server, token, conversation, "over the wire")
            data = await socket.next_data("1")
    assert data == {
        "messageAdded": {
            "id": message_id,
            "role": "USER",
            "content": "over the wire",
            "conversation": {"id": gid("Conversation", conversation), "messageCount": count},
        }
    }


async def socket_count(server: ServerProcess, token: str, conversation: str) -> int:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        data = await Api(client).data(
            "query ($id: ID!) { conversation(id: $id) { messageCount } }",
            {"id": gid("Conversation", conversation)},
            token=token,
        )
    count: int = data["conversation"]["messageCount"]
    return count


@pytest.mark.postgres_only
async def test_a_message_sent_to_one_process_reaches_a_subscriber_of_another(
    database_url: str, tmp_path: Path, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    token = token_for(user)
    with (
        running_server(database_url, tmp_path) as listening,
        running_server(database_url, tmp_path) as sending,
    ):
        async with process_socket(listening.base_url, TRANSPORT_WS) as socket:
            await subscribe_live(socket, sending, token, conversation)
            sent = [await send(sending, token, conversation, f"m{i}") for i in range(5)]
            received = [(await socket.next_data("1"))["messageAdded"]["id"] for _ in sent]
    assert received == sent


async def listener_pids(sessionmaker: Sessionmaker, *, excluding: int | None) -> set[int]:
    async with sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": APPLICATION_NAME},
        )
        return {pid for (pid,) in rows if pid != excluding}


@pytest.mark.postgres_only
async def test_the_listener_reconnects_after_its_connection_is_terminated(
    database_url: str, tmp_path: Path, app: Starlette, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    token = token_for(user)
    ours = app.state.services.broker.connection.get_server_pid()
    with running_server(database_url, tmp_path) as server:
        async with process_socket(server.base_url, TRANSPORT_WS) as socket:
            await subscribe_live(socket, server, token, conversation)
            (old,) = await listener_pids(sessionmaker, excluding=ours)
            async with sessionmaker() as session:
                terminated = await session.scalar(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": old}
                )
            for _ in range(200):
                new = await listener_pids(sessionmaker, excluding=ours)
                if new and old not in new:
                    break
                await asyncio.sleep(0.05)
            message_id = await send(server, token, conversation, "after the restart")
            data = await socket.next_data("1")
    assert terminated is True
    assert (len(new), old in new) == (1, False)
    assert data["messageAdded"]["id"] == message_id


async def test_sigterm_closes_subscriptions_with_1012_and_finishes_requests_in_flight(
    database_url: str, tmp_path: Path, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    token = token_for(user)
    # A slow password hash makes a signUp that is still running when SIGTERM arrives.
    slow = {"argon2_time_cost": "16", "argon2_memory_cost": "65536", "log_level": "INFO"}
    with running_server(database_url, tmp_path, **slow) as server:
        async with process_socket(server.base_url, TRANSPORT_WS) as socket:
            await subscribe_live(socket, server, token, conversation)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                variables: dict[str, Any] = {
                    "input": {"username": "late", "email": "late@example.com", "password": "x" * 12}
                }
                in_flight = asyncio.create_task(Api(client).data(SIGN_UP, variables))
                await asyncio.sleep(0.3)
                exit_code = await asyncio.to_thread(server.terminate)
                signed_up = await in_flight
            closed = await socket.closed()
    # After its graceful shutdown uvicorn raises the signal again, so that a supervisor sees
    # the process end by SIGTERM, as it asked.
    assert (closed.code, exit_code) == (1012, -signal.SIGTERM)
    assert signed_up == {"signUp": {"user": {"username": "late"}}}
    output = server.output()
    assert "Application shutdown complete." in output and "Traceback" not in output


async def test_a_consumer_that_stops_reading_is_cut_off_with_an_error(
    database_url: str, tmp_path: Path, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    token = token_for(user)
    big = "x" * 31_990
    with running_server(database_url, tmp_path, subscription_queue_size="4") as server:
        # The client reads nothing while the messages pile up: its buffers, then the kernel's,
        # then the server's write buffer fill, the server's sends block, and its queue of
        # four events overflows. (Uncompressed: the repeated text would deflate to nothing.)
        async with process_socket(
            server.base_url, TRANSPORT_WS, receive_buffer=65536, max_queue=1, compression=None
        ) as socket:
            await subscribe_live(socket, server, token, conversation)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                api = Api(client)
                variables = {"input": {"conversationId": gid("Conversation", conversation)}}
                for i in range(300):
                    variables["input"]["content"] = f"{i} {big}"
                    await api.data(SEND, variables, token=token)
            received: list[int] = []
            while True:
                try:
                    event = await socket.receive()
                except TimeoutError:
                    raise AssertionError(f"no error after {len(received)} messages") from None
                if event.kind != "next" or "errors" in event.payload:
                    break
                received.append(int(event.payload["data"]["messageAdded"]["content"].split()[0]))
            final = await socket.receive()
    assert received == list(range(len(received))) and len(received) < 300
    assert [(e["message"], e["extensions"]["code"]) for e in event.payload["errors"]] == [
        (TOO_SLOW, "SUBSCRIBER_TOO_SLOW")
    ]
    assert final.kind == "complete"
