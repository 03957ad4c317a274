"""Archive, pin, tags and read state (RULES.md, "Organize"; issue 16 items 2, 3 and 6), through
the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest

from schema.plan import PLAN_MISSED
from tests.factories import (
    BASE_TIME,
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, StatementCounter

UPDATE = """
mutation ($id: ID!, $input: UpdateConversationInput!) {
  updateConversation(id: $id, input: $input) { title archived pinned tags updatedAt }
}
"""
MARK = """
mutation ($id: ID!, $messageId: ID) {
  markConversationRead(id: $id, messageId: $messageId) {
    lastReadMessage { content } unreadCount
  }
}
"""
LIST = """
query ($filter: ConversationFilter) {
  me {
    conversations(first: 50, filter: $filter) { totalCount edges { node { title } } }
    conversationCount(filter: $filter)
  }
}
"""
TAGS = "query ($id: ID!) { user(id: $id) { tags } }"
PHONE_LIST = """
{
  me {
    conversations(first: 50) {
      edges {
        node {
          title pinned archived tags unreadCount
          lastMessage { content }
        }
      }
    }
  }
}
"""
CHANGES = "{ changes(first: 50) { edges { node { kind conversationId } } } }"
UNREAD = "query ($id: ID!) { conversation(id: $id) { unreadCount lastReadMessage { content } } }"


async def update(api: Api, token: str, conversation: str, **fields: Any) -> dict[str, Any]:
    data = await api.data(
        UPDATE, {"id": gid("Conversation", conversation), "input": fields}, token=token
    )
    result: dict[str, Any] = data["updateConversation"]
    return result


async def listed(
    api: Api, token: str, filter: dict[str, Any] | None = None
) -> tuple[list[str], int, int]:
    variables = {} if filter is None else {"filter": filter}
    me = (await api.data(LIST, variables, token=token))["me"]
    titles = [edge["node"]["title"] for edge in me["conversations"]["edges"]]
    return titles, me["conversations"]["totalCount"], me["conversationCount"]


async def test_the_filters_take_archived_pinned_and_tagged_conversations(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    _, archived, pinned, both = [
        await make_conversation(sessionmaker, owner_id=alice, title=title)
        for title in ("plain", "archived", "pinned", "both")
    ]
    await update(api, token, archived, archived=True, tags=["Work"])
    await update(api, token, pinned, pinned=True, tags=["work", "home"])
    await update(api, token, both, archived=True, pinned=True)

    assert await listed(api, token) == (["pinned", "plain"], 2, 2)
    assert await listed(api, token, {"archived": True}) == (["both", "archived"], 2, 2)
    assert await listed(api, token, {"archived": None}) == (
        ["both", "pinned", "archived", "plain"],
        4,
        4,
    )
    assert await listed(api, token, {"archived": None, "pinned": True}) == (
        ["both", "pinned"],
        2,
        2,
    )
    assert await listed(api, token, {"pinned": False}) == (["plain"], 1, 1)
    assert await listed(api, token, {"archived": None, "tag": " WORK "}) == (
        ["pinned", "archived"],
        2,
        2,
    )
    assert await listed(api, token, {"tag": "work"}) == (["pinned"], 1, 1)
    assert await listed(api, token, {"tag": "nothing"}) == ([], 0, 0)
    blank = await api.error(LIST, {"filter": {"tag": "  "}}, token=token)
    assert blank["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"filter.tag": "must be 1-50 characters"},
    }


INVISIBLE = "\u200b\u2060\ufeff\u3000\u00a0\u3164"  # zero-width, BOM, ideographic, filler


async def test_text_that_shows_nothing_is_blank_and_a_filter_tag_is_a_tag(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    """One trimming rule (`schema.validation.trimmed`) for every trimmed input: the tag filter
    takes a tag as `updateConversation` does (a 10,000-character one was accepted), and
    invisible characters at the ends are trimmed like whitespace."""
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice, title="kept")
    variables = {"id": gid("Conversation", conversation)}
    for tag in ("x" * 10_000, INVISIBLE):
        assert (await api.error(LIST, {"filter": {"tag": tag}}, token=token))["extensions"] == {
            "code": "BAD_USER_INPUT",
            "fields": {"filter.tag": "must be 1-50 characters"},
        }
    bad = await api.error(
        UPDATE,
        {**variables, "input": {"title": INVISIBLE, "tags": ["\u200b", f"{INVISIBLE}ok"]}},
        token=token,
    )
    assert bad["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"title": "must be 1-200 characters"},
    }
    # Direction marks stay in a text (they set how it reads) but are blank alone.
    bad = await api.error(
        UPDATE, {**variables, "input": {"tags": ["\u200f\u200b\u202e", "ok"]}}, token=token
    )
    assert bad["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"tags.0": "must be 1-50 characters"},
    }
    created = await api.error(
        'mutation { createConversation(input: {title: "\u200b \u200d"}) { id } }', token=token
    )
    assert created["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"title": "must be 1-200 characters"},
    }
    # Inner ones are kept (a joiner inside an emoji sequence); those at the ends go.
    family = "\U0001f469\u200d\U0001f467"
    done = await update(
        api,
        token,
        conversation,
        title=f"\u200b Plans{INVISIBLE}",
        tags=[f"{INVISIBLE}Ok\u200b", "OK", f"\ufeff{family}\u200d"],
    )
    assert (done["title"], done["tags"]) == ("Plans", ["Ok", family])
    assert await listed(api, token, {"tag": f"\u200bok{INVISIBLE}"}) == (["Plans"], 1, 1)
    assert (await api.data(TAGS, {"id": gid("User", alice)}, token=token))["user"] == {
        "tags": ["Ok", family]
    }


async def test_the_filtered_list_keeps_its_keyset_pages(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    made = [await make_conversation(sessionmaker, owner_id=alice, title=f"c{i}") for i in range(6)]
    for conversation in made[::2]:
        await update(api, token, conversation, pinned=True)
    query = """
    query ($after: String) {
      me { conversations(first: 2, after: $after, filter: {pinned: true}) {
        edges { node { title } } pageInfo { hasNextPage endCursor } } }
    }
    """
    titles, after = [], None
    while True:
        page = (await api.data(query, {"after": after}, token=token))["me"]["conversations"]
        titles += [edge["node"]["title"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert titles == ["c4", "c2", "c0"]


async def test_tags_are_trimmed_unique_caselessly_and_sorted(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    first = await make_conversation(sessionmaker, owner_id=alice, title="first")
    second = await make_conversation(sessionmaker, owner_id=alice, title="second")
    tags = await update(api, token, first, tags=[" work ", "Zebra", "WORK", "äpfel", "Apple"])
    # Sorted by caseless key (`db.folding.fold`), the same on both databases.
    assert tags["tags"] == ["Apple", "work", "Zebra", "äpfel"]
    await update(api, token, second, tags=["Work", "home"])
    assert (await api.data(TAGS, {"id": gid("User", alice)}, token=token))["user"] == {
        "tags": ["Apple", "home", "Work", "Zebra", "äpfel"]
    }
    # Replacing the set; an empty list clears it.
    assert (await update(api, token, first, tags=[]))["tags"] == []
    assert (await api.data(TAGS, {"id": gid("User", alice)}, token=token))["user"] == {
        "tags": ["home", "Work"]
    }


async def test_bad_tags_are_bad_input_and_change_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice, title="kept")
    await update(api, token, conversation, tags=["old"])
    variables = {"id": gid("Conversation", conversation)}
    bad = await api.error(
        UPDATE,
        {**variables, "input": {"title": "new", "tags": ["ok", "  ", "x" * 51]}},
        token=token,
    )
    assert bad["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"tags.1": "must be 1-50 characters", "tags.2": "must be 1-50 characters"},
    }
    many = await api.error(
        UPDATE, {**variables, "input": {"tags": [f"t{i}" for i in range(21)]}}, token=token
    )
    assert many["extensions"] == {"code": "BAD_USER_INPUT", "fields": {"tags": "at most 20 tags"}}
    twenty = await update(api, token, conversation, tags=[f"t{i:02}" for i in range(20)])
    assert len(twenty["tags"]) == 20
    await update(api, token, conversation, tags=["old"])
    query = "query ($id: ID!) { conversation(id: $id) { title tags } }"
    assert (await api.data(query, variables, token=token))["conversation"] == {
        "title": "kept",
        "tags": ["old"],
    }


async def test_organizing_adds_a_change_but_keeps_updated_at_and_a_no_op_adds_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice, title="same")
    before = await update(api, token, conversation)  # nothing given: nothing changes
    organized = await update(api, token, conversation, archived=True, pinned=True, tags=["a"])
    assert organized == {
        "title": "same",
        "archived": True,
        "pinned": True,
        "tags": ["a"],
        "updatedAt": before["updatedAt"],
    }
    await update(api, token, conversation, archived=True, pinned=True, tags=["a"], title="same")
    renamed = await update(api, token, conversation, title="new")
    assert renamed["updatedAt"] > before["updatedAt"]
    edges = (await api.data(CHANGES, token=token))["changes"]["edges"]
    kinds = [edge["node"]["kind"] for edge in edges]
    assert kinds == ["CONVERSATION_UPDATED", "CONVERSATION_UPDATED"]


async def test_organizing_another_users_conversation_is_not_found_and_their_tags_forbidden(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    bob = await make_user(sessionmaker)
    admin = await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=alice, title="mine")
    await update(api, token_for(alice), conversation, tags=["secret"])
    variables = {"id": gid("Conversation", conversation), "input": {"pinned": True}}
    error = await api.error(UPDATE, variables, token=token_for(bob))
    assert error["extensions"] == {"code": "NOT_FOUND"}
    mark = await api.error(MARK, {"id": gid("Conversation", conversation)}, token=token_for(bob))
    assert mark["extensions"] == {"code": "NOT_FOUND"}
    forbidden = await api.run(TAGS, {"id": gid("User", alice)}, token=token_for(bob))
    assert forbidden["data"] == {"user": {"tags": None}} or forbidden["data"] == {"user": None}
    assert [e["extensions"]["code"] for e in forbidden["errors"]] == ["FORBIDDEN"]
    assert (await api.data(TAGS, {"id": gid("User", alice)}, token=token_for(admin)))["user"] == {
        "tags": ["secret"]
    }
    assert (await update(api, token_for(admin), conversation, pinned=True))["pinned"] is True


async def test_read_state_never_moves_back_and_counts_what_the_owner_did_not_write(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    # USER, ASSISTANT, USER, ASSISTANT, USER, ASSISTANT
    ids = await make_messages(sessionmaker, conversation_id=conversation, count=6)
    key = gid("Conversation", conversation)
    fresh = (await api.data(UNREAD, {"id": key}, token=token))["conversation"]
    assert fresh == {"unreadCount": 3, "lastReadMessage": None}

    async def mark(message: int | None) -> dict[str, Any]:
        variables = {"id": key, "messageId": None if message is None else gid("Message", message)}
        result: dict[str, Any] = (await api.data(MARK, variables, token=token))[
            "markConversationRead"
        ]
        return result

    assert await mark(ids[2]) == {"lastReadMessage": {"content": "message 2"}, "unreadCount": 2}
    assert await mark(ids[1]) == {"lastReadMessage": {"content": "message 2"}, "unreadCount": 2}
    assert await mark(None) == {"lastReadMessage": {"content": "message 5"}, "unreadCount": 0}
    assert await mark(ids[4]) == {"lastReadMessage": {"content": "message 5"}, "unreadCount": 0}
    await make_messages(
        sessionmaker, conversation_id=conversation, count=2, start=BASE_TIME + timedelta(minutes=1)
    )
    assert (await api.data(UNREAD, {"id": key}, token=token))["conversation"] == {
        "unreadCount": 1,
        "lastReadMessage": {"content": "message 5"},
    }
    edges = (await api.data(CHANGES, token=token))["changes"]["edges"]
    assert [edge["node"]["kind"] for edge in edges] == ["CONVERSATION_UPDATED"] * 2
    # A message of another conversation is NOT_FOUND, and changes nothing.
    other = await make_conversation(sessionmaker, owner_id=alice)
    (stranger,) = await make_messages(sessionmaker, conversation_id=other, count=1)
    error = await api.error(MARK, {"id": key, "messageId": gid("Message", stranger)}, token=token)
    assert error["extensions"] == {"code": "NOT_FOUND"}


async def _phone_world(sm: Sessionmaker, count: int) -> str:
    alice = await make_user(sm)
    for index in range(count):
        conversation = await make_conversation(sm, owner_id=alice, title=f"c{index}")
        await make_messages(sm, conversation_id=conversation, count=3)
    return token_for(alice)


@pytest.mark.parametrize("count", [1, 20])
async def test_the_phones_list_runs_planned_in_a_fixed_number_of_statements(
    api: Api,
    sessionmaker: Sessionmaker,
    statements: StatementCounter,
    caplog: pytest.LogCaptureFixture,
    count: int,
    database_url: str,
) -> None:
    token = await _phone_world(sessionmaker, count)
    caplog.set_level(logging.DEBUG, logger="chatql.plan")
    first = await api.data(PHONE_LIST, token=token)
    statements.reset()
    # Again, with the viewer the process has read (on PostgreSQL its check then rides in the
    # first statement, whose rows carry the check's columns too).
    data = await api.data(PHONE_LIST, token=token)
    assert data == first
    edges = data["me"]["conversations"]["edges"]
    assert edges[0]["node"] == {
        "title": f"c{count - 1}",
        "pinned": False,
        "archived": False,
        "tags": [],
        "unreadCount": 1,
        "lastMessage": {"content": "message 2"},
    }
    assert len(edges) == count
    assert not [record for record in caplog.records if record.message == PLAN_MISSED]
    # auth (the viewer), the page, the unread counts, the last messages; on PostgreSQL the
    # viewer's check rides in the first of them.
    postgresql = database_url.startswith("postgresql")
    assert statements.count == (3 if postgresql else 4), statements.seen


async def test_the_export_writes_archived_pinned_and_tags(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice, title="kept")
    await update(api, token, conversation, archived=True, pinned=True, tags=["b", "A"])
    response = await api.client.get("/export", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    (line,) = [json.loads(text) for text in response.text.splitlines()]
    assert {key: line[key] for key in ("title", "archived", "pinned", "tags")} == {
        "title": "kept",
        "archived": True,
        "pinned": True,
        "tags": ["A", "b"],
    }


async def test_deleting_the_marked_message_keeps_the_mark_where_it_was(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    alice = await make_user(sessionmaker)
    token = token_for(alice)
    conversation = await make_conversation(sessionmaker, owner_id=alice)
    ids = await make_messages(sessionmaker, conversation_id=conversation, count=6)
    key = gid("Conversation", conversation)
    await api.data(MARK, {"id": key, "messageId": gid("Message", ids[3])}, token=token)
    delete = "mutation ($id: ID!) { deleteMessage(id: $id) { deletedId } }"
    await api.data(delete, {"id": gid("Message", ids[3])}, token=token)
    assert (await api.data(UNREAD, {"id": key}, token=token))["conversation"] == {
        "unreadCount": 1,
        "lastReadMessage": None,
    }
    # An earlier message is still earlier than the mark: it changes nothing.
    variables = {"id": key, "messageId": gid("Message", ids[2])}
    assert (await api.data(MARK, variables, token=token))["markConversationRead"] == {
        "lastReadMessage": None,
        "unreadCount": 1,
    }
