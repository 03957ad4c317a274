"""The Mutation root: one session and one transaction each, so a failure changes nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry import UNSET

from db import conversations as conversation_data
from db import errors as db_errors
from db import messages as message_data
from db import users as user_data
from db.models import MessageRole
from schema.auth import issue_token
from schema.errors import (
    WRONG_CREDENTIALS,
    Conflict,
    Forbidden,
    NotFound,
    Unauthenticated,
)
from schema.permissions import require_self_or_admin, require_viewer
from schema.relay import decode_conversation_id, decode_user_id, to_global_id
from schema.types import AuthPayload, Conversation, DeletePayload, Info, Message, User
from schema.validation import (
    client_id_problem,
    content_problem,
    email_problem,
    full_name_problem,
    password_problem,
    raise_for,
    title_problem,
    username_problem,
)


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


@strawberry.input
class UpdateConversationInput:
    title: str


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


@strawberry.input
class MessageInput:
    role: MessageRole
    content: str
    created_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; imported history keeps its own times."
    )


@strawberry.input
class ImportMessagesInput:
    conversation_id: strawberry.ID
    messages: list[MessageInput] = strawberry.field(
        description="1-1000 per call, all stored or none."
    )


def _clean_full_name(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create an account; the first one is an admin.")
    async def sign_up(self, info: Info, input: SignUpInput) -> AuthPayload:
        email = input.email.strip()
        full_name = _clean_full_name(input.full_name)
        raise_for(
            {
                "username": username_problem(input.username),
                "email": email_problem(email),
                "password": password_problem(input.password),
                "fullName": full_name_problem(full_name) if full_name else None,
            }
        )
        services = info.context.services
        hashed = await services.passwords.hash(input.password)
        try:
            async with services.sessionmaker() as session, session.begin():
                row = await user_data.create_user(
                    session,
                    username=input.username,
                    email=email,
                    hashed_password=hashed,
                    full_name=full_name,
                )
        except db_errors.Conflict as exc:
            raise Conflict(exc.field) from exc
        info.context.loaders.user_by_id.put(row.id, row)
        return AuthPayload(
            token=issue_token(services.config, row.id), user=User.from_row(row, as_self=True)
        )

    @strawberry.mutation(description="Exchange a username or email and a password for a token.")
    async def log_in(self, info: Info, input: LogInInput) -> AuthPayload:
        services = info.context.services
        async with services.sessionmaker() as session:
            row = await user_data.find_user_by_login(session, login=input.login.strip())
        hashed = row.hashed_password if row is not None else None
        verified = await services.passwords.verify(hashed, input.password)
        if row is None or not verified or not row.is_active:
            raise Unauthenticated(WRONG_CREDENTIALS)
        return AuthPayload(
            token=issue_token(services.config, row.id), user=User.from_row(row, as_self=True)
        )

    @strawberry.mutation(description="Self or admin; only an admin may set isActive.")
    async def update_user(self, info: Info, id: strawberry.ID, input: UpdateUserInput) -> User:
        user_id = decode_user_id(id)
        viewer = require_self_or_admin(info.context, user_id)
        if input.is_active is not UNSET and not viewer.is_admin:
            raise Forbidden()
        values: dict[str, Any] = {}
        problems: dict[str, str | None] = {}
        if input.full_name is not UNSET:
            values["full_name"] = _clean_full_name(input.full_name)
            if values["full_name"]:
                problems["fullName"] = full_name_problem(values["full_name"])
        if input.email is not UNSET:
            if input.email is None:
                problems["email"] = "cannot be null"
            else:
                values["email"] = input.email.strip()
                problems["email"] = email_problem(values["email"])
        if input.password is not UNSET:
            if input.password is None:
                problems["password"] = "cannot be null"
            else:
                problems["password"] = password_problem(input.password)
        if input.is_active is not UNSET:
            if input.is_active is None:
                problems["isActive"] = "cannot be null"
            else:
                values["is_active"] = input.is_active
        raise_for(problems)
        services = info.context.services
        if isinstance(input.password, str):
            values["hashed_password"] = await services.passwords.hash(input.password)
        try:
            async with services.sessionmaker() as session, session.begin():
                row = await user_data.update_user(session, user_id=user_id, values=values)
        except db_errors.Conflict as exc:
            raise Conflict(exc.field) from exc
        if row is None:
            raise NotFound()
        info.context.loaders.user_by_id.put(row.id, row)
        return User.from_row(row)

    @strawberry.mutation(description="Self or admin; deletes the user's conversations too.")
    async def delete_user(self, info: Info, id: strawberry.ID) -> DeletePayload:
        user_id = decode_user_id(id)
        require_self_or_admin(info.context, user_id)
        async with info.context.sessionmaker() as session, session.begin():
            deleted = await user_data.delete_user(session, user_id=user_id)
        if not deleted:
            raise NotFound()
        info.context.loaders.user_by_id.clear(user_id)
        return DeletePayload(deleted_id=strawberry.ID(to_global_id("User", user_id)))

    @strawberry.mutation(description="A new conversation owned by the viewer.")
    async def create_conversation(self, info: Info, input: CreateConversationInput) -> Conversation:
        viewer = require_viewer(info.context)
        title = input.title.strip()
        raise_for({"title": title_problem(title)})
        async with info.context.sessionmaker() as session, session.begin():
            row = await conversation_data.create_conversation(
                session, owner_id=viewer.id, title=title
            )
        info.context.loaders.conversation_by_id.put(row.id, row)
        return Conversation.from_row(row)

    @strawberry.mutation(
        description="Add a message; resending a clientId returns the first message."
    )
    async def send_message(self, info: Info, input: SendMessageInput) -> Message:
        viewer = require_viewer(info.context)
        conversation_id = decode_conversation_id(input.conversation_id, field="conversationId")
        raise_for(
            {
                "content": content_problem(input.content),
                "clientId": client_id_problem(input.client_id) if input.client_id else None,
            }
        )
        owner_scope = None if viewer.is_admin else viewer.id
        services = info.context.services
        async with services.sessionmaker() as session, session.begin():
            conversation = await conversation_data.get_conversation_for_update(
                session, conversation_id=conversation_id, owner_id=owner_scope
            )
            if conversation is None:
                raise NotFound()
            row, created = await message_data.add_message(
                session,
                conversation_id=conversation_id,
                role=input.role or MessageRole.USER,
                content=input.content,
                client_id=input.client_id,
            )
            if created:
                await conversation_data.touch_conversation(
                    session, conversation_id=conversation_id, at=row.created_at
                )
                await services.broker.publish(
                    session, conversation_id=conversation_id, message_ids=[row.id]
                )
        info.context.loaders.forget_conversation(conversation_id)
        info.context.loaders.message_by_id.put(row.id, row)
        return Message.from_row(row)
