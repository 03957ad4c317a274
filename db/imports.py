"""Storing imported conversations (`python server.py import`, `import-chatgpt`): inside the
caller's one transaction, so that a file is stored whole or not at all.

Each conversation is one INSERT (its tags one more), its messages multi-row INSERTs of `CHUNK`
(ids drawn in the file's order), the earlier contents of edited messages one more. The change
feed learns of it all at the end (`finish`): CONVERSATION_CREATED per conversation and
MESSAGE_ADDED per message, recorded by `db.changes.record` as the transaction's last statement
(see there why last).

Branches (`db.branches`): each message names its parent by its index in the conversation
(`parent`) and the conversation its current leaf (`leaf`); the path from the leaf up is the
active branch (`on_branch`, written with the rows). A chunk's rows are linked each to the one
before it in one statement (`db.branches.link_imported`), and only the messages whose parent
is not the one before them (first messages, branch points) are set one by one after it: a
conversation that never branched costs one statement a chunk. The current leaves are written
at the end, with one statement for all conversations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

import orjson
from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.branches import link_imported
from db.changes import ChangeKind, NewChange, record
from db.conversations import set_tags
from db.models import (
    Conversation,
    Message,
    MessageRevision,
    MessageRole,
    MessageStatus,
    new_conversation_id,
)

conversations = cast(Table, Conversation.__table__)
messages = cast(Table, Message.__table__)
revisions = cast(Table, MessageRevision.__table__)

CHUNK = 1000


class RevisionLike(Protocol):
    @property
    def revision(self) -> int: ...
    @property
    def content(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


class MessageLike(Protocol):
    @property
    def role(self) -> MessageRole: ...
    @property
    def content(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def edited_at(self) -> datetime | None: ...
    @property
    def revisions(self) -> Sequence[RevisionLike]: ...
    @property
    def parent(self) -> int | None: ...  # its parent's index in the conversation (None: first)
    @property
    def model(self) -> str | None: ...
    @property
    def status(self) -> MessageStatus: ...
    @property
    def usage(self) -> tuple[int, int] | None: ...


class ConversationLike(Protocol):
    @property
    def title(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def messages(self) -> Sequence[MessageLike]: ...
    @property
    def leaf(self) -> int | None: ...  # the index of the current leaf (None: no messages)
    @property
    def archived(self) -> bool: ...
    @property
    def pinned(self) -> bool: ...
    @property
    def tags(self) -> Sequence[str]: ...


@dataclass
class Importer:
    """Stores conversations for `owner_id` in `session`'s transaction; `finish` records the
    changes. Counts what it stored."""

    session: AsyncSession
    owner_id: int
    changes: list[NewChange] = field(default_factory=list)
    leaves: list[dict[str, Any]] = field(default_factory=list)
    conversations: int = 0
    messages: int = 0

    async def add(self, conversation: ConversationLike) -> str:
        """Store one conversation and its messages; its new id."""
        conversation_id = new_conversation_id()
        await self.session.execute(
            insert(conversations).values(
                id=conversation_id,
                user_id=self.owner_id,
                title=conversation.title,
                created_at=conversation.created_at,
                updated_at=conversation.updated_at,
                archived=conversation.archived,
                pinned=conversation.pinned,
                tags=orjson.dumps(list(conversation.tags)).decode(),
            )
        )
        if conversation.tags:
            await set_tags(self.session, conversation_id=conversation_id, tags=conversation.tags)
        self.changes.append(
            NewChange(self.owner_id, ChangeKind.CONVERSATION_CREATED, conversation_id)
        )
        items = conversation.messages
        on_branch = _active_path(items, conversation.leaf)
        ids: list[int] = []
        for start in range(0, len(items), CHUNK):
            await self._messages(conversation_id, items, start, on_branch, ids)
        if conversation.leaf is not None:
            self.leaves.append({"key": conversation_id, "leaf": ids[conversation.leaf]})
        self.conversations += 1
        return conversation_id

    async def _messages(
        self,
        conversation_id: str,
        every: Sequence[MessageLike],
        start: int,
        on_branch: set[int],
        ids: list[int],
    ) -> None:
        """Store `every[start:start + CHUNK]`; `ids` (those of the messages before `start`)
        gets theirs."""
        items = every[start : start + CHUNK]
        rows: list[dict[str, Any]] = [
            {
                "conversation_id": conversation_id,
                "role": item.role,
                "content": item.content,
                "client_id": None,
                "created_at": item.created_at,
                "edited_at": item.edited_at,
                "revision": len(item.revisions) + 1,
                "on_branch": start + index in on_branch,
                "model": item.model,
                "status": item.status,
                "input_tokens": None if item.usage is None else item.usage[0],
                "output_tokens": None if item.usage is None else item.usage[1],
            }
            for index, item in enumerate(items)
        ]
        statement = insert(messages).values(rows).returning(messages.c.id)
        # Ids are drawn in VALUES order; RETURNING promises no order, so sort them.
        ids += sorted(int(found) for found in (await self.session.execute(statement)).scalars())
        await self._link(every, start, len(items), ids)
        earlier = [
            {
                "message_id": message_id,
                "revision": revision.revision,
                "content": revision.content,
                "created_at": revision.created_at,
            }
            for message_id, item in zip(ids[start:], items, strict=True)
            for revision in item.revisions
        ]
        if earlier:
            await self.session.execute(insert(revisions), earlier)
        self.changes += [
            NewChange(self.owner_id, ChangeKind.MESSAGE_ADDED, conversation_id, message_id)
            for message_id in ids[start:]
        ]
        self.messages += len(items)

    async def _link(
        self, every: Sequence[MessageLike], start: int, count: int, ids: list[int]
    ) -> None:
        """Give the chunk's messages their parents: each the one before it in one statement,
        then those whose parent is another (or none) one by one."""

        def parent_id(index: int) -> int | None:
            parent = every[index].parent
            return None if parent is None else ids[parent]

        await link_imported(
            self.session,
            ids=ids[start : start + count],
            after=ids[start - 1] if start else None,
        )
        others = [
            {"key": ids[index], "parent": parent_id(index)}
            for index in range(start, start + count)
            if every[index].parent != index - 1
        ]
        if others:
            await self.session.execute(
                update(messages)
                .where(messages.c.id == bindparam("key"))
                .values(parent_id=bindparam("parent")),
                others,
            )

    async def finish(self) -> None:
        """Set the conversations' current leaves, then record the changes: the last statement
        before the caller commits."""
        if self.leaves:
            await self.session.execute(
                update(conversations)
                .where(conversations.c.id == bindparam("key"))
                .values(current_leaf_id=bindparam("leaf")),
                self.leaves,
            )
        if self.changes:
            await record(self.session, self.changes)


def _active_path(items: Sequence[MessageLike], leaf: int | None) -> set[int]:
    """The indexes of the messages from `leaf` up through their parents."""
    path: set[int] = set()
    step = leaf
    while step is not None and step not in path:
        path.add(step)
        step = items[step].parent
    return path
