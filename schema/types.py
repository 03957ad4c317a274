"""The GraphQL object types. Each wraps a row (`Wrapper`); every field is a definition of
`schema.fields`, made a Strawberry field by `defined`. The class annotations give the fields'
GraphQL types, the definitions their data, arguments, descriptions and permissions."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

import strawberry

from db.models import MessageRole, MessageStatus
from schema.context import Context
from schema.resolvers import Wrapper, defined

strawberry.enum(MessageRole, name="MessageRole")
strawberry.enum(MessageStatus, name="MessageStatus")
Info = strawberry.Info[Context, None]
T = TypeVar("T")


@strawberry.interface(name="Node", description="An object with a Relay global id.")
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo(Wrapper):
    has_next_page: bool = defined("PageInfo.hasNextPage")
    has_previous_page: bool = defined("PageInfo.hasPreviousPage")
    start_cursor: str | None = defined("PageInfo.startCursor")
    end_cursor: str | None = defined("PageInfo.endCursor")


@strawberry.type
class Edge(Wrapper, Generic[T]):
    cursor: str = defined("Edge.cursor")
    node: T = defined("Edge.node")


@strawberry.type
class Connection(Wrapper, Generic[T]):
    edges: list[Edge[T]] = defined("Connection.edges")
    page_info: PageInfo = defined("Connection.pageInfo")
    total_count: int = defined("Connection.totalCount")


@strawberry.type
class User(Wrapper, Node):
    id: strawberry.ID = defined("User.id")
    username: str = defined("User.username")
    full_name: str | None = defined("User.fullName")
    is_active: bool = defined("User.isActive")
    is_admin: bool = defined("User.isAdmin")
    created_at: datetime = defined("User.createdAt")
    updated_at: datetime = defined("User.updatedAt")
    email: str | None = defined("User.email")
    conversations: Connection[Conversation] = defined("User.conversations")
    conversation_count: int = defined("User.conversationCount")
    tags: list[str] = defined("User.tags")


@strawberry.type
class Conversation(Wrapper, Node):
    id: strawberry.ID = defined("Conversation.id")
    title: str = defined("Conversation.title")
    created_at: datetime = defined("Conversation.createdAt")
    updated_at: datetime = defined("Conversation.updatedAt")
    owner: User = defined("Conversation.owner")
    messages: Connection[Message] = defined("Conversation.messages")
    message_count: int = defined("Conversation.messageCount")
    last_message: Message | None = defined("Conversation.lastMessage")
    archived: bool = defined("Conversation.archived")
    pinned: bool = defined("Conversation.pinned")
    tags: list[str] = defined("Conversation.tags")
    last_read_message: Message | None = defined("Conversation.lastReadMessage")
    unread_count: int = defined("Conversation.unreadCount")
    current_leaf: Message | None = defined("Conversation.currentLeaf")


@strawberry.type
class Message(Wrapper, Node):
    id: strawberry.ID = defined("Message.id")
    role: MessageRole = defined("Message.role")
    content: str = defined("Message.content")
    client_id: str | None = defined("Message.clientId")
    created_at: datetime = defined("Message.createdAt")
    revision: int = defined("Message.revision")
    edited_at: datetime | None = defined("Message.editedAt")
    revisions: list[MessageRevision] = defined("Message.revisions")
    conversation: Conversation = defined("Message.conversation")
    status: MessageStatus = defined("Message.status")
    model: str | None = defined("Message.model")
    usage: TokenUsage | None = defined("Message.usage")
    parent: Message | None = defined("Message.parent")
    siblings: list[Message] = defined("Message.siblings")
    sibling_index: int = defined("Message.siblingIndex")


@strawberry.type
class TokenUsage(Wrapper):
    input_tokens: int = defined("TokenUsage.inputTokens")
    output_tokens: int = defined("TokenUsage.outputTokens")


@strawberry.type
class MessageRevision(Wrapper):
    revision: int = defined("MessageRevision.revision")
    content: str = defined("MessageRevision.content")
    created_at: datetime = defined("MessageRevision.createdAt")


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
