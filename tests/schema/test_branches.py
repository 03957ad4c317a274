"""Branches (RULES.md "Assistant", issue 15 item 2): regenerate, edit and resend, select a
branch; the active branch's pages, counts and leaf; deletes, transfers and errors; statement
counts on a long branched conversation. Through the real app on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from db.branches import link_imported
from db.migrate import migrate
from db.models import Conversation, Message, MessageRole
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
from tests.schema.test_definitions import both_answers

SEND = """
mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id content } }
"""
START = "mutation ($input: StartMessageInput!) { startMessage(input: $input) { id status } }"
SELECT = """
mutation ($id: ID!) { selectBranch(messageId: $id) { currentLeaf { content } messageCount } }
"""
DELETE = "mutation ($id: ID!) { deleteMessage(id: $id) { deletedId } }"
TRANSFER = """
mutation ($input: TransferConversationInput!) { transferConversation(input: $input) { id } }
"""
STATE = """
query ($id: ID!) {
  conversation(id: $id) {
    messageCount unreadCount
    currentLeaf { content }
    lastMessage { content }
    messages(first: 50) {
      edges { node { content parent { content } siblings { content } siblingIndex } }
      pageInfo { hasNextPage hasPreviousPage }
    }
  }
}
"""
PAGE = """
query ($id: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  conversation(id: $id) {
    messages(first: $first, after: $after, last: $last, before: $before) {
      edges { cursor node { content } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}
"""
IMPORT = """
mutation ($input: ImportMessagesInput!) { importMessages(input: $input) { importedCount } }
"""
KINDS = "{ changes(first: 100) { edges { node { kind } } } }"


class Chat:
    """One conversation driven through the API, its messages by content."""

    def __init__(self, api: Api, token: str, conversation: str) -> None:
        self.api, self.token, self.conversation = api, token, conversation
        self.ids: dict[str, str] = {}

    async def send(self, content: str, role: str = "USER", **where: str) -> None:
        given = {key: self.ids[value] for key, value in where.items()}
        variables = {
            "input": {
                "conversationId": gid("Conversation", self.conversation),
                "content": content,
                "role": role,
                **given,
            }
        }
        data = await self.api.data(SEND, variables, token=self.token)
        self.ids[content] = data["sendMessage"]["id"]

    async def select(self, content: str) -> str | None:
        data = await self.api.data(SELECT, {"id": self.ids[content]}, token=self.token)
        leaf = data["selectBranch"]["currentLeaf"]
        return None if leaf is None else str(leaf["content"])

    async def state(self) -> dict[str, Any]:
        """The active branch as contents: each message with its parent, siblings and index."""
        variables = {"id": gid("Conversation", self.conversation)}
        found = (await self.api.data(STATE, variables, token=self.token))["conversation"]
        edges = found["messages"]["edges"]
        return {
            "count": found["messageCount"],
            "unread": found["unreadCount"],
            "leaf": found["currentLeaf"] and found["currentLeaf"]["content"],
            "last": found["lastMessage"] and found["lastMessage"]["content"],
            "branch": [
                (
                    node["content"],
                    node["parent"] and node["parent"]["content"],
                    [sibling["content"] for sibling in node["siblings"]],
                    node["siblingIndex"],
                )
                for node in (edge["node"] for edge in edges)
            ],
            "more": found["messages"]["pageInfo"],
        }

    async def page(self, **window: Any) -> tuple[list[str], bool, bool, str | None, str | None]:
        variables = {"id": gid("Conversation", self.conversation), **window}
        found = (await self.api.data(PAGE, variables, token=self.token))["conversation"]
        info = found["messages"]["pageInfo"]
        contents = [edge["node"]["content"] for edge in found["messages"]["edges"]]
        return (
            contents,
            info["hasPreviousPage"],
            info["hasNextPage"],
            info["startCursor"],
            info["endCursor"],
        )

    async def walk(self) -> tuple[list[str], list[str]]:
        """The active branch paged two at a time forwards, then backwards; each page's
        `pageInfo` must say exactly whether more come either way."""
        forwards: list[str] = []
        after = None
        while True:
            contents, previous, following, _, end = await self.page(first=2, after=after)
            assert previous == (after is not None)
            forwards += contents
            if not following:
                break
            after = end
        backwards: list[str] = []
        before = None
        while True:
            contents, previous, following, start, _ = await self.page(last=2, before=before)
            assert following == (before is not None)
            backwards = contents + backwards
            if not previous:
                break
            before = start
        return forwards, backwards


def node(content: str, parent: str | None, siblings: list[str]) -> tuple[Any, ...]:
    return (content, parent, siblings, siblings.index(content))


async def test_a_branch_walk_reads_the_active_branch_exactly(
    api: Api, sessionmaker: Sessionmaker, settings: Settings
) -> None:
    owner = await make_user(sessionmaker, username="walker")
    other = await make_user(sessionmaker, username="taker")
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    chat = Chat(api, token_for(owner), conversation)
    answers = ["a1", "a2", "a3", "a4"]

    await chat.send("q1")
    await chat.send("a1", "ASSISTANT")
    for answer in answers[1:]:  # regenerate the reply three times
        await chat.send(answer, "ASSISTANT", alternativeTo="a1")
    assert await chat.state() == {
        "count": 2,
        "unread": 1,
        "leaf": "a4",
        "last": "a4",
        "branch": [node("q1", None, ["q1"]), node("a4", "q1", answers)],
        "more": {"hasNextPage": False, "hasPreviousPage": False},
    }
    # Edit the question twice: each edit is a new first message with its own answer; the
    # second answer is streamed (startMessage takes the same inputs).
    await chat.send("q2", alternativeTo="q1")
    await chat.send("b1", "ASSISTANT")
    await chat.send("q3", alternativeTo="q2")
    started = await api.data(
        START,
        {
            "input": {
                "conversationId": gid("Conversation", conversation),
                "parentId": chat.ids["q3"],
            }
        },
        token=chat.token,
    )
    assert started["startMessage"]["status"] == "STREAMING"
    chat.ids["c1"] = started["startMessage"]["id"]
    questions = ["q1", "q2", "q3"]
    third = {
        "count": 2,
        "unread": 1,
        "leaf": "",  # the streamed answer is still empty
        "last": "",
        "branch": [node("q3", None, questions), node("", "q3", [""])],
        "more": {"hasNextPage": False, "hasPreviousPage": False},
    }
    assert await chat.state() == third

    # Select each branch: from a message, its newest child at each step.
    assert await chat.select("q1") == "a4"
    assert (await chat.state())["branch"] == [
        node("q1", None, questions),
        node("a4", "q1", answers),
    ]
    assert await chat.select("a2") == "a2"
    await chat.send("f1")  # continues after the leaf, a2
    await chat.send("f2", "ASSISTANT")
    walked = ["q1", "a2", "f1", "f2"]
    assert await chat.state() == {
        "count": 4,
        "unread": 2,
        "leaf": "f2",
        "last": "f2",
        "branch": [
            node("q1", None, questions),
            node("a2", "q1", answers),
            node("f1", "a2", ["f1"]),
            node("f2", "f1", ["f2"]),
        ],
        "more": {"hasNextPage": False, "hasPreviousPage": False},
    }
    assert await chat.walk() == (walked, walked)
    assert await chat.select("q2") == "b1"
    assert [each[0] for each in (await chat.state())["branch"]] == ["q2", "b1"]
    assert await chat.walk() == (["q2", "b1"], ["q2", "b1"])
    assert await chat.select("q3") == ""
    assert await chat.state() == third
    assert await chat.select("a1") == "a1"
    assert await chat.select("a2") == "f2"  # from a2 down its newest children
    # A new branch from a3 (parentId), three deep, then back to the long one.
    await chat.send("g1", parentId="a3")
    await chat.send("g2", "ASSISTANT")
    await chat.send("g3")
    assert await chat.walk() == (["q1", "a3", "g1", "g2", "g3"],) * 2
    assert await chat.select("f1") == "f2"
    assert await chat.walk() == (walked, walked)

    # Deleting: f1 (mid-branch) is skipped and f2 follows a2; the leaf deleted, its parent
    # is the leaf; a deleted sibling is gone from siblings.
    await api.data(DELETE, {"id": chat.ids["f1"]}, token=chat.token)
    assert (await chat.state())["branch"][1:] == [
        node("a2", "q1", answers),
        node("f2", "a2", ["f2"]),
    ]
    await api.data(DELETE, {"id": chat.ids["f2"]}, token=chat.token)
    await api.data(DELETE, {"id": chat.ids["a1"]}, token=chat.token)
    assert await chat.state() == {
        "count": 2,
        "unread": 1,
        "leaf": "a2",
        "last": "a2",
        "branch": [node("q1", None, questions), node("a2", "q1", ["a2", "a3", "a4"])],
        "more": {"hasNextPage": False, "hasPreviousPage": False},
    }
    before_errors = await chat.state()

    # Errors change nothing.
    both = await api.error(
        SEND,
        {
            "input": {
                "conversationId": gid("Conversation", conversation),
                "content": "x",
                "parentId": chat.ids["q1"],
                "alternativeTo": chat.ids["a2"],
            }
        },
        token=chat.token,
    )
    reason = "give at most one of parentId and alternativeTo"
    assert both["extensions"] == {
        "code": "BAD_USER_INPUT",
        "fields": {"parentId": reason, "alternativeTo": reason},
    }
    elsewhere = await make_conversation(sessionmaker, owner_id=owner)
    foreign = Chat(api, chat.token, elsewhere)
    await foreign.send("elsewhere")
    chat.ids["elsewhere"] = foreign.ids["elsewhere"]
    for where in ({"parentId": "elsewhere"}, {"alternativeTo": "elsewhere"}, {"parentId": "f1"}):
        given = {key: chat.ids[value] for key, value in where.items()}
        variables = {
            "input": {"conversationId": gid("Conversation", conversation), "content": "x", **given}
        }
        missing = await api.error(SEND, variables, token=chat.token)
        assert missing["extensions"]["code"] == "NOT_FOUND", where
    deleted = await api.error(SELECT, {"id": chat.ids["f1"]}, token=chat.token)
    assert deleted["extensions"]["code"] == "NOT_FOUND"
    stranger = await api.error(SELECT, {"id": chat.ids["q1"]}, token=token_for(other))
    assert stranger["extensions"]["code"] == "NOT_FOUND"
    assert await chat.state() == before_errors

    # BRANCH_SELECTED only when the active branch changes (a send on a new branch adds
    # MESSAGE_ADDED alone).
    assert await chat.select("q1") == "a4"
    assert await chat.select("a4") == "a4"
    kinds = [
        edge["node"]["kind"]
        for edge in (await api.data(KINDS, token=chat.token))["changes"]["edges"]
    ]
    assert kinds.count("BRANCH_SELECTED") == 8
    assert kinds[-2:] == ["MESSAGE_ADDED", "BRANCH_SELECTED"]

    # A transfer moves every branch.
    await api.data(
        TRANSFER,
        {
            "input": {
                "conversationId": gid("Conversation", conversation),
                "toUserId": gid("User", other),
            }
        },
        token=chat.token,
    )
    taker = Chat(api, token_for(other), conversation)
    taker.ids = chat.ids
    assert await taker.state() == {
        **before_errors,
        "leaf": "a4",
        "last": "a4",
        "branch": [node("q1", None, questions), node("a4", "q1", ["a2", "a3", "a4"])],
    }
    assert await taker.select("a3") == "g3"
    assert await taker.walk() == (["q1", "a3", "g1", "g2", "g3"],) * 2
    assert await taker.select("q2") == "b1"

    # importMessages continues after currentLeaf; older history sorts first on the branch, so
    # lastMessage (the last by createdAt, then id) is not currentLeaf.
    history = [
        {"role": "USER", "content": "old 1", "createdAt": "2020-01-01T00:00:00Z"},
        {"role": "ASSISTANT", "content": "old 2", "createdAt": "2020-01-01T00:00:01Z"},
    ]
    await api.data(
        IMPORT,
        {"input": {"conversationId": gid("Conversation", conversation), "messages": history}},
        token=taker.token,
    )
    assert await taker.state() == {
        "count": 4,
        "unread": 2,
        "leaf": "old 2",
        "last": "b1",
        "branch": [
            node("old 1", "b1", ["old 1"]),
            node("old 2", "old 1", ["old 2"]),
            node("q2", None, questions),
            node("b1", "q2", ["b1"]),
        ],
        "more": {"hasNextPage": False, "hasPreviousPage": False},
    }

    # The planned executor and Strawberry answer the branch fields byte for byte.
    planned, plain = await both_answers(
        settings, STATE, {"id": gid("Conversation", conversation)}, taker.token
    )
    assert (planned.status_code, planned.content) == (plain.status_code, plain.content)
    assert b'"siblings"' in planned.content


async def seed(sessionmaker: Sessionmaker, owner: int, *, branch_points: int) -> str:
    """A conversation of 2,000 messages on its active branch, and one alternative (off the
    branch) at each of `branch_points` places, each written among the last page's messages
    (a page scan that read them would pay for them). Set-based inserts."""
    conversation = await make_conversation(sessionmaker, owner_id=owner)
    rows = [
        {
            "conversation_id": conversation,
            "role": MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT,
            "content": f"message {i}",
            "created_at": BASE_TIME + timedelta(seconds=i),
        }
        for i in range(2000)
    ]
    async with sessionmaker() as session, session.begin():
        result = await session.execute(insert(Message).returning(Message.id), rows)
        ids = sorted(int(x) for x in result.scalars().all())
        await link_imported(session, ids=ids, after=None)
        if branch_points:
            alternatives = [
                {
                    "conversation_id": conversation,
                    "role": MessageRole.ASSISTANT,
                    "content": f"alternative {k}",
                    "created_at": BASE_TIME + timedelta(seconds=1990, milliseconds=k),
                    "parent_id": ids[k * 50],
                    "on_branch": False,
                }
                for k in range(branch_points)
            ]
            await session.execute(insert(Message), alternatives)
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation)
            .values(current_leaf_id=ids[-1])
        )
    return conversation


Q2 = """query Q2($id: ID!) {
  conversation(id: $id) {
    id title messageCount
    messages(last: 50) {
      edges { cursor node { id role content createdAt } }
      pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
    }
  }
}"""


async def test_a_branched_conversation_pages_in_the_statements_of_a_linear_one(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    owner = await make_user(sessionmaker, username="long")
    token = token_for(owner)
    linear = await seed(sessionmaker, owner, branch_points=0)
    branched = await seed(sessionmaker, owner, branch_points=40)
    counts = []
    answers = []
    for conversation in (linear, branched):
        variables = {"id": gid("Conversation", conversation)}
        await api.data(Q2, variables, token=token)  # the document known, as Q2 runs
        statements.reset()
        found = (await api.data(Q2, variables, token=token))["conversation"]
        counts.append(statements.count)
        answers.append(found)
    assert counts[1] <= counts[0] + 1, statements.seen
    contents = [[e["node"]["content"] for e in a["messages"]["edges"]] for a in answers]
    assert contents[0] == contents[1] == [f"message {i}" for i in range(1950, 2000)]
    assert [a["messageCount"] for a in answers] == [2000, 2000]
    assert [a["messages"]["pageInfo"]["hasPreviousPage"] for a in answers] == [True, True]


async def test_the_migration_puts_the_messages_written_before_it_on_one_branch(
    engine: AsyncEngine, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker, username="old")
    imported = await make_conversation(sessionmaker, owner_id=owner)
    empty = await make_conversation(sessionmaker, owner_id=owner)
    await migrate(engine, "0010_streams", down=True)
    # Written out of time order (older history imported later): parents follow time.
    later = await make_messages(
        sessionmaker, conversation_id=imported, count=2, start=BASE_TIME, linked=False
    )
    earlier = await make_messages(
        sessionmaker,
        conversation_id=imported,
        count=2,
        start=BASE_TIME - timedelta(days=1),
        linked=False,
    )
    await migrate(engine, "head")

    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(Message.id, Message.parent_id, Message.on_branch).order_by(Message.id)
            )
        ).all()
        leaves = dict(
            (await session.execute(select(Conversation.id, Conversation.current_leaf_id))).all()
        )
    first, second = earlier
    assert [tuple(row) for row in rows] == [
        (later[0], second, True),
        (later[1], later[0], True),
        (first, None, True),
        (second, first, True),
    ]
    assert leaves == {imported: later[1], empty: None}
