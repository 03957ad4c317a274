"""Branches (issue 15): messages form a tree, and the conversation reads its active branch.

Storage: each message has `parent_id` (the message before it on its branch; null for a first
message) and `on_branch`, true exactly on the path from a first message to the conversation's
`current_leaf_id`. Pages, `messageCount`, `lastMessage` and `unreadCount` only add
`AND on_branch`, which the partial index `ix_messages_branch` (conversation, created_at, id)
WHERE on_branch serves: a page of the active branch costs O(page) however many other branches
there are, and a conversation that never branched (every message on its one branch) reads
exactly as before, in the same statements. `ix_messages_parent` (conversation, parent_id)
serves children and siblings (first messages are `parent_id IS NULL` within a conversation).

Chosen over the alternatives: a recursive walk from the leaf on every read costs O(branch) per
page and cannot use the keyset index; a materialised path (`1.5.9...`) makes every page a prefix
test over the whole conversation and grows with depth. The flag moves the cost to the writes
that change the active branch (a send on a new branch, `selectBranch`), which are rare and
touch only the messages that leave or join it: `switch` walks up from the new leaf to the
first message already on the branch (A), walks up from the old leaf to A, and flips the flag of
both walks in one UPDATE: O(the branches' difference), whatever the conversation's length.
A send that continues after the leaf changes no flag at all (no statement more than before).

Deleting a message hands its children its parent (`reparent`), so the tree stays whole: the
deleted message is skipped on its branch and among siblings, and its children stay. No foreign
key on `parent_id`: its ON DELETE would need an index led by `parent_id` and would cost a
conversation's cascade a lookup per message; the writes keep the references right instead.

Every write here runs with its conversation's row locked (`lock_conversation`), so the writes
that move a conversation's branch take turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, bindparam, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.messages import messages
from db.streams import MESSAGE_COLUMNS

# Walks up from `start` through parents until the first message on the active branch
# (included): the messages a new leaf at `start` brings onto the branch, and where it meets it.
_CHAIN = text(
    """
WITH RECURSIVE chain(id, conversation_id, parent_id, on_branch, depth) AS (
  SELECT id, conversation_id, parent_id, on_branch, 0 FROM messages WHERE id = :start
  UNION ALL
  SELECT m.id, m.conversation_id, m.parent_id, m.on_branch, chain.depth + 1
  FROM messages m JOIN chain ON m.id = chain.parent_id
  WHERE NOT chain.on_branch
)
SELECT id, conversation_id, parent_id, on_branch FROM chain ORDER BY depth
"""
)

# Flips the flag of the messages from the old leaf up to `stop` (excluded; 0: to the first
# message), which leave the branch, and of `joining`, which join it.
_FLIP = text(
    """
UPDATE messages SET on_branch = NOT on_branch
WHERE id IN (
  WITH RECURSIVE up(id, parent_id) AS (
    SELECT id, parent_id FROM messages WHERE id = :leaf AND id <> :stop
    UNION ALL
    SELECT m.id, m.parent_id FROM messages m JOIN up ON m.id = up.parent_id
    WHERE m.id <> :stop
  )
  SELECT id FROM up
) OR id IN :joining
"""
).bindparams(bindparam("joining", expanding=True))

# From `start`, at each step its most recently created child (`selectBranch`).
_DESCEND = text(
    """
