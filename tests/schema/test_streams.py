"""Streamed answers (issue 15, RULES.md "Assistant"): startMessage, appendMessage,
finishMessage, the stream timeout and the `messageStream` subscription, on both databases."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from app.settings import Settings
from schema import streams as schema_streams
from tests.conftest import ApiFactory
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, StatementCounter, running
from tests.schema.test_changes_subscription import whole_feed
from tests.schema.test_subscriptions import wait_for_subscribers
from tests.ws import TRANSPORT_WS, GraphQLSocket, asgi_socket

START = """
mutation ($c: ID!, $model: String, $clientId: String) {
  startMessage(input: {conversationId: $c, model: $model, clientId: $clientId}) {
    id role content status model usage { inputTokens outputTokens }
  }
}
"""
APPEND = """
mutation ($m: ID!, $seq: Int!, $delta: String!) {
  appendMessage(input: {messageId: $m, seq: $seq, delta: $delta}) { messageId seq length }
}
"""
FINISH = """
mutation ($m: ID!, $status: MessageStatus!, $usage: TokenUsageInput) {
  finishMessage(input: {messageId: $m, status: $status, usage: $usage}) {
    id content status model usage { inputTokens outputTokens }
  }
}
"""
READ = """
query ($c: ID!) {
  node(id: $c) {
    ... on Conversation {
      messages(first: 10) { edges { node { content status model usage { inputTokens } } } }
      lastMessage { content status }
    }
  }
}
"""
SEARCH_HITS = """
query ($q: String!) {
  searchMessages(query: $q) { edges { node { message { content status } } } }
}
"""
STREAM = """
subscription ($m: ID!, $after: Int) {
  messageStream(messageId: $m, afterSeq: $after) { messageId seq delta status }
}
"""


async def start(api: Api, token: str, conversation: str, **variables: Any) -> dict[str, Any]:
    data = await api.data(START, {"c": gid("Conversation", conversation), **variables}, token=token)
    started: dict[str, Any] = data["startMessage"]
    return started


async def append(api: Api, token: str, message: str, seq: int, delta: str) -> dict[str, Any]:
    data = await api.data(APPEND, {"m": message, "seq": seq, "delta": delta}, token=token)
    appended: dict[str, Any] = data["appendMessage"]
    return appended


async def finish(
    api: Api, token: str, message: str, status: str = "COMPLETE", usage: Any = None
) -> dict[str, Any]:
    variables = {"m": message, "status": status, "usage": usage}
    finished: dict[str, Any] = (await api.data(FINISH, variables, token=token))["finishMessage"]
    return finished


async def owner_and_conversation(sessionmaker: Sessionmaker) -> tuple[str, str]:
    alice = await make_user(sessionmaker)
    return token_for(alice), await make_conversation(sessionmaker, owner_id=alice)


async def test_a_streamed_answer_reads_as_its_chunks_then_as_finished(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    started = await start(api, token, conversation, model="gpt-5", clientId="answer-1")
    message = started["id"]
    assert started == {
        "id": message,
        "role": "ASSISTANT",
        "content": "",
        "status": "STREAMING",
        "model": "gpt-5",
        "usage": None,
    }
    # The clientId makes a resend the same message.
    assert await start(api, token, conversation, model="gpt-5", clientId="answer-1") == started
    assert await append(api, token, message, 1, "Hello") == {
        "messageId": message,
        "seq": 1,
        "length": 5,
    }
    assert await append(api, token, message, 2, ", wörld") == {
        "messageId": message,
        "seq": 2,
        "length": 12,
    }
    read = (await api.data(READ, {"c": gid("Conversation", conversation)}, token=token))["node"]
    assert read == {
        "messages": {
            "edges": [
                {
                    "node": {
                        "content": "Hello, wörld",
                        "status": "STREAMING",
                        "model": "gpt-5",
                        "usage": None,
                    }
                }
            ]
        },
        "lastMessage": {"content": "Hello, wörld", "status": "STREAMING"},
    }
    usage = {"inputTokens": 12, "outputTokens": 3}
    assert await finish(api, token, message, usage=usage) == {
        "id": message,
        "content": "Hello, wörld",
        "status": "COMPLETE",
        "model": "gpt-5",
        "usage": usage,
    }
    # A producer's retry after the finish is answered with the stored state.
    assert await append(api, token, message, 2, ", wörld") == {
        "messageId": message,
        "seq": 2,
        "length": 12,
    }
    read = (await api.data(READ, {"c": gid("Conversation", conversation)}, token=token))["node"]
    assert read["lastMessage"] == {"content": "Hello, wörld", "status": "COMPLETE"}
    kinds = [change["kind"] for change in await whole_feed(api, token)]
    assert kinds == ["MESSAGE_ADDED", "MESSAGE_FINISHED"]


async def test_send_and_import_record_the_model(api: Api, sessionmaker: Sessionmaker) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    c = gid("Conversation", conversation)
    sent = await api.data(
        'mutation ($c: ID!) { sendMessage(input: {conversationId: $c, content: "hi", '
        'model: "m-1"}) { status model usage { inputTokens } } }',
        {"c": c},
        token=token,
    )
    assert sent == {"sendMessage": {"status": "COMPLETE", "model": "m-1", "usage": None}}
    await api.data(
        "mutation ($c: ID!) { importMessages(input: {conversationId: $c, messages: ["
        '{role: ASSISTANT, content: "old", model: "m-0"}]}) { importedCount } }',
        {"c": c},
        token=token,
    )
    read = (await api.data(READ, {"c": c}, token=token))["node"]["messages"]["edges"]
    assert [edge["node"]["model"] for edge in read] == ["m-1", "m-0"]
    error = await api.error(
        'mutation ($c: ID!, $m: String) { sendMessage(input: {conversationId: $c, content: "x", '
        "model: $m}) { id } }",
        {"c": c, "m": "m" * 101},
        token=token,
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["fields"] == {"model": "must be 1-100 characters"}


async def test_bad_appends_and_finishes_are_bad_user_input_and_change_nothing(
    api: Api, sessionmaker: Sessionmaker, other_app: ApiFactory
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    await append(api, token, message, 1, "abc")

    async def fields(query: str, variables: dict[str, Any], who: str = token) -> Any:
        error = await api.error(query, variables, token=who)
        return error["extensions"]["code"], error["extensions"].get("fields")

    bad = "BAD_USER_INPUT"
    assert await fields(APPEND, {"m": message, "seq": 3, "delta": "x"}) == (
        bad,
        {"seq": "expected 2"},
    )
    assert await fields(APPEND, {"m": message, "seq": 0, "delta": "x"}) == (
        bad,
        {"seq": "must be 1 or more"},
    )
    assert (await fields(APPEND, {"m": message, "seq": 2, "delta": ""}))[1].keys() == {"delta"}
    mallory = token_for(await make_user(sessionmaker))
    assert await fields(APPEND, {"m": message, "seq": 2, "delta": "x"}, mallory) == (
        "NOT_FOUND",
        None,
    )
    assert (await fields(FINISH, {"m": message, "status": "COMPLETE"}, mallory))[0] == "NOT_FOUND"
    usage = {"inputTokens": -1, "outputTokens": 100_000_001}
    assert await fields(FINISH, {"m": message, "status": "COMPLETE", "usage": usage}) == (
        bad,
        {
            "usage.inputTokens": "must be 0-100,000,000",
            "usage.outputTokens": "must be 0-100,000,000",
        },
    )
    assert (await fields(FINISH, {"m": message, "status": "STREAMING"}))[1].keys() == {"status"}
    # editMessage on a streaming message.
    edit = 'mutation ($id: ID!) { editMessage(id: $id, input: {content: "x"}) { id } }'
    assert await fields(edit, {"id": message}) == (
        bad,
        {"id": "is still streaming: finish it first"},
    )
    await finish(api, token, message, "CANCELLED")
    assert await fields(APPEND, {"m": message, "seq": 2, "delta": "x"}) == (
        bad,
        {"messageId": "is finished (CANCELLED)"},
    )
    assert await fields(FINISH, {"m": message, "status": "COMPLETE"}) == (
        bad,
        {"messageId": "is not streaming (CANCELLED)"},
    )
    [sent] = await make_messages(sessionmaker, conversation_id=conversation, count=1)
    assert await fields(APPEND, {"m": gid("Message", sent), "seq": 1, "delta": "x"}) == (
        bad,
        {"messageId": "was never streamed"},
    )
    read = (await api.data(READ, {"c": gid("Conversation", conversation)}, token=token))["node"]
    assert read["messages"]["edges"][-1]["node"] == {
        "content": "abc",
        "status": "CANCELLED",
        "model": None,
        "usage": None,
    }
    # The size limit.
    async with other_app(max_streamed_chars=5) as small:
        second = (await start(small, token, conversation))["id"]
        await append(small, token, second, 1, "1234")
        error = await small.error(APPEND, {"m": second, "seq": 2, "delta": "56"}, token=token)
        assert error["extensions"]["fields"] == {
            "delta": "would make the message longer than 5 characters"
        }
        assert await append(small, token, second, 2, "5") == {
            "messageId": second,
            "seq": 2,
            "length": 5,
        }


async def test_an_append_is_at_most_two_statements(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    await append(api, token, message, 1, "warm")
    statements.reset()
    await append(api, token, message, 2, "more")
    seen = [s for s in statements.seen if not s.strip().upper().startswith(("BEGIN", "COMMIT"))]
    assert "FROM users" in seen[0]  # the viewer (every request reads it)
    if app.state.engine.dialect.name == "postgresql":
        # One statement on its own (no BEGIN or COMMIT): the claim, the INSERT and its NOTIFY.
        assert len(seen) == 2, seen
        assert seen[1].startswith("WITH claimed AS \n(UPDATE messages SET stream_seq="), seen
        assert "INSERT INTO message_chunks" in seen[1] and "pg_notify" in seen[1], seen
    else:
        assert len(seen) == 3, seen
        assert seen[1].startswith("UPDATE messages SET stream_seq=")
        assert seen[2].startswith("INSERT INTO message_chunks")


class Streams:
    """The `messageStream` operations of one socket, told apart by id: their chunks, the bytes
    of the messages that carried them (as sent), and which have completed."""

    def __init__(self, socket: GraphQLSocket) -> None:
        self.socket = socket
        self.chunks: dict[str, list[dict[str, Any]]] = {}
        self.size: dict[str, int] = {}
        self.done: set[str] = set()

    async def open(self, op_id: str, message: str, after: int | None = None) -> None:
        variables: dict[str, Any] = (
            {"m": message} if after is None else {"m": message, "after": after}
        )
        self.chunks[op_id], self.size[op_id] = [], 0
        await self.socket.subscribe(op_id, STREAM, variables)

    async def read_one(self) -> None:
        event = await self.socket.receive()
        assert event.id in self.chunks, event
        if event.kind == "complete":
            self.done.add(event.id)
            return
        assert event.kind == "next" and "errors" not in event.payload, event
        message = {"id": event.id, "type": "next", "payload": event.payload}
        self.size[event.id] += len(
            json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        )
        self.chunks[event.id].append(event.payload["data"]["messageStream"])

    async def until_seq(self, op_id: str, seq: int) -> None:
        while not self.chunks[op_id] or self.chunks[op_id][-1]["seq"] < seq:
            await self.read_one()

    async def until_done(self, *op_ids: str) -> None:
        while not self.done.issuperset(op_ids):
            await self.read_one()


def check_chunks(chunks: list[dict[str, Any]], *, after: int, text: str, last: int) -> None:
    # Seqs grow (the last chunk may repeat the last append's seq, with the final status).
    seqs = [chunk["seq"] for chunk in chunks]
    assert seqs[:-1] == sorted(set(seqs[:-1])) and all(seq > after for seq in seqs[:-1]), seqs
    assert seqs[-1] == last and (len(seqs) == 1 or seqs[-2] <= last), seqs
    assert "".join(chunk["delta"] for chunk in chunks) == text
    assert [chunk["status"] for chunk in chunks[:-1]] == ["STREAMING"] * (len(chunks) - 1)
    assert chunks[-1]["status"] == "COMPLETE"


async def test_subscribers_joining_at_0_and_500_and_resuming_at_300_get_the_whole_text(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    deltas = [f"<{n}:é>" for n in range(1, 1001)]
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token)
        streams = Streams(socket)
        await streams.open("first", message, 0)
        await streams.open("dropped", message)
        await wait_for_subscribers(app, 2)
        for seq, delta in enumerate(deltas, start=1):
            await append(api, token, message, seq, delta)
            if seq == 300:
                # The dropped one reads up to seq 300, then goes away.
                await streams.until_seq("dropped", 300)
                await socket.stop("dropped")
                await streams.until_seq("first", 300)
            if seq == 500:
                await streams.open("middle", message, 500)
        dropped = streams.chunks["dropped"]
        assert "".join(c["delta"] for c in dropped) == "".join(deltas[:300])
        assert [c["status"] for c in dropped] == ["STREAMING"] * len(dropped)
        await streams.open("resumed", message, 300)
        await wait_for_subscribers(app, 3)
        await finish(api, token, message)
        await streams.until_done("first", "middle", "resumed")
        for op_id, after in (("first", 0), ("middle", 500), ("resumed", 300)):
            text = "".join(deltas[after:])
            check_chunks(streams.chunks[op_id], after=after, text=text, last=1000)
        # On a finished message: one chunk, the text after afterSeq and the final status.
        await streams.open("late", message, 998)
        await streams.until_done("late")
        assert streams.chunks["late"] == [
            {
                "messageId": message,
                "seq": 1000,
                "delta": "".join(deltas[998:]),
                "status": "COMPLETE",
            }
        ]
        # A message that was never streamed: one chunk, seq 0, all of its text.
        [sent] = await make_messages(
            sessionmaker, conversation_id=conversation, count=1, content="plain {i}"
        )
        await streams.open("plain", gid("Message", sent))
        await streams.until_done("plain")
        assert streams.chunks["plain"] == [
            {"messageId": gid("Message", sent), "seq": 0, "delta": "plain 0", "status": "COMPLETE"}
        ]
    # Another user's message is a missing one.
    mallory = token_for(await make_user(sessionmaker))
    async with asgi_socket(app, TRANSPORT_WS) as other:
        await other.login(mallory)
        await other.subscribe("1", STREAM, {"m": message})
        [error] = await other.errors("1")
        assert error["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.postgres_only
async def test_concurrent_appends_are_stored_once_in_order(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]

    async def attempt(seq: int) -> dict[str, Any]:
        # As a client does (an append is idempotent by seq): SERVICE_UNAVAILABLE, sixty
        # requests at once on a loaded machine waiting past the pool's timeout, is sent again.
        for _ in range(5):
            answer = await api.run(
                APPEND, {"m": message, "seq": seq, "delta": f"[{seq}]"}, token=token
            )
            codes = [error["extensions"]["code"] for error in answer.get("errors", [])]
            if codes != ["SERVICE_UNAVAILABLE"]:
                return answer
            await asyncio.sleep(answer["errors"][0]["extensions"]["retryAfter"])
        return answer

    # Each seq from three tasks at once, seqs 1-20 all racing.
    results = await asyncio.gather(*(attempt(seq) for seq in range(1, 21) for _ in range(3)))
    errors = [r["errors"][0]["extensions"] for r in results if "errors" in r]
    # Each seq is stored once (two of its three attempts see it stored, or a gap if they came
    # before its predecessor): only gaps are refused, naming the seq expected next.
    assert all(error["code"] == "BAD_USER_INPUT" for error in errors), errors
    assert all(error["fields"]["seq"].startswith("expected ") for error in errors), errors
    # Whatever raced ahead of its turn was refused: sending in order completes the text.
    for seq in range(1, 21):
        assert (await attempt(seq)).get("errors") is None
    read = (await api.data(READ, {"c": gid("Conversation", conversation)}, token=token))["node"]
    assert read["lastMessage"]["content"] == "".join(f"[{seq}]" for seq in range(1, 21))
    async with sessionmaker() as session:
        rows = (
            await session.execute(text("SELECT seq FROM message_chunks ORDER BY seq"))
        ).scalars()
        assert list(rows) == list(range(1, 21))


async def test_a_200000_character_answer_costs_o_n(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    deltas = [f"{n:06d}" + "x" * 94 for n in range(2000)]
    answer = "".join(deltas)
    assert len(answer) == 200_000
    postgres = app.state.engine.dialect.name == "postgresql"

    async def wal() -> int:
        async with sessionmaker() as session:
            return int(
                (await session.execute(text("SELECT pg_current_wal_lsn() - '0/0'"))).scalar_one()
            )

    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token)
        streams = Streams(socket)
        await streams.open("1", message)
        await wait_for_subscribers(app, 1)
        before = await wal() if postgres else 0
        for seq, delta in enumerate(deltas, start=1):
            await append(api, token, message, seq, delta)
        await finish(api, token, message)
        written = await wal() - before if postgres else 0
        await streams.until_done("1")
    chunks, size = streams.chunks["1"], streams.size["1"]
    assert "".join(chunk["delta"] for chunk in chunks) == answer
    assert size < 1.2 * len(answer) + 200 * 2000, size
    if postgres:
        assert written < 10 * len(answer), written


async def test_a_silent_stream_times_out_as_failed(
    api: Api, sessionmaker: Sessionmaker, settings: Settings
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    await append(api, token, message, 1, "half an answ")
    # Another process with a short timeout: its sweep fails the stream and wakes its own
    # subscriber (on PostgreSQL through NOTIFY, as any process's would be).
    async with running(settings, stream_timeout=0.3) as quick:
        async with asgi_socket(quick, TRANSPORT_WS) as socket:
            await socket.login(token)
            streams = Streams(socket)
            await streams.open("1", message)
            await streams.until_done("1")
    assert streams.chunks["1"] == [
        {"messageId": message, "seq": 1, "delta": "half an answ", "status": "STREAMING"},
        {"messageId": message, "seq": 1, "delta": "", "status": "FAILED"},
    ]
    read = (await api.data(READ, {"c": gid("Conversation", conversation)}, token=token))["node"]
    assert read["lastMessage"] == {"content": "half an answ", "status": "FAILED"}
    kinds = [change["kind"] for change in await whole_feed(api, token)]
    assert kinds == ["MESSAGE_ADDED", "MESSAGE_FINISHED"]
    error = await api.error(APPEND, {"m": message, "seq": 2, "delta": "x"}, token=token)
    assert error["extensions"]["fields"] == {"messageId": "is finished (FAILED)"}


async def test_the_export_has_the_model_and_a_streaming_message_s_text_so_far(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation, model="gpt-5"))["id"]
    await append(api, token, message, 1, "so far")
    response = await api.client.get("/export", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    [line] = response.text.splitlines()
    [exported] = json.loads(line)["messages"]
    assert (exported["id"], exported["content"], exported["model"]) == (message, "so far", "gpt-5")


@pytest.mark.postgres_only
async def test_appends_in_another_process_reach_the_subscriber_and_a_lost_listen_loses_nothing(
    app: Starlette, sessionmaker: Sessionmaker, other_app: ApiFactory
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    async with other_app() as elsewhere, asgi_socket(app, TRANSPORT_WS) as socket:
        message = (await start(elsewhere, token, conversation))["id"]
        await socket.login(token)
        streams = Streams(socket)
        await streams.open("1", message)
        await wait_for_subscribers(app, 1)
        await append(elsewhere, token, message, 1, "one ")
        await streams.until_seq("1", 1)
        # The LISTEN connection goes; what is appended meanwhile is read on its return.
        broker = app.state.services.broker
        listener = broker.connection
        assert listener is not None
        async with sessionmaker() as session:
            await session.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": listener.get_server_pid()}
            )
        for _ in range(500):
            if broker.connection is None:
                break
            await asyncio.sleep(0.01)
        assert broker.connection is None  # down: these two notifications are lost to it
        await append(elsewhere, token, message, 2, "two ")
        await finish(elsewhere, token, message)
        await streams.until_done("1")
    assert "".join(chunk["delta"] for chunk in streams.chunks["1"]) == "one two "
    assert streams.chunks["1"][-1] == {
        "messageId": message,
        "seq": 2,
        "delta": streams.chunks["1"][-1]["delta"],
        "status": "COMPLETE",
    }


async def test_a_stream_whose_message_is_deleted_ends_not_found_and_a_negative_after_seq_is_refused(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deletion wakes no stream subscriber: its next read ends it (RECHECK_SECONDS, made short).
    monkeypatch.setattr(schema_streams, "RECHECK_SECONDS", 0.2)
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    await append(api, token, message, 1, "half an ")
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token)
        await socket.subscribe("1", STREAM, {"m": message, "after": 0})
        assert await socket.next_data("1") == {
            "messageStream": {
                "messageId": message,
                "seq": 1,
                "delta": "half an ",
                "status": "STREAMING",
            }
        }
        await api.data(
            "mutation ($m: ID!) { deleteMessage(id: $m) { deletedId } }",
            {"m": message},
            token=token,
        )
        [error] = await socket.errors("1")
        assert error["extensions"]["code"] == "NOT_FOUND"
        await socket.subscribe("2", STREAM, {"m": message, "after": -1})
        [refused] = await socket.errors("2")
        assert refused["extensions"]["code"] == "BAD_USER_INPUT"
        assert refused["extensions"]["fields"] == {"afterSeq": "must be 0 or more"}


async def test_one_wake_up_read_serves_the_subscribers_of_a_message_in_step(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    op_ids = ("a", "b", "c")
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token)
        streams = Streams(socket)
        for op_id in op_ids:
            await streams.open(op_id, message)
        await wait_for_subscribers(app, 3)
        await append(api, token, message, 1, "one ")
        for op_id in op_ids:
            await streams.until_seq(op_id, 1)
        statements.reset()
        await append(api, token, message, 2, "two")
        for op_id in op_ids:
            await streams.until_seq(op_id, 2)
        reads = [s for s in statements.seen if s.startswith("SELECT") and "message_chunks" in s]
        assert len(reads) == 1, reads  # not one per subscriber
    chunks = [
        {"messageId": message, "seq": seq, "delta": delta, "status": "STREAMING"}
        for seq, delta in ((1, "one "), (2, "two"))
    ]
    assert streams.chunks == dict.fromkeys(op_ids, chunks)


async def test_the_replay_of_an_edited_streamed_message_is_its_current_text(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    message = (await start(api, token, conversation))["id"]
    for seq, delta in enumerate(["Hello", ", ", "world"], start=1):
        await append(api, token, message, seq, delta)
    await finish(api, token, message)
    edit = "mutation ($id: ID!, $c: String!) { editMessage(id: $id, input: {content: $c}) { id } }"
    await api.data(edit, {"id": message, "c": "Hello, there: edited"}, token=token)
    async with asgi_socket(app, TRANSPORT_WS) as socket:
        await socket.login(token)
        streams = Streams(socket)
        for after in (0, 2, 3):
            await streams.open(f"after {after}", message, after)
            await streams.until_done(f"after {after}")
    # After seq k: the current text past what appends 1..k held ("Hello, " is 7 characters).
    assert streams.chunks == {
        f"after {after}": [{"messageId": message, "seq": 3, "delta": delta, "status": "COMPLETE"}]
        for after, delta in ((0, "Hello, there: edited"), (2, "there: edited"), (3, ": edited"))
    }


async def test_a_client_id_is_one_key_for_send_and_start_and_returns_what_it_stored(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    c = gid("Conversation", conversation)
    send = """mutation ($c: ID!, $k: String) { sendMessage(input: {conversationId: $c,
        content: "sent", clientId: $k}) { id role content status model } }"""
    started = await start(api, token, conversation, model="m1", clientId="streamed")
    await append(api, token, started["id"], 1, "so far")
    sent = (await api.data(send, {"c": c, "k": "sent"}, token=token))["sendMessage"]
    # The other mutation with a key already used: the message stored under it, as it is now.
    assert (await api.data(send, {"c": c, "k": "streamed"}, token=token))["sendMessage"] == {
        "id": started["id"],
        "role": "ASSISTANT",
        "content": "so far",
        "status": "STREAMING",
        "model": "m1",
    }
    assert await start(api, token, conversation, model="m2", clientId="sent") == {
        "id": sent["id"],
        "role": "USER",
        "content": "sent",
        "status": "COMPLETE",
        "model": None,
        "usage": None,
    }
    count = "query ($c: ID!) { node(id: $c) { ... on Conversation { messageCount } } }"
    assert await api.data(count, {"c": c}, token=token) == {"node": {"messageCount": 2}}


async def test_a_streaming_message_is_found_by_its_text_so_far(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    # RULES: search "sees a write as soon as it commits"; an append is a write (on SQLite the
    # FTS5 index holds what is finished, and a search stages the live streams' text: db.search).
    token, conversation = await owner_and_conversation(sessionmaker)
    await make_messages(sessionmaker, conversation_id=conversation, count=1, content="a fox den")
    message = (await start(api, token, conversation))["id"]
    await append(api, token, message, 1, "quick brown fo")
    await append(api, token, message, 2, "xes jump")

    async def found(query: str) -> list[tuple[str, str]]:
        data = await api.data(SEARCH_HITS, {"q": query}, token=token)
        return [
            (edge["node"]["message"]["content"], edge["node"]["message"]["status"])
            for edge in data["searchMessages"]["edges"]
        ]

    streaming = ("quick brown foxes jump", "STREAMING")
    assert await found("foxes jumping") == [streaming]
    assert await found("fox") == [streaming, ("a fox den", "COMPLETE")]
    assert await found("fox -quick") == [("a fox den", "COMPLETE")]
    await finish(api, token, message)
    assert await found("jumps") == [("quick brown foxes jump", "COMPLETE")]


SEARCH_PAGE = """
query ($q: String!, $first: Int, $after: String) {
  searchMessages(query: $q, first: $first, after: $after) {
    edges { node { message { id content status } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_search_pages_through_streaming_and_finished_hits_once_each(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner_and_conversation(sessionmaker)
    await make_messages(sessionmaker, conversation_id=conversation, count=6, content="a fox den")
    await make_messages(sessionmaker, conversation_id=conversation, count=20, content="cat")
    for words in ["fox", "fox fox and a fox"]:
        message = (await start(api, token, conversation))["id"]
        await append(api, token, message, 1, words)

    whole = await api.data(SEARCH_PAGE, {"q": "fox", "first": 50}, token=token)
    expected = [edge["node"]["message"]["id"] for edge in whole["searchMessages"]["edges"]]
    paged: list[str] = []
    after = None
    while True:
        data = await api.data(SEARCH_PAGE, {"q": "fox", "first": 1, "after": after}, token=token)
        paged += [edge["node"]["message"]["id"] for edge in data["searchMessages"]["edges"]]
        info = data["searchMessages"]["pageInfo"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert len(expected) == 8
    assert paged == expected
