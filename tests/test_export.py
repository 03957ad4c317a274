"""Issue 16 items 4 and 5: `GET /export` (NDJSON), `GET /export/conversations/<id>.md`, and the
`import` and `import-chatgpt` commands, on both databases, through the real app and CLI."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Change, Conversation, Message, MessageRevision, User
from schema.errors import BAD_TOKEN, LOGIN_REQUIRED
from tests.factories import (
    BASE_TIME,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api
from tests.process import run_command, serve
from tests.test_ops import sample

DATA = Path(__file__).resolve().parent / "data"
Sessionmaker = async_sessionmaker[AsyncSession]


async def export_lines(api: Api, token: str) -> list[dict[str, Any]]:
    response = await api.client.get("/export", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n") or response.text == ""
    return [json.loads(line) for line in response.text.splitlines()]


async def edit(sm: Sessionmaker, message_id: int, earlier: list[str], content: str) -> None:
    """Make `message_id` an edited message: `earlier` its past contents, `content` now."""
    async with sm() as session, session.begin():
        for number, text in enumerate(earlier, start=1):
            await session.execute(
                insert(MessageRevision).values(
                    message_id=message_id,
                    revision=number,
                    content=text,
                    created_at=BASE_TIME + timedelta(minutes=number),
                )
            )
        await session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(
                content=content,
                revision=len(earlier) + 1,
                edited_at=BASE_TIME + timedelta(hours=1),
            )
        )


# ---- GET /export -------------------------------------------------------------------------------


async def test_export_is_every_conversation_of_the_viewer_as_ndjson(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    other = await make_user(sessionmaker)
    talk = await make_conversation(sessionmaker, owner_id=owner, title="Talk")
    empty = await make_conversation(sessionmaker, owner_id=owner, title="Empty")
    await make_messages(
        sessionmaker, conversation_id=await make_conversation(sessionmaker, owner_id=other), count=2
    )
    first, second = await make_messages(sessionmaker, conversation_id=talk, count=2)
    await edit(sessionmaker, second, ["message 1", "second try"], "third try")
    talk_row = await _conversation(sessionmaker, talk)
    empty_row = await _conversation(sessionmaker, empty)

    lines = await export_lines(api, token_for(owner))

    expected = {
        talk: {
            "id": gid("Conversation", talk),
            "title": "Talk",
            "createdAt": talk_row,
            "updatedAt": talk_row,
            "archived": False,
            "pinned": False,
            "tags": [],
            "messages": [
                {
                    "id": gid("Message", first),
                    "parentId": None,
                    "role": "USER",
                    "content": "message 0",
                    "model": None,
                    "createdAt": "2026-01-01T00:00:00.000000+00:00",
                    "editedAt": None,
                    "revisions": [],
                    "status": "COMPLETE",
                    "usage": None,
                },
                {
                    "id": gid("Message", second),
                    "parentId": gid("Message", first),
                    "role": "ASSISTANT",
                    "content": "third try",
                    "model": None,
                    "createdAt": "2026-01-01T00:00:01.000000+00:00",
                    "editedAt": "2026-01-01T01:00:00.000000+00:00",
                    "revisions": [
                        {
                            "revision": 1,
                            "content": "message 1",
                            "createdAt": "2026-01-01T00:01:00.000000+00:00",
                        },
                        {
                            "revision": 2,
                            "content": "second try",
                            "createdAt": "2026-01-01T00:02:00.000000+00:00",
                        },
                    ],
                    "status": "COMPLETE",
                    "usage": None,
                },
            ],
        },
        empty: {
            "id": gid("Conversation", empty),
            "title": "Empty",
            "createdAt": empty_row,
            "updatedAt": empty_row,
            "archived": False,
            "pinned": False,
            "tags": [],
            "messages": [],
        },
    }
    assert lines == [expected[key] for key in sorted(expected)]  # in conversation id order


async def test_export_spans_batches_without_gaps_or_repeats(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    """More conversations than one batch, some empty, and a conversation of more messages than
    one batch: every message once, in order, in its own conversation."""
    owner = await make_user(sessionmaker)
    expected: dict[str, list[int]] = {}
    for index in range(230):
        conversation = await make_conversation(sessionmaker, owner_id=owner)
        ids = (
            []
            if index % 3 == 0
            else await make_messages(sessionmaker, conversation_id=conversation, count=2)
        )
        expected[gid("Conversation", conversation)] = ids
    big = await make_conversation(sessionmaker, owner_id=owner)
    expected[gid("Conversation", big)] = await make_messages(
        sessionmaker, conversation_id=big, count=1201
    )

    lines = await export_lines(api, token_for(owner))

    assert {line["id"]: [m["id"] for m in line["messages"]] for line in lines} == {
        key: [gid("Message", i) for i in ids] for key, ids in expected.items()
    }
    assert len(lines) == len(expected)


async def test_export_without_a_valid_token_is_401_unauthenticated(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    path = f"/export/conversations/{quote(gid('Conversation', conversation), safe='')}.md"
    for url in ("/export", path):
        missing = await api.client.get(url)
        forged = await api.client.get(url, headers={"Authorization": "Bearer not-a-token"})
        assert (missing.status_code, missing.json()) == (
            401,
            {"errors": [{"message": LOGIN_REQUIRED, "extensions": {"code": "UNAUTHENTICATED"}}]},
        )
        assert (forged.status_code, forged.json()) == (
            401,
            {"errors": [{"message": BAD_TOKEN, "extensions": {"code": "UNAUTHENTICATED"}}]},
        )
        assert missing.headers["www-authenticate"] == "Bearer"
        posted = await api.client.post(url, headers={"Authorization": f"Bearer {token_for(owner)}"})
        assert (posted.status_code, posted.headers["allow"]) == (405, "GET")


async def test_markdown_of_a_known_conversation_equals_the_committed_file(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(
        sessionmaker, owner_id=owner, title="Boiling  eggs", updated_at=BASE_TIME
    )
    ids = await make_messages(
        sessionmaker,
        conversation_id=conversation,
        count=3,
        content="Line {i}\n\n```python\nprint({i})\n```\n",
    )
    await edit(sessionmaker, ids[1], ["draft"], "Put it in boiling water.\n\n- 9 minutes")
    url = f"/export/conversations/{quote(gid('Conversation', conversation), safe='')}.md"

    response = await api.client.get(url, headers={"Authorization": f"Bearer {token_for(owner)}"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.text == (DATA / "export-conversation.md").read_text(encoding="utf-8")


async def test_markdown_of_another_users_conversation_is_404_and_a_bad_id_400(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker)
    stranger = await make_user(sessionmaker)
    admin = await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=owner, title="Mine")
    url = f"/export/conversations/{quote(gid('Conversation', conversation), safe='')}.md"
    nobody = gid("Conversation", "00000000-0000-4000-8000-000000000000")

    theirs = await api.client.get(url, headers={"Authorization": f"Bearer {token_for(stranger)}"})
    missing = await api.client.get(
        f"/export/conversations/{quote(nobody, safe='')}.md",
        headers={"Authorization": f"Bearer {token_for(stranger)}"},
    )
    malformed = await api.client.get(
        f"/export/conversations/{quote(gid('User', owner), safe='')}.md",
        headers={"Authorization": f"Bearer {token_for(stranger)}"},
    )
    by_admin = await api.client.get(url, headers={"Authorization": f"Bearer {token_for(admin)}"})

    not_found = {"errors": [{"message": "Not found.", "extensions": {"code": "NOT_FOUND"}}]}
    assert (theirs.status_code, theirs.json()) == (404, not_found)
    assert (missing.status_code, missing.json()) == (404, not_found)
    assert (malformed.status_code, malformed.json()) == (
        400,
        {
            "errors": [
                {
                    "message": "Invalid input.",
                    "extensions": {"code": "BAD_USER_INPUT", "fields": {"id": "not a valid id"}},
                }
            ]
        },
    )
    assert (by_admin.status_code, by_admin.text.splitlines()[0]) == (200, "# Mine")


async def test_export_is_charged_to_the_budget_and_refused_past_it(
    settings: Any, sessionmaker: Sessionmaker
) -> None:
    from tests.helpers import serve as serve_app

    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    await make_messages(sessionmaker, conversation_id=conversation, count=30)
    budgeted = settings.model_copy(update={"cost_budget_per_minute": 60, "cost_burst": 40})
    headers = {"Authorization": f"Bearer {token_for(owner)}"}
    async with serve_app(budgeted) as api:
        first = await api.client.get("/export", headers=headers)
        second = await api.client.get("/export", headers=headers)

    assert first.status_code == 200
    assert first.headers["ratelimit"] == '"cost";r=9;t=31'  # 40 - (1 conversation + 30)
    assert second.status_code == 429
    assert second.json()["errors"][0]["extensions"] == {
        "code": "RATE_LIMITED",
        "retryAfter": second.json()["errors"][0]["extensions"]["retryAfter"],
    }
    assert int(second.headers["retry-after"]) >= 20


async def test_a_100000_message_export_grows_the_servers_memory_by_under_30_mb(
    database_url: str, tmp_path: Path, sessionmaker: Sessionmaker
) -> None:
    """A real server process: its peak RSS (VmHWM) before and after streaming an export of
    about 35 MB."""
    owner = await make_user(sessionmaker)
    warm = await make_user(sessionmaker)
    await make_messages(
        sessionmaker,
        conversation_id=await make_conversation(sessionmaker, owner_id=warm),
        count=600,
    )
    text = "x" * 300 + " {i}"
    for _ in range(20):
        conversation = await make_conversation(sessionmaker, owner_id=owner)
        await make_messages(sessionmaker, conversation_id=conversation, count=5000, content=text)

    with serve(database_url, tmp_path) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=300) as client:
            warmed = await client.get(
                "/export", headers={"Authorization": f"Bearer {token_for(warm)}"}
            )
            assert warmed.status_code == 200
            before = _peak_rss(served.process.pid)
            received = messages = 0
            headers = {"Authorization": f"Bearer {token_for(owner)}"}
            async with client.stream("GET", "/export", headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    received += len(line)
                    messages += len(json.loads(line)["messages"])
            after = _peak_rss(served.process.pid)

    assert messages == 100_000
    assert received > 30_000_000
    assert after - before < 30 * 1024 * 1024, (before, after)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def _conversation(sm: Sessionmaker, conversation_id: str) -> str:
    async with sm() as session:
        row = (
            await session.execute(select(Conversation).where(Conversation.id == conversation_id))
        ).scalar_one()
    return row.updated_at.astimezone(UTC).isoformat(timespec="microseconds")


# ---- import (round trip) -----------------------------------------------------------------------


def _without_ids(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines with ids left out (each `parentId` as `parent`, the index of that message in
    the line), in (createdAt, title) order."""
    bare = []
    for line in lines:
        messages = []
        places = {message["id"]: index for index, message in enumerate(line["messages"])}
        for message in line["messages"]:
            parent = None if message["parentId"] is None else places[message["parentId"]]
            kept = {k: v for k, v in message.items() if k not in ("id", "parentId")}
            messages.append({**kept, "parent": parent})
        bare.append({**{k: v for k, v in line.items() if k != "id"}, "messages": messages})
    return sorted(bare, key=lambda line: (line["createdAt"], line["title"]))