WITH RECURSIVE down(id, depth) AS (
  SELECT CAST(:start AS INTEGER), 0
  UNION ALL
  SELECT (
    SELECT c.id FROM messages c
    WHERE c.conversation_id = :conversation_id AND c.parent_id = down.id
    ORDER BY c.created_at DESC, c.id DESC LIMIT 1
  ), down.depth + 1
  FROM down WHERE down.id IS NOT NULL
)
SELECT id FROM down WHERE id IS NOT NULL ORDER BY depth DESC LIMIT 1
"""
)


@dataclass(frozen=True)
class Chain:
    """The messages from a message up to the active branch: `rows` (id, conversation_id,
    parent_id, on_branch), the message itself first, the first one on the branch (if any)
    last."""

    rows: Sequence[Row[Any]]

    @property
    def head(self) -> Row[Any]:
        return self.rows[0]

    def joining(self, *, skip_head: bool = False) -> list[int]:
        rows = self.rows[1:] if skip_head else self.rows
        return [row.id for row in rows if not row.on_branch]

    def meets(self, *, skip_head: bool = False) -> int | None:
        """The message where the path to it meets the active branch (None: nowhere)."""
        rows = self.rows[1:] if skip_head else self.rows
        if skip_head and self.head.on_branch:
            return self.head.parent_id  # type: ignore[no-any-return]
        if rows and rows[-1].on_branch:
            return rows[-1].id  # type: ignore[no-any-return]
        return None


async def chain(session: AsyncSession, *, message_id: int) -> Chain | None:
    """The `Chain` from `message_id`, or None when there is no such message. One statement."""
    rows = (await session.execute(_CHAIN, {"start": message_id})).all()
    return Chain(rows) if rows else None


async def switch(
    session: AsyncSession, *, old_leaf: int | None, meets: int | None, joining: Sequence[int]
) -> None:
    """Make the path through `joining` (the messages off the branch above the new leaf, which
    meet it at `meets`) the active branch: the messages from `old_leaf` up to `meets` leave
    it. One statement, O(the messages that change)."""
    if not joining and meets == old_leaf:
        return  # the new leaf follows the old one: nothing leaves or joins
    await session.execute(
        _FLIP, {"leaf": old_leaf, "stop": meets if meets is not None else 0, "joining": joining}
    )


async def descend(session: AsyncSession, *, conversation_id: str, message_id: int) -> int:
    """The message reached from `message_id` by following, at each step, its most recently
    created child (by `created_at`, then id). One statement."""
    found = await session.execute(
        _DESCEND, {"start": message_id, "conversation_id": conversation_id}
    )
    return int(found.scalar_one())


async def reparent(
    session: AsyncSession, *, conversation_id: str, message_id: int, parent_id: int | None
) -> None:
    """Give the children of `message_id` (being deleted) its parent `parent_id`."""
    await session.execute(
        text(
            "UPDATE messages SET parent_id = :parent_id"
            " WHERE conversation_id = :conversation_id AND parent_id = :message_id"
        ),
        {"parent_id": parent_id, "conversation_id": conversation_id, "message_id": message_id},
    )


async def link_imported(session: AsyncSession, *, ids: Sequence[int], after: int | None) -> None:
    """Chain messages just inserted in one statement (ids in the order given): the first
    follows `after`, each other one the one before it. One set-based statement."""
    await session.execute(
        text(
            "UPDATE messages SET parent_id = previous.parent_id FROM ("
            " SELECT id, lag(id, 1, :after) OVER (ORDER BY id) AS parent_id"
            " FROM messages WHERE id IN :ids"
            ") AS previous WHERE messages.id = previous.id"
        ).bindparams(bindparam("ids", expanding=True)),
        {"ids": list(ids), "after": after},
    )


# Siblings are keyed by (conversation id, parent id), 0 standing for "no parent" (first
# messages): DataLoader keys must be hashable and a first message's siblings are its
# conversation's other first messages.
SiblingsKey = tuple[str, int]


async def siblings_by_parent(
    session: AsyncSession, *, keys: Sequence[SiblingsKey]
) -> dict[SiblingsKey, list[Row[Any]]]:
    """The children of each (conversation, parent), oldest first (by `created_at`, then id).
    One statement for all of them (through `ix_messages_parent`)."""
    parents = sorted({parent for _, parent in keys if parent})
    roots = sorted({conversation for conversation, parent in keys if not parent})
    wanted: list[ColumnElement[bool]] = []
    if parents:
        wanted.append(messages.c.parent_id.in_(parents))
    if roots:
        wanted.append(and_(messages.c.parent_id.is_(None), messages.c.conversation_id.in_(roots)))
    statement = (
        select(*MESSAGE_COLUMNS).where(or_(*wanted)).order_by(messages.c.created_at, messages.c.id)
    )
    found: dict[SiblingsKey, list[Row[Any]]] = {key: [] for key in keys}
    for row in (await session.execute(statement)).all():
        group = found.get((row.conversation_id, row.parent_id or 0))
        if group is not None:
            group.append(row)
    return found


def siblings_key(message: Any) -> SiblingsKey:
    """The `SiblingsKey` of a message's row."""
    return (message.conversation_id, message.parent_id or 0)
