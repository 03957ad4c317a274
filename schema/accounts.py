"""Account mutations: sign up, log in, update and delete users."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy import Row
from strawberry import UNSET

from db import errors as db_errors
from db import users as user_data
from db.engine import read_session, write_transaction
from schema.auth import issue_token
from schema.errors import (
    WRONG_CREDENTIALS,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from schema.inputs import LogInInput, SignUpInput, UpdateUserInput
from schema.login_limits import (
    begin_login_attempt,
    begin_sign_up,
    end_login_attempt,
    login_key,
    take_back,
)
from schema.permissions import require_self_or_admin
from schema.relay import decode_user_id, to_global_id
from schema.types import AuthPayload, DeletePayload, Info, User
from schema.validation import (
    email_problem,
    full_name_problem,
    login_password_problem,
    login_problem,
    password_problem,
    raise_for,
    trimmed,
    username_problem,
)


def _clean_full_name(value: str | None) -> str | None:
    return (trimmed(value) or None) if value is not None else None


def _signed_in(info: Info, row: Row[Any]) -> AuthPayload:
    """The payload of a sign-up or login. Its user is the viewer of the rest of the response,
    as the token it carries says (a `me`, in effect: conversations, email and all)."""
    info.context.sign_in_as(row)
    return AuthPayload(
        token=issue_token(info.context.config, row.id, row.account_key),
        user=User.from_row(row),
    )


@strawberry.type
class AccountMutations:
    @strawberry.mutation(description="Create an account; the first one is an admin.")
    async def sign_up(self, info: Info, input: SignUpInput) -> AuthPayload:
        email = trimmed(input.email)
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
        attempt = await begin_sign_up(services, client_address=info.context.client_address)
        try:
            hashed = await services.passwords.hash(input.password)
        except RateLimited:
            await take_back(services, attempt)
            raise
        try:
            async with write_transaction(services.sessionmaker) as session:
                row = await user_data.create_user(
                    session,
                    username=input.username,
                    email=email,
                    hashed_password=hashed,
                    full_name=full_name,
                )
        except db_errors.Conflict as exc:
            raise Conflict(exc.field) from exc
        return _signed_in(info, row)

    @strawberry.mutation(description="Exchange a username or email and a password for a token.")
    async def log_in(self, info: Info, input: LogInInput) -> AuthPayload:
        login = trimmed(input.login)
        raise_for(
            {"login": login_problem(login), "password": login_password_problem(input.password)}
        )
        services = info.context.services
        # Known or not, the same statements run before the password is checked, so neither
        # the answer nor its time tells which.
        async with read_session(services.sessionmaker) as session:
            row = await user_data.find_user_by_login(session, login=login)
        attempt = await begin_login_attempt(
            services,
            key=login_key(user_id=row.id if row is not None else None, login=login),
            client_address=info.context.client_address,
        )
        hashed = row.hashed_password if row is not None else None
        try:
            verified = await services.passwords.verify(hashed, input.password)
        except RateLimited:
            await take_back(services, attempt)
            raise
        if row is None or not verified or not row.is_active:
            raise Unauthenticated(WRONG_CREDENTIALS)
        await end_login_attempt(services, attempt)
        return _signed_in(info, row)

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
                values["email"] = trimmed(input.email)
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
            async with write_transaction(services.sessionmaker) as session:
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
        viewer = require_self_or_admin(info.context, user_id)
        async with write_transaction(info.context.sessionmaker) as session:
            deleted = await user_data.delete_user(session, user_id=user_id)
        if not deleted:
            raise NotFound()
        if user_id == viewer.id:
            # The rest of the request has no viewer: what it does next would be on behalf of
            # an account that no longer exists.
            info.context.sign_in_as(None)
        else:
            info.context.loaders.user_by_id.clear(user_id)
        return DeletePayload(deleted_id=strawberry.ID(to_global_id("User", user_id)))