async def test_an_export_imported_into_another_user_exports_the_same(
    api: Api, sessionmaker: Sessionmaker, database_url: str, tmp_path: Path
) -> None:
    owner = await make_user(sessionmaker)
    await make_user(sessionmaker, username="heir")
    heir = await _user_id(sessionmaker, "heir")
    for index in range(3):
        conversation = await make_conversation(sessionmaker, owner_id=owner, title=f"T{index}")
        if index:
            ids = await make_messages(
                sessionmaker, conversation_id=conversation, count=index * 2, content="é {i} 😀"
            )
            await edit(sessionmaker, ids[-1], ["old"], "new")
            if index == 2:  # a branch: the last answer regenerated (the active branch's leaf)
                send = "mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id } }"
                regenerated = {
                    "conversationId": gid("Conversation", conversation),
                    "content": "regenerated",
                    "alternativeTo": gid("Message", ids[-1]),
                }
                await api.data(send, {"input": regenerated}, token=token_for(owner))
        else:
            # What streamed answers may hold: nothing yet, or more than a sent message may.
            await make_messages(sessionmaker, conversation_id=conversation, count=1, content="")
            await make_messages(
                sessionmaker, conversation_id=conversation, count=1, content="x" * 40_000 + "{i}"
            )
        # Every field the export writes, away from its default somewhere.
        organized = {"archived": index == 1, "pinned": index == 2, "tags": [f"Tag{index}", "é"]}
        await api.data(
            ORGANIZE,
            {"id": gid("Conversation", conversation), "input": organized},
            token=token_for(owner),
        )
        await streamed(sessionmaker, conversation, index)
    exported = await api.client.get(
        "/export", headers={"Authorization": f"Bearer {token_for(owner)}"}
    )
    path = tmp_path / "export.ndjson"
    path.write_bytes(exported.content)
    original = [json.loads(line) for line in exported.text.splitlines()]
    assert {m["status"] for line in original for m in line["messages"]} == set(STATUSES)

    finished = run_command(
        ["import", str(path), "--user", "heir"], database_url=database_url, cwd=tmp_path
    )

    assert (finished.returncode, finished.stdout) == (
        0,
        f"imported 3 conversations and 9 messages from {path} for heir\n",
    )
    again = await export_lines(api, token_for(heir))
    assert _without_ids(again) == _without_ids(original)
    # The tree came back, the newest message's branch active.
    branched = next(line for line in again if line["title"] == "T2")
    active = """query ($id: ID!) {
      conversation(id: $id) { messageCount messages(first: 9) { edges { node { content } } } }
    }"""
    found = await api.data(active, {"id": branched["id"]}, token=token_for(heir))
    assert found["conversation"]["messageCount"] == 4
    assert [e["node"]["content"] for e in found["conversation"]["messages"]["edges"]] == [
        "é 0 😀",
        "é 1 😀",
        "é 2 😀",
        "regenerated",
    ]
    assert await _feed(sessionmaker, heir) == _messages_by_conversation(again)
    # The tags are the filter's and `User.tags`' too, not only the export's.
    tagged = (
        'query { me { tags conversations(filter: {archived: null, tag: " TAG1"}) { totalCount } } }'
    )
    assert (await api.data(tagged, token=token_for(heir)))["me"] == {
        "tags": ["Tag0", "Tag1", "Tag2", "é"],
        "conversations": {"totalCount": 1},
    }


