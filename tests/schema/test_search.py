"""`searchMessages` through the app, on both databases: the same answers from each index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, update

from db.models import Message, User
from schema.errors import BAD_TOKEN
from tests.factories import (
    Sessionmaker,
    gid,
    make_conversation,
    make_messages,
    make_user,
    token_for,
)
from tests.helpers import Api, StatementCounter

SEARCH = """
query Search($q: String!, $first: Int, $after: String, $c: ID, $role: MessageRole) {
  searchMessages(query: $q, first: $first, after: $after, conversationId: $c, role: $role) {
    edges { cursor node { message { id content } snippet highlights { start length } } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}
"""


async def add(sm: Sessionmaker, conversation_id: str, *contents: str) -> list[int]:
    ids = []
    for content in contents:
        ids += await make_messages(
            sm, conversation_id=conversation_id, count=1, content=content.replace("{", "{{")
        )
    return ids


async def owner(sm: Sessionmaker, *contents: str, is_admin: bool = False) -> tuple[str, str]:
    """A user with one conversation holding `contents`: (token, conversation id)."""
    user = await make_user(sm, is_admin=is_admin)
    conversation = await make_conversation(sm, owner_id=user)
    await add(sm, conversation, *contents)
    return token_for(user), conversation


async def hits(api: Api, token: str, query: str, **variables: Any) -> list[str]:
    data = await api.data(SEARCH, {"q": query, **variables}, token=token)
    return [edge["node"]["message"]["content"] for edge in data["searchMessages"]["edges"]]


async def test_words_match_any_form_of_the_word(api: Api, sessionmaker: Sessionmaker) -> None:
    token, _ = await owner(
        sessionmaker, "I run every morning", "Cats sleep all day", "She runs a shop"
    )
    assert sorted(await hits(api, token, "running")) == ["I run every morning", "She runs a shop"]
    assert await hits(api, token, "RUNNING shop") == ["She runs a shop"]
    assert await hits(api, token, "sleeping cat") == ["Cats sleep all day"]


async def test_phrases_exclusions_and_or(api: Api, sessionmaker: Sessionmaker) -> None:
    token, _ = await owner(
        sessionmaker, "a black cat sleeps", "the cat is black", "a black dog barks"
    )
    assert await hits(api, token, '"black cat"') == ["a black cat sleeps"]
    assert sorted(await hits(api, token, "black -dog")) == [
        "a black cat sleeps",
        "the cat is black",
    ]
    assert await hits(api, token, 'black -"black cat" -dog') == ["the cat is black"]
    assert sorted(await hits(api, token, "sleeps or barks")) == [
        "a black cat sleeps",
        "a black dog barks",
    ]
    # FTS5's own syntax is text: no operator, column filter or prefix query gets through.
    assert await hits(api, token, 'content:black NEAR(cat dog) bla* "unclosed') == []
    assert await hits(api, token, "cat NEAR black") == []
    # PostgreSQL gets the query's text as a literal: quotes and backslashes stay text there too.
    assert await hits(api, token, "cat's \\' o'clock \\x00 $1 ');--") == []
    assert sorted(await hits(api, token, "cat\\ 'sleeps'")) == ["a black cat sleeps"]


async def test_better_matches_come_first(api: Api, sessionmaker: Sessionmaker) -> None:
    token, _ = await owner(
        sessionmaker,
        "apple pear plum kiwi",
        "apple apple apple pear",
        "kiwi plum fig pear",
        "apple apple pear fig",
    )
    assert await hits(api, token, "apple") == [
        "apple apple apple pear",
        "apple apple pear fig",
        "apple pear plum kiwi",
    ]


async def test_pages_follow_each_other_without_gaps_or_repeats(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    contents = [" ".join(["alpha"] * (1 + i % 4) + ["word"] * (4 - i % 4)) for i in range(23)]
    token, _ = await owner(sessionmaker, *contents)
    whole = await api.data(SEARCH, {"q": "alpha", "first": 30}, token=token)
    every = [edge["node"]["message"]["id"] for edge in whole["searchMessages"]["edges"]]
    assert len(every) == 23
    paged: list[str] = []
    after = None
    pages = []
    while True:
        data = await api.data(SEARCH, {"q": "alpha", "first": 5, "after": after}, token=token)
        connection = data["searchMessages"]
        paged += [edge["node"]["message"]["id"] for edge in connection["edges"]]
        info = connection["pageInfo"]
        pages.append((len(connection["edges"]), info["hasNextPage"], info["hasPreviousPage"]))
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert paged == every
    assert pages == [
        (5, True, False),
        (5, True, True),
        (5, True, True),
        (5, True, True),
        (3, False, True),
    ]


async def test_snippets_and_highlights_count_characters(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    short = "Ünïcode 😀 naïve Café — the CAFÉ crowd was running late"
    long = "Ω😀 " * 80 + "we met at the café, running late " + "ж" * 300
    token, _ = await owner(sessionmaker, short, long)
    data = await api.data(SEARCH, {"q": "café runs"}, token=token)
    found = {
        edge["node"]["message"]["content"]: (edge["node"]["snippet"], edge["node"]["highlights"])
        for edge in data["searchMessages"]["edges"]
    }
    snippet, highlights = found[short]
    assert snippet == short
    assert [snippet[h["start"] : h["start"] + h["length"]] for h in highlights] == [
        "Café",
        "CAFÉ",
        "running",
    ]
    # Code points: the emoji is one (UTF-16 would count two and say 17).
    assert highlights[0] == {"start": 16, "length": 4}
    snippet, highlights = found[long]
    assert len(snippet) <= 200
    assert snippet.startswith("…") and snippet.endswith("…")
    assert "we met at the café, running late" in snippet
    assert [snippet[h["start"] : h["start"] + h["length"]] for h in highlights] == [
        "café",
        "running",
    ]


async def test_only_the_viewers_own_messages_are_found(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin, mine = await owner(sessionmaker, "my banana bread", is_admin=True)
    other, theirs = await owner(sessionmaker, "their secret banana")
    assert await hits(api, admin, "banana") == ["my banana bread"]
    assert await hits(api, other, "banana") == ["their secret banana"]
    assert await hits(api, admin, "banana", c=gid("Conversation", mine)) == ["my banana bread"]
    # An admin may see the other conversation, but search covers their own alone.
    assert await hits(api, admin, "banana", c=gid("Conversation", theirs)) == []
    error = await api.error(SEARCH, {"q": "banana", "c": gid("Conversation", mine)}, token=other)
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert (await api.error(SEARCH, {"q": "banana"}))["extensions"]["code"] == "UNAUTHENTICATED"


async def test_role_filters(api: Api, sessionmaker: Sessionmaker) -> None:
    token, conversation = await owner(sessionmaker)
    # make_messages alternates USER and ASSISTANT from the first.
    await make_messages(sessionmaker, conversation_id=conversation, count=2, content="tea {i}")
    assert await hits(api, token, "tea", role="ASSISTANT") == ["tea 1"]
    assert await hits(api, token, "tea", role="USER") == ["tea 0"]


async def test_deleted_and_changed_messages_follow_their_rows(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner(sessionmaker, "mango one", "mango two", "mango three")
    ids = await add(sessionmaker, conversation, "papaya")
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(Message).where(Message.content == "mango two"))
        await session.execute(
            update(Message).where(Message.id == ids[0]).values(content="guava now")
        )
    assert sorted(await hits(api, token, "mango")) == ["mango one", "mango three"]
    assert await hits(api, token, "papaya") == []
    assert await hits(api, token, "guava") == ["guava now"]
    deleted = await api.data(
        "mutation($id: ID!) { deleteConversation(id: $id) { deletedId } }",
        {"id": gid("Conversation", conversation)},
        token=token,
    )
    assert deleted == {"deleteConversation": {"deletedId": gid("Conversation", conversation)}}
    assert await hits(api, token, "mango") == []


async def test_a_sent_message_is_found_once_its_send_returns(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, conversation = await owner(sessionmaker)
    for word in ("quokka", "wombat", "platypus"):
        sent = await api.data(
            "mutation($c: ID!, $t: String!) "
            "{ sendMessage(input: {conversationId: $c, content: $t}) { id } }",
            {"c": gid("Conversation", conversation), "t": f"a {word} appears"},
            token=token,
        )
        data = await api.data(SEARCH, {"q": word}, token=token)
        assert [e["node"]["message"]["id"] for e in data["searchMessages"]["edges"]] == [
            sent["sendMessage"]["id"]
        ]


async def test_a_query_with_nothing_to_search_for_is_bad_user_input(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token, _ = await owner(sessionmaker, "anything")
    for query in ("", "   ", "!!! ?", '""', "-anything", '- "" -'):
        error = await api.error(SEARCH, {"q": query}, token=token)
        assert error["extensions"] == {
            "code": "BAD_USER_INPUT",
            "fields": {"query": "nothing to search for: give a word or a phrase"},
        }, query
    for variables, field in (
        ({"q": "x" * 1001}, "query"),
        ({"q": "x", "first": 0}, "first"),
        ({"q": "x", "first": 101}, "first"),
        ({"q": "x", "after": "bm90IG91cnM"}, "after"),
        ({"q": "x", "c": "nonsense"}, "conversationId"),
    ):
        error = await api.error(SEARCH, variables, token=token)
        assert (error["extensions"]["code"], list(error["extensions"]["fields"])) == (
            "BAD_USER_INPUT",
            [field],
        )


async def test_a_search_is_one_statement_on_postgresql_and_its_text_a_safe_literal(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter, database_url: str
) -> None:
    """On PostgreSQL the search's statement is compiled once per shape and the query's text
    spliced in as a literal (`db.search.postgres_sql`): quotes and backslashes stay text. The
    check of a viewer the process read before rides in it (`db.reads.GuardedReads`), as in a
    JSON page's statement; a viewer deactivated since is refused all the same."""
    token, _ = await owner(
        sessionmaker, "it's a C:\\temp\\path", "its path is long", "nothing here"
    )
    query = '"C:\\temp" path -"\'); DROP TABLE messages; --"'
    expected = [
        {
            "message": {"content": "it's a C:\\temp\\path"},
            "snippet": "it's a C:\\temp\\path",
            "highlights": [
                {"start": 7, "length": 1},
                {"start": 10, "length": 4},
                {"start": 15, "length": 4},
            ],
        }
    ]
    first = await api.data(RANKED, {"q": query}, token=token)
    statements.reset()
    again = await api.data(RANKED, {"q": query}, token=token)
    assert [edge["node"] for edge in again["searchMessages"]["edges"]] == expected
    assert again == first
    postgresql = database_url.startswith("postgresql")
    # SQLite: the viewer, the look for streaming messages to stage (`db.search`), the search.
    assert statements.count == (1 if postgresql else 3), statements.seen
    async with sessionmaker() as session, session.begin():
        await session.execute(update(User).values(is_active=False))
    refused = await api.post(RANKED, {"q": query}, token=token)
    assert (refused.status_code, refused.json()) == (
        200,
        {"errors": [{"message": BAD_TOKEN, "extensions": {"code": "UNAUTHENTICATED"}}]},
    )


RANKED = """
query ($q: String!) {
  searchMessages(query: $q) {
    edges { node { message { content } snippet highlights { start length } } }
  }
}
"""
