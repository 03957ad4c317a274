"""Storing imported conversations (`python server.py import`, `import-chatgpt`): inside the
caller's one transaction, so that a file is stored whole or not at all.

Each conversation is one INSERT (its tags one more), its messages multi-row INSERTs of `CHUNK`
(ids drawn in the file's order), the earlier contents of edited messages one more. The change
feed learns of it all at the end (`finish`): CONVERSATION_CREATED per conversation and
MESSAGE_ADDED per message, recorded by `db.changes.record` as the transaction's last statement
(see there why last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

import orjson
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

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
        for start in range(0, len(items), CHUNK):
            await self._messages(conversation_id, items[start : start + CHUNK])
        self.conversations += 1
        return conversation_id

    async def _messages(self, conversation_id: str, items: Sequence[MessageLike]) -> None:
        rows: list[dict[str, Any]] = [
            {
                "conversation_id": conversation_id,
                "role": item.role,
                "content": item.content,
                "client_id": None,
                "created_at": item.created_at,
                "edited_at": item.edited_at,
                "revision": len(item.revisions) + 1,
                "model": item.model,
                "status": item.status,
                "input_tokens": None if item.usage is None else item.usage[0],
                "output_tokens": None if item.usage is None else item.usage[1],
            }
            for item in items
        ]
        statement = insert(messages).values(rows).returning(messages.c.id)
        # Ids are drawn in VALUES order; RETURNING promises no order, so sort them.
        ids = sorted(int(found) for found in (await self.session.execute(statement)).scalars())
        earlier = [
            {
                "message_id": message_id,
                "revision": revision.revision,
                "content": revision.content,
                "created_at": revision.created_at,
            }
            for message_id, item in zip(ids, items, strict=True)
            for revision in item.revisions
        ]
        if earlier:
            await self.session.execute(insert(revisions), earlier)
        self.changes += [
            NewChange(self.owner_id, ChangeKind.MESSAGE_ADDED, conversation_id, message_id)
            for message_id in ids
        ]
        self.messages += len(ids)

    async def finish(self) -> None:
        """Record the changes: the last statement before the caller commits."""
        if self.changes:
            await record(self.session, self.changes)