ORGANIZE = (
    "mutation ($id: ID!, $input: UpdateConversationInput!) "
    "{ updateConversation(id: $id, input: $input) { id } }"
)
STATUSES = ("COMPLETE", "FAILED", "CANCELLED")


async def streamed(sm: Sessionmaker, conversation_id: str, index: int) -> None:
    """The conversation's last message made a streamed answer's: a model, a final status and,
    but for the first, its usage."""
    async with sm() as session, session.begin():
        last = (
            await session.execute(
                select(Message.id)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(1)
            )
        ).scalar_one()
        await session.execute(
            update(Message)
            .where(Message.id == last)
            .values(
                model=f"model-{index}",
                status=STATUSES[index],
                input_tokens=None if index == 0 else 10 * index,
                output_tokens=None if index == 0 else 100_000_000,
            )
        )


async def test_a_broken_export_stores_nothing_and_names_the_line(
    api: Api, sessionmaker: Sessionmaker, database_url: str, tmp_path: Path
) -> None:
    owner = await make_user(sessionmaker)
    await make_user(sessionmaker, username="heir")
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    await make_messages(sessionmaker, conversation_id=conversation, count=2)
    exported = await api.client.get(
        "/export", headers={"Authorization": f"Bearer {token_for(owner)}"}
    )
    line = json.loads(exported.text)
    line["messages"][1]["createdAt"] = "yesterday"
    path = tmp_path / "broken.ndjson"
    path.write_text(exported.text + json.dumps(line) + "\n")
    deep = tmp_path / "deep.ndjson"
    deep.write_text(exported.text + "[" * 100_000 + "]" * 100_000 + "\n")
    twice = json.loads(exported.text)
    twice["messages"][1]["id"] = twice["messages"][0]["id"]
    listed = json.loads(exported.text)
    listed["messages"][1]["parentId"] = [twice["messages"][0]["id"]]
    hostile = {"twice": twice, "listed": listed}
    for name, value in hostile.items():
        (tmp_path / f"{name}.ndjson").write_text(json.dumps(value) + "\n")

    finished = run_command(
        ["import", str(path), "--user", "heir"], database_url=database_url, cwd=tmp_path
    )
    nested = run_command(
        ["import", str(deep), "--user", "heir"], database_url=database_url, cwd=tmp_path
    )
    refused = [
        run_command(
            ["import", f"{name}.ndjson", "--user", "heir"], database_url=database_url, cwd=tmp_path
        )
        for name in hostile
    ]
    unknown = run_command(
        ["import", str(path), "--user", "nobody"], database_url=database_url, cwd=tmp_path
    )

    assert (finished.returncode, finished.stdout, finished.stderr) == (
        2,
        "",
        f"error: {path}: line 2: messages.1.createdAt: not an ISO 8601 date and time: "
        "'yesterday'; nothing was imported\n",
    )
    assert (nested.returncode, nested.stdout, nested.stderr) == (
        2,
        "",
        f"error: {deep}: line 2: not JSON (nested too deeply); nothing was imported\n",
    )
    assert [(r.returncode, r.stdout, r.stderr) for r in refused] == [
        (
            2,
            "",
            "error: twice.ndjson: line 1: messages.1.id: also the id of messages.0; nothing "
            "was imported\n",
        ),
        (
            2,
            "",
            "error: listed.ndjson: line 1: messages.1.parentId: not the id of a message of "
            "this line; nothing was imported\n",
        ),
    ]
    assert (unknown.returncode, unknown.stderr) == (2, "error: no user named 'nobody'\n")
    assert await _counts(sessionmaker) == (1, 2)


