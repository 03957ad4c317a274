from __future__ import annotations

from typing import Any

import pytest

from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api

MESSAGES = """
query ($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  conversation(id: $id) {
    messages(first: $first, after: $after, last: $last, before: $before) {
      totalCount
      edges { cursor node { content } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}
"""


async def _page(api: Api, token: str, conversation: str, **args: Any) -> dict[str, Any]:
    data = await api.data(MESSAGES, {"id": gid("Conversation", conversation), **args}, token=token)
    page: dict[str, Any] = data["conversation"]["messages"]
    return page


def _contents(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["content"] for edge in page["edges"]]


@pytest.fixture
async def setup(sessionmaker: Sessionmaker) -> tuple[str, str]:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    await make_messages(sessionmaker, conversation_id=conversation, count=45)
    return token_for(user), conversation


async def test_walking_45_messages_forwards_has_no_gaps_or_repeats(
    api: Api, setup: tuple[str, str]
) -> None:
    token, conversation = setup
    seen: list[str] = []
    flags: list[tuple[bool, bool]] = []
    after = None
    while True:
        page = await _page(api, token, conversation, first=10, after=after)
        assert page["totalCount"] == 45
        seen += _contents(page)
        info = page["pageInfo"]
        flags.append((info["hasPreviousPage"], info["hasNextPage"]))
        assert info["startCursor"] == page["edges"][0]["cursor"]
        assert info["endCursor"] == page["edges"][-1]["cursor"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert seen == [f"message {i}" for i in range(45)]
    assert flags == [(False, True), (True, True), (True, True), (True, True), (True, False)]


async def test_walking_45_messages_backwards_has_no_gaps_or_repeats(
    api: Api, setup: tuple[str, str]
) -> None:
    token, conversation = setup
    pages: list[list[str]] = []
    flags: list[tuple[bool, bool]] = []
    before = None
    while True:
        page = await _page(api, token, conversation, last=10, before=before)
        pages.append(_contents(page))
        info = page["pageInfo"]
        flags.append((info["hasPreviousPage"], info["hasNextPage"]))
        if not info["hasPreviousPage"]:
            break
        before = info["startCursor"]
    assert [c for page in reversed(pages) for c in page] == [f"message {i}" for i in range(45)]
    assert pages[0] == [f"message {i}" for i in range(35, 45)]
    assert pages[-1] == [f"message {i}" for i in range(5)]
    assert flags == [(True, False), (True, True), (True, True), (True, True), (False, True)]


async def test_the_page_after_the_last_item_is_empty_with_exact_flags(
    api: Api, setup: tuple[str, str]
) -> None:
    token, conversation = setup
    last = await _page(api, token, conversation, last=1)
    page = await _page(api, token, conversation, first=5, after=last["pageInfo"]["endCursor"])
    assert page["edges"] == []
    assert page["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": None,
        "endCursor": None,
    }


async def test_before_alone_gives_the_first_twenty_before_the_cursor(
    api: Api, setup: tuple[str, str]
) -> None:
    token, conversation = setup
    everything = await _page(api, token, conversation, first=100)
    cursor = everything["edges"][30]["cursor"]
    page = await _page(api, token, conversation, before=cursor)
    assert _contents(page) == [f"message {i}" for i in range(20)]
    assert (page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) == (False, True)


async def test_after_and_before_together_bound_the_window(api: Api, setup: tuple[str, str]) -> None:
    token, conversation = setup
    everything = await _page(api, token, conversation, first=100)
    after, before = everything["edges"][9]["cursor"], everything["edges"][15]["cursor"]
    page = await _page(api, token, conversation, first=3, after=after, before=before)
    assert _contents(page) == ["message 10", "message 11", "message 12"]
    assert page["pageInfo"]["hasPreviousPage"] is True
    assert page["pageInfo"]["hasNextPage"] is True
    page = await _page(api, token, conversation, last=10, after=after, before=before)
    assert _contents(page) == [f"message {i}" for i in range(10, 15)]
    assert page["pageInfo"]["hasPreviousPage"] is True
    assert page["pageInfo"]["hasNextPage"] is True


async def test_a_page_after_new_inserts_continues_where_it_left_off(
    api: Api, sessionmaker: Sessionmaker, setup: tuple[str, str]
) -> None:
    token, conversation = setup
    first = await _page(api, token, conversation, first=10)
    # New messages land at the end, older history is imported before the cursor.
    from datetime import timedelta

    from tests.factories import BASE_TIME

    await make_messages(
        sessionmaker,
        conversation_id=conversation,
        count=3,
        start=BASE_TIME - timedelta(days=1),
        content="older {i}",
    )
    await make_messages(
        sessionmaker,
        conversation_id=conversation,
        count=3,
        start=BASE_TIME + timedelta(days=1),
        content="newer {i}",
    )
    second = await _page(api, token, conversation, first=10, after=first["pageInfo"]["endCursor"])
    assert _contents(second) == [f"message {i}" for i in range(10, 20)]
    assert second["totalCount"] == 51


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": 101}, "first"),
        ({"last": -1}, "last"),
        ({"last": 101}, "last"),
        ({"first": 1, "last": 1}, "last"),
        ({"after": "not a cursor"}, "after"),
        ({"before": "bm90IGEgY3Vyc29y"}, "before"),
    ],
    ids=[
        "first-0",
        "first-101",
        "last-negative",
        "last-101",
        "first-and-last",
        "bad-after",
        "bad-before",
    ],
)
async def test_bad_connection_arguments_are_bad_user_input(
    api: Api, setup: tuple[str, str], args: dict[str, Any], field: str
) -> None:
    token, conversation = setup
    error = await api.error(
        MESSAGES, {"id": gid("Conversation", conversation), **args}, token=token
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert field in error["extensions"]["fields"]


async def test_page_bounds_are_allowed_at_exactly_one_and_one_hundred(
    api: Api, setup: tuple[str, str]
) -> None:
    token, conversation = setup
    assert len((await _page(api, token, conversation, first=1))["edges"]) == 1
    assert len((await _page(api, token, conversation, last=100))["edges"]) == 45
    assert len((await _page(api, token, conversation))["edges"]) == 20


async def test_a_cursor_of_another_connection_is_refused(
    api: Api, sessionmaker: Sessionmaker, setup: tuple[str, str]
) -> None:
    token, conversation = setup
    data = await api.data("{ me { conversations { edges { cursor } } } }", token=token)
    cursor = data["me"]["conversations"]["edges"][0]["cursor"]
    error = await api.error(
        MESSAGES, {"id": gid("Conversation", conversation), "after": cursor}, token=token
    )
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"after": "not a valid cursor for this connection"},
    }


