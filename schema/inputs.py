"""The input types of the mutations."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry import UNSET

from db.models import MessageRole, MessageStatus


@strawberry.input
class SignUpInput:
    username: str = strawberry.field(
        description='3-50 chars: letters, digits, "_", ".", "-"; unique (case-insensitive).'
    )
    email: str = strawberry.field(description="A valid address, at most 100 chars; unique.")
    password: str = strawberry.field(description="8-128 chars.")
    full_name: str | None = strawberry.field(default=None, description="At most 100 chars.")


@strawberry.input
class LogInInput:
    login: str = strawberry.field(description="Username or email.")
    password: str


@strawberry.input(description="Omitted fields stay as they are.")
class UpdateUserInput:
    full_name: str | None = UNSET
    email: str | None = UNSET
    password: str | None = UNSET
    is_active: bool | None = strawberry.field(default=UNSET, description="Admin only.")


@strawberry.input
class CreateConversationInput:
    title: str = strawberry.field(description="1-200 chars after trimming.")


@strawberry.input(description="Omitted fields stay as they are.")
class UpdateConversationInput:
    title: str | None = strawberry.field(default=UNSET, description="1-200 chars after trimming.")
    archived: bool | None = UNSET
    pinned: bool | None = UNSET
    tags: list[str] | None = strawberry.field(
        default=UNSET,
        description="Replaces the set: at most 20 tags of 1-50 characters each (trimmed), "
        "case-insensitive unique (the first spelling kept), sorted case-insensitively.",
    )


@strawberry.input(description="Which of a user's conversations a list or count takes.")
class ConversationFilter:
    archived: bool | None = strawberry.field(
        default=False,
        description="false: not archived (the default list); true: archived only; null: both.",
    )
    pinned: bool | None = strawberry.field(default=None, description="null: both.")
    tag: str | None = strawberry.field(
        default=None, description="Only conversations with this tag (case-insensitive)."
    )


@strawberry.input
class TransferConversationInput:
    conversation_id: strawberry.ID
    to_user_id: strawberry.ID


@strawberry.input
class SendMessageInput:
    conversation_id: strawberry.ID
    content: str = strawberry.field(description="1-32000 chars.")
    role: MessageRole | None = MessageRole.USER
    client_id: str | None = strawberry.field(
        default=None,
        description="Idempotency key, at most 64 chars: resending the same (conversationId, "
        "clientId) returns the first message, never a duplicate.",
    )
    model: str | None = strawberry.field(
        default=None, description="The model that wrote it, at most 100 chars."
    )
    parent_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Continue after this message, on a new branch (default: after currentLeaf).",
    )
    alternative_to: strawberry.ID | None = strawberry.field(
        default=None,
        description="A new sibling of this message: edit-and-resend, regenerate, or a new "
        "first message.",
    )


@strawberry.input
class MessageInput:
    role: MessageRole
    content: str
    created_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; imported history keeps its own times."
    )
    model: str | None = strawberry.field(
        default=None, description="The model that wrote it, at most 100 chars."
    )


@strawberry.input
class StartMessageInput:
    conversation_id: strawberry.ID
    role: MessageRole | None = MessageRole.ASSISTANT
    model: str | None = strawberry.field(
        default=None, description="The model that writes it, at most 100 chars."
    )
    parent_id: strawberry.ID | None = strawberry.field(
        default=None, description="As in SendMessageInput."
    )
    alternative_to: strawberry.ID | None = strawberry.field(
        default=None,
        description='As in SendMessageInput: "regenerate" is alternativeTo the old reply.',
    )
    client_id: str | None = strawberry.field(
        default=None, description="Idempotency key, as in SendMessageInput."
    )


@strawberry.input
class AppendMessageInput:
    message_id: strawberry.ID
    seq: int = strawberry.field(
        description="1, 2, 3, ...: a seq already stored is ignored (a retry); a gap is "
        "BAD_USER_INPUT."
    )
    delta: str = strawberry.field(description="1-32000 chars.")


@strawberry.input
class TokenUsageInput:
    input_tokens: int = strawberry.field(description="0-100,000,000.")
    output_tokens: int = strawberry.field(description="0-100,000,000.")


@strawberry.input
class FinishMessageInput:
    message_id: strawberry.ID
    status: MessageStatus = strawberry.field(
        default=MessageStatus.COMPLETE, description="COMPLETE, FAILED or CANCELLED."
    )
    usage: TokenUsageInput | None = None


@strawberry.input
class ImportMessagesInput:
    conversation_id: strawberry.ID
    messages: list[MessageInput] = strawberry.field(
        description="1-1000 per call, all stored or none."
    )