# ---- import-chatgpt ----------------------------------------------------------------------------


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


async def test_import_chatgpt_keeps_structure_order_roles_and_times(
    api: Api, sessionmaker: Sessionmaker, database_url: str, tmp_path: Path
) -> None:
    await make_user(sessionmaker, username="bringer")
    user = await _user_id(sessionmaker, "bringer")
    path = DATA / "chatgpt-conversations.json"
    before = time.time()

    finished = run_command(
        ["import-chatgpt", str(path), "--user", "bringer"], database_url=database_url, cwd=tmp_path
    )

    assert (finished.returncode, finished.stdout) == (
        0,
        f"imported 4 conversations and 15 messages from {path} for bringer; 1 conversations had "
        "branches: every branch was imported, the current path of each is its active branch\n",
    )
    # Not a terminal: the progress is one log line.
    (progress,) = [json.loads(line) for line in finished.stderr.splitlines()]
    assert (progress["message"], progress["table"], progress["rows"]) == (
        "conversations written",
        "conversations",
        4,
    )
    lines = _without_ids(await export_lines(api, token_for(user)))
    untitled = lines.pop()  # no times at all: it was made at the import
    assert untitled["title"] == "Untitled" and untitled["messages"] == []
    assert untitled["createdAt"] == untitled["updatedAt"] >= _at(before)

    def message(role: str, content: str, seconds: float, parent: int | None) -> dict[str, Any]:
        at = _at(seconds)
        return {
            "role": role,
            "content": content,
            "model": None,
            "createdAt": at,
            "editedAt": None,
            "revisions": [],
            "parent": parent,
            "status": "COMPLETE",
            "usage": None,
        }

    def conversation(title: str, start: float, end: float, *messages: Any) -> dict[str, Any]:
        return {
            "title": title,
            "createdAt": _at(start),
            "updatedAt": _at(end),
            "archived": False,
            "pinned": False,
            "tags": [],
            "messages": list(messages),
        }

    assert lines == [
        conversation(
            "Boiling eggs",
            1700000000.0,
            1700000010.0,
            message("USER", "How do I boil an egg?", 1700000000.5, None),
            message("ASSISTANT", "Put it in boiling water for 9 minutes.", 1700000003.25, 0),
        ),
        conversation(  # every branch, in time order; the current path is the active branch
            "Primes",
            1700100000.0,
            1700100007.0,
            message("SYSTEM", "You are a terse assistant.", 1700100000.0, None),
            message("USER", "Name a prime.", 1700100001.0, 0),
            message("ASSISTANT", "4", 1700100002.0, 1),
            message("USER", "That is not prime.", 1700100003.0, 2),
            message("ASSISTANT", "7", 1700100005.0, 1),
            message("USER", "Another?", 1700100006.0, 4),
            message("ASSISTANT", "11", 1700100007.0, 5),
            message("USER", "Name an even prime.", 1700100008.0, 0),
            message("ASSISTANT", "2", 1700100009.0, 7),
        ),
        conversation(  # the tool's output skipped: the answer after it follows the one before
            "Code output",
            1700200000.0,
            1700200010.0,
            message("USER", "What does this print?", 1700200000.0, None),
            message("ASSISTANT", "print(6 * 7)", 1700200001.0, 0),
            message("ASSISTANT", "It prints 42.", 1700200001.0, 1),  # no time: the one before's
            message("USER", "Thanks!", 1700200010.0, 2),
        ),
    ]
    primes = next(
        line for line in await export_lines(api, token_for(user)) if line["title"] == "Primes"
    )
    active = await api.data(
        """query ($id: ID!) { conversation(id: $id) {
          currentLeaf { content } messageCount
          messages(first: 20) { edges { node { content siblings { content } } } }
        } }""",
        {"id": primes["id"]},
        token=token_for(user),
    )
    assert active["conversation"] == {
        "currentLeaf": {"content": "11"},
        "messageCount": 5,
        "messages": {
            "edges": [
                {"node": {"content": content, "siblings": [{"content": s} for s in siblings]}}
                for content, siblings in (
                    ("You are a terse assistant.", ["You are a terse assistant."]),
                    ("Name a prime.", ["Name a prime.", "Name an even prime."]),
                    ("7", ["4", "7"]),
                    ("Another?", ["Another?"]),
                    ("11", ["11"]),
                )
            ]
        },
    }
    assert await _feed(sessionmaker, user) == _messages_by_conversation(
        await export_lines(api, token_for(user))
    )


