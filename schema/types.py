"""The GraphQL object types. They mirror the ORM models and follow relations through loaders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import Row

from db.models import MessageRole, MessageStatus
from db.pagination import PageRequest
from schema.context import Context
from schema.errors import Forbidden, NotFound
from schema.pagination import Connection, page_request
from schema.permissions import may_see_private_fields, require_viewer
from schema.relay import to_global_id
from schema.sync_types import MessageRevision, message_revisions

strawberry.enum(MessageRole, name="MessageRole")
strawberry.enum(MessageStatus, name="MessageStatus")
Info = strawberry.Info[Context, None]
LAST_ONE = PageRequest(last=1)


@strawberry.interface(name="Node", description="An object with a Relay global id.")
class Node:
    id: strawberry.ID


@strawberry.type
class User(Node):
    username: str
    full_name: str | None
    is_active: bool
    is_admin: bool
    created_at: datetime
    updated_at: datetime
    pk: strawberry.Private[int]
    private_email: strawberry.Private[str]
    # Set on the user an auth payload returns: the caller has just proven to be them.
    as_self: strawberry.Private[bool] = False

    @classmethod
    def from_row(cls, row: Row[Any], *, as_self: bool = False) -> User:
        return cls(
            as_self=as_self,
            id=strawberry.ID(to_global_id("User", row.id)),
            pk=row.id,
            username=row.username,
            full_name=row.full_name,
            private_email=row.email,
            is_active=row.is_active,
            is_admin=row.is_admin,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @strawberry.field(description="Null unless the viewer is this user or an admin.")
    def email(self, info: Info) -> str | None:
        if self.as_self or may_see_private_fields(info.context.viewer, self.pk):
            return self.private_email
        return None

    def _check_owner(self, info: Info) -> None:
        viewer = require_viewer(info.context)
        if not may_see_private_fields(viewer, self.pk):
            raise Forbidden()

    @strawberry.field(description="Owner or admin only. Most recently updated first.")
    async def conversations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Conversation]:
        self._check_owner(info)
        loaders = info.context.loaders
        request = page_request(
            info.context.config, "conversation", first=first, after=after, last=last, before=before
        )
        page = await loaders.conversations_page_by_user(request).get(self.pk)
        return Connection[Conversation].from_page(
            page,
            kind="conversation",
            node=Conversation.from_row,
            count=lambda: loaders.conversation_count_by_user.get(self.pk),
        )

    @strawberry.field(description="Owner or admin only.")
    async def conversation_count(self, info: Info) -> int:
        self._check_owner(info)
        return await info.context.loaders.conversation_count_by_user.get(self.pk)


@strawberry.type
class Conversation(Node):
    title: str
    created_at: datetime
    updated_at: datetime = strawberry.field(
        description="Bumped when a message is added or the title changes."
    )
    pk: strawberry.Private[str]
    owner_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: Row[Any]) -> Conversation:
        return cls(
            id=strawberry.ID(to_global_id("Conversation", row.id)),
            pk=row.id,
            owner_id=row.user_id,
            title=row.title,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @strawberry.field
    async def owner(self, info: Info) -> User:
        row = await info.context.loaders.user_by_id.get(self.owner_id)
        if row is None:
            raise NotFound()
        return User.from_row(row)

    @strawberry.field(
        description="Oldest first: `last: N` is the newest N, and `before:` scrolls back."
    )
    async def messages(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Message]:
        loaders = info.context.loaders
        request = page_request(
            info.context.config, "message", first=first, after=after, last=last, before=before
        )
        page = await loaders.messages_page_by_conversation(request).get(self.pk)
        return Connection[Message].from_page(
            page,
            kind="message",
            node=Message.from_row,
            count=lambda: loaders.message_count_by_conversation.get(self.pk),
        )

    @strawberry.field
    async def message_count(self, info: Info) -> int:
        return await info.context.loaders.message_count_by_conversation.get(self.pk)

    @strawberry.field
    async def last_message(self, info: Info) -> Message | None:
        page = await info.context.loaders.messages_page_by_conversation(LAST_ONE).get(self.pk)
        return Message.from_row(page.rows[-1]) if page.rows else None


@strawberry.type
class TokenUsage:
    input_tokens: int
    output_tokens: int


@strawberry.type
class Message(Node):
    role: MessageRole
    content: str
    client_id: str | None = strawberry.field(
        description="The sender's idempotency key, if one was given."
    )
    created_at: datetime
    revision: int = strawberry.field(description="1 until edited, then one more per edit.")
    edited_at: datetime | None = strawberry.field(description="Null until edited.")
    revisions: list[MessageRevision] = strawberry.field(
        resolver=message_revisions, description="Oldest first, the current one last."
    )
    status: MessageStatus = strawberry.field(
        description="COMPLETE unless written by startMessage (see RULES.md, Assistant)."
    )
    model: str | None = strawberry.field(description="The model that wrote it, when given.")
    usage: TokenUsage | None = strawberry.field(description="When finishMessage gave it.")
    pk: strawberry.Private[int]
    conversation_id: strawberry.Private[str]

    @classmethod
    def from_row(cls, row: Row[Any]) -> Message:
        return cls(
            id=strawberry.ID(to_global_id("Message", row.id)),
            pk=row.id,
            conversation_id=row.conversation_id,
            role=row.role,
            content=row.content,
            client_id=row.client_id,
            created_at=row.created_at,
            revision=row.revision,
            edited_at=row.edited_at,
            status=MessageStatus(row.status),
            model=row.model,
            usage=(
                None
                if row.input_tokens is None
                else TokenUsage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
            ),
        )

    @strawberry.field
    async def conversation(self, info: Info) -> Conversation:
        row = await info.context.loaders.conversation_by_id.get(self.conversation_id)
        if row is None:
            raise NotFound()
        return Conversation.from_row(row)


@strawberry.type
class AuthPayload:
    token: str = strawberry.field(description='Send as "Authorization: Bearer <token>".')
    user: User


@strawberry.type
class DeletePayload:
    deleted_id: strawberry.ID


@strawberry.type
class AppendMessagePayload:
    message_id: strawberry.ID
    seq: int = strawberry.field(description="The last seq stored.")
    length: int = strawberry.field(description="Characters of content stored so far.")


@strawberry.type
class MessageChunk:
    message_id: strawberry.ID
    seq: int = strawberry.field(description="The last append this chunk includes.")
    delta: str = strawberry.field(
        description="The text it adds (empty on a final chunk that only reports status)."
    )
    status: MessageStatus = strawberry.field(
        description="STREAMING, except on the last chunk, which carries how it ended."
    )


@strawberry.type
class ImportMessagesPayload:
    conversation: Conversation
    imported_count: int