CONVERSATIONS = """
query ($first: Int, $after: String, $last: Int, $before: String) {
  me { conversations(first: $first, after: $after, last: $last, before: $before) {
    totalCount edges { node { title } } pageInfo { hasNextPage hasPreviousPage endCursor }
  } }
}
"""


async def test_conversations_are_newest_first_and_page_both_ways(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    from datetime import timedelta

    from tests.factories import BASE_TIME

    user = await make_user(sessionmaker)
    for i in range(7):
        await make_conversation(
            sessionmaker, owner_id=user, title=f"c{i}", updated_at=BASE_TIME + timedelta(hours=i)
        )
    # Two with the same updatedAt are ordered by id, descending.
    await make_conversation(sessionmaker, owner_id=user, title="tie", updated_at=BASE_TIME)
    token = token_for(user)
    first = (await api.data(CONVERSATIONS, {"first": 3}, token=token))["me"]["conversations"]
    assert [e["node"]["title"] for e in first["edges"]] == ["c6", "c5", "c4"]
    assert first["totalCount"] == 8
    rest = (
        await api.data(
            CONVERSATIONS, {"first": 10, "after": first["pageInfo"]["endCursor"]}, token=token
        )
    )["me"]["conversations"]
    titles = [e["node"]["title"] for e in rest["edges"]]
    assert titles[:3] == ["c3", "c2", "c1"]
    assert sorted(titles[3:]) == ["c0", "tie"]
    assert rest["pageInfo"]["hasPreviousPage"] is True
    assert rest["pageInfo"]["hasNextPage"] is False
    last = (await api.data(CONVERSATIONS, {"last": 2}, token=token))["me"]["conversations"]
    assert [e["node"]["title"] for e in last["edges"]] == titles[3:]
    assert last["pageInfo"]["hasPreviousPage"] is True


USERS = """
query ($first: Int, $after: String, $search: String) {
  users(first: $first, after: $after, search: $search) {
    totalCount edges { node { username } } pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}
"""


async def test_users_are_listed_by_id_and_searched_case_insensitively(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    viewer = await make_user(sessionmaker, username="viewer")
    await make_user(sessionmaker, username="Alice_W", full_name="Alice Walker")
    await make_user(sessionmaker, username="bob", full_name="Bob ALICEson")
    await make_user(sessionmaker, username="carol")
    await make_user(sessionmaker, username="under_score")
    token = token_for(viewer)
    everyone = (await api.data(USERS, {"first": 2}, token=token))["users"]
    assert [e["node"]["username"] for e in everyone["edges"]] == ["viewer", "Alice_W"]
    assert everyone["totalCount"] == 5
    more = (await api.data(USERS, {"after": everyone["pageInfo"]["endCursor"]}, token=token))[
        "users"
    ]
    assert [e["node"]["username"] for e in more["edges"]] == ["bob", "carol", "under_score"]
    found = (await api.data(USERS, {"search": "alice"}, token=token))["users"]
    assert [e["node"]["username"] for e in found["edges"]] == ["Alice_W", "bob"]
    assert found["totalCount"] == 2
    # LIKE wildcards in the search are literal characters.
    found = (await api.data(USERS, {"search": "_"}, token=token))["users"]
    assert [e["node"]["username"] for e in found["edges"]] == ["Alice_W", "under_score"]
    found = (await api.data(USERS, {"search": "%"}, token=token))["users"]
    assert found == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "endCursor": None},
    }