async def test_a_broken_chatgpt_file_stores_nothing_and_says_where(
    sessionmaker: Sessionmaker, database_url: str, tmp_path: Path
) -> None:
    await make_user(sessionmaker, username="bringer")
    conversations = json.loads((DATA / "chatgpt-conversations.json").read_text())
    conversations[2]["mapping"]["a-3b"]["message"]["author"]["role"] = "robot"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(conversations))
    truncated = tmp_path / "truncated.json"
    truncated.write_text('[{"title": "x",\n "mapping": {')
    orphan = json.loads((DATA / "chatgpt-conversations.json").read_text())
    orphan[1]["mapping"]["u-2c"]["parent"] = "gone"
    orphaned = tmp_path / "orphan.json"
    orphaned.write_text(json.dumps(orphan))
    # Hostile files: children in a cycle (no current_node, so the last children are followed),
    # children that are not a list of node ids, and nesting too deep for the JSON parser.
    looped = tmp_path / "looped.json"
    looped.write_text(
        json.dumps(
            [
                {
                    "id": "c-x",
                    "mapping": {
                        "r": {"parent": None, "children": ["s"], "message": None},
                        "s": {"parent": "r", "children": ["r"], "message": None},
                    },
                }
            ]
        )
    )
    numbered = tmp_path / "numbered.json"
    numbered.write_text(json.dumps([{"id": "c-y", "mapping": {"r": {"children": 5}}}]))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)

    results = [
        run_command(
            ["import-chatgpt", str(path), "--user", "bringer"],
            database_url=database_url,
            cwd=tmp_path,
        )
        for path in (broken, truncated, orphaned, looped, numbered, deep)
    ]

    assert [(r.returncode, r.stdout, r.stderr) for r in results] == [
        (
            2,
            "",
            f"error: {broken}: conversation 2 (id 'c-3'), node 'a-3b': message.author.role: "
            "'robot' is not user, assistant, system or tool; nothing was imported\n",
        ),
        (
            2,
            "",
            f"error: {truncated}: not JSON at line 2 column 14 (character 29): Expecting "
            "property name enclosed in double quotes; nothing was imported\n",
        ),
        (
            2,
            "",
            f"error: {orphaned}: conversation 1 (id 'c-2'), node 'u-2c': parent: 'gone' is "
            "not a node of the mapping; nothing was imported\n",
        ),
        (
            2,
            "",
            f"error: {looped}: conversation 0 (id 'c-x'), node 's': children: the children "
            "form a cycle; nothing was imported\n",
        ),
        (
            2,
            "",
            f"error: {numbered}: conversation 0 (id 'c-y'), node 'r': children: must be a "
            "list of node ids; nothing was imported\n",
        ),
        (2, "", f"error: {deep}: not JSON: nested too deeply; nothing was imported\n"),
    ]
    assert await _counts(sessionmaker) == (0, 0)


async def _user_id(sm: Sessionmaker, username: str) -> int:
    async with sm() as session:
        return int(
            (await session.execute(select(User.id).where(User.username == username))).scalar_one()
        )


async def _counts(sm: Sessionmaker) -> tuple[int, int]:
    async with sm() as session:
        conversations = (
            await session.execute(select(func.count()).select_from(Conversation))
        ).scalar_one()
        messages = (await session.execute(select(func.count()).select_from(Message))).scalar_one()
    return int(conversations), int(messages)


async def _feed(sm: Sessionmaker, user_id: int) -> dict[str, list[str]]:
    """The user's change feed, which must be each conversation's CONVERSATION_CREATED followed
    by a MESSAGE_ADDED for each of its messages: their global ids by conversation."""
    async with sm() as session:
        changes = await session.execute(
            select(Change.kind, Change.conversation_id, Change.message_id)
            .where(Change.user_id == user_id)
            .order_by(Change.position)
        )
        found: dict[str, list[str]] = {}
        for kind, conversation_id, message_id in changes.all():
            key = gid("Conversation", conversation_id)
            if kind == "CONVERSATION_CREATED":
                assert message_id is None and key not in found
                found[key] = []
            else:
                assert (kind, key) == ("MESSAGE_ADDED", list(found)[-1])
                assert message_id is not None
                found[key].append(gid("Message", message_id))
        return found


def _messages_by_conversation(lines: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {line["id"]: [message["id"] for message in line["messages"]] for line in lines}


async def test_an_export_is_logged_and_counted_as_an_operation(
    api: Api, sessionmaker: Sessionmaker, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await make_user(sessionmaker)
    await make_messages(
        sessionmaker,
        conversation_id=await make_conversation(sessionmaker, owner_id=owner),
        count=3,
    )
    caplog.set_level(logging.INFO, logger="chatql.request")
    ok_before = sample("chatql_graphql_requests_total", operation="export", outcome="ok")
    refused_before = sample("chatql_graphql_requests_total", operation="none", outcome="http_401")

    done = await api.client.get("/export", headers={"Authorization": f"Bearer {token_for(owner)}"})
    refused = await api.client.get("/export")

    lines = [dict(r.fields) for r in caplog.records if r.name == "chatql.request"]  # type: ignore[attr-defined]
    assert [
        (line["method"], line["path"], line["status"], line["operation"], line["outcome"])
        for line in lines
    ] == [("GET", "/export", 200, "export", "ok"), ("GET", "/export", 401, None, "http_401")]
    assert [line["request_id"] for line in lines] == [
        done.headers["x-request-id"],
        refused.headers["x-request-id"],
    ]
    assert lines[0]["statements"] >= 3  # the viewer, the conversations, the messages
    assert (
        sample("chatql_graphql_requests_total", operation="export", outcome="ok") == ok_before + 1
    )
    assert (
        sample("chatql_graphql_requests_total", operation="none", outcome="http_401")
        == refused_before + 1
    )


def test_import_checks_each_restored_field_by_the_apis_rules() -> None:
    """What `import` restores besides the messages' text is checked as the API checks it (a
    `BrokenFile` naming the line and the field); a message exported while it streamed comes
    back FAILED with its text; fields an older export lacks take their defaults."""
    from schema.imports import BrokenFile, chatql_lines

    stamp = "2026-01-01T00:00:00.000000+00:00"
    message = {"role": "ASSISTANT", "content": "so far", "createdAt": stamp}
    line = {"title": "T", "createdAt": stamp, "updatedAt": stamp, "messages": [message]}

    def problem(**changes: Any) -> str:
        broken = {**line, **changes}
        with pytest.raises(BrokenFile) as caught:
            list(chatql_lines([json.dumps(line), json.dumps(broken)]))
        return str(caught.value)

    def message_problem(**changes: Any) -> str:
        return problem(messages=[{**message, **changes}])

    assert [
        problem(tags=["ok", "x" * 51, "\u200b"]),
        problem(tags=[f"t{i}" for i in range(21)]),
        problem(tags="work"),
        problem(archived="yes"),
        problem(title="\u200b "),
        message_problem(status="DONE"),
        message_problem(model=""),
        message_problem(usage={"inputTokens": -1, "outputTokens": 2}),
        message_problem(usage={"inputTokens": 1}),
    ] == [
        "line 2: tags.1: must be 1-50 characters; tags.2: must be 1-50 characters",
        "line 2: tags: at most 20 tags",
        "line 2: tags: must be a list of strings",
        "line 2: archived: must be true or false",
        "line 2: title: must be 1-200 characters",
        "line 2: messages.0.status: must be COMPLETE, FAILED or CANCELLED",
        "line 2: messages.0.model: must be 1-100 characters",
        "line 2: messages.0.usage.inputTokens: must be 0-100,000,000",
        "line 2: messages.0.usage.outputTokens: must be an integer",
    ]
    streamed = {**message, "status": "STREAMING", "model": "m", "usage": None}
    full = {**line, "archived": True, "pinned": True, "tags": [" b", "A", "a"]}
    [old, new] = chatql_lines([json.dumps(line), json.dumps({**full, "messages": [streamed]})])
    assert (old.archived, old.pinned, old.tags, old.messages[0].status.value) == (
        False,
        False,
        [],
        "COMPLETE",
    )
    assert (new.archived, new.pinned, new.tags) == (True, True, ["A", "b"])
    assert [(m.content, m.status.value, m.model, m.usage) for m in new.messages] == [
        ("so far", "FAILED", "m", None)
    ]
