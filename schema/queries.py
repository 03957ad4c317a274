"""The Query root."""

from __future__ import annotations

import asyncio
from typing import Any

import strawberry
from sqlalchemy import Row

from loaders import EVERYONE
from schema.errors import BadUserInput, NotFound
from schema.pagination import Connection, page_request
from schema.permissions import require_viewer
from schema.relay import decode_conversation_id, decode_user_id, parse_global_id
from schema.search import SearchFields
from schema.types import Conversation, Info, Message, Node, User


async def load_node(info: Info, global_id: str, *, field: str) -> Node | None:
    parsed = parse_global_id(global_id)
    if parsed is None:
        raise BadUserInput.one(field, "not a valid id")
    type_name, key = parsed
    loaders = info.context.loaders
    row: Row[Any] | None
    if type_name == "User":
        assert isinstance(key, int)
        row = await loaders.user_by_id.get(key)
        return User.from_row(row) if row else None
    if type_name == "Conversation":
        assert isinstance(key, str)
        row = await loaders.conversation_by_id.get(key)
        return Conversation.from_row(row) if row else None
    assert isinstance(key, int)
    row = await loaders.message_by_id.get(key)
    return Message.from_row(row) if row else None


@strawberry.type
class Query(SearchFields):  # searchMessages: schema/search.py
    @strawberry.field(description="Any object by its global id; null when it is not visible.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        require_viewer(info.context)
        return await load_node(info, id, field="id")

    @strawberry.field
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        require_viewer(info.context)
        if len(ids) > info.context.config.max_page_size:
            raise BadUserInput.one(
                "ids", f"at most {info.context.config.max_page_size} ids at once"
            )
        for index, global_id in enumerate(ids):
            if parse_global_id(global_id) is None:
                raise BadUserInput.one(f"ids.{index}", "not a valid id")
        return list(await asyncio.gather(*(load_node(info, i, field="ids") for i in ids)))

    @strawberry.field(description="The logged-in user; null when not logged in.")
    def me(self, info: Info) -> User | None:
        row = info.context.viewer_row
        return User.from_row(row) if row is not None else None

    @strawberry.field(description="Exactly one of `id` and `username`.")
    async def user(
        self, info: Info, id: strawberry.ID | None = None, username: str | None = None
    ) -> User | None:
        require_viewer(info.context)
        if (id is None) == (username is None):
            reason = "give exactly one of id and username"
            raise BadUserInput({"id": reason, "username": reason}, reason)
        loaders = info.context.loaders
        if id is not None:
            row = await loaders.user_by_id.get(decode_user_id(id))
        else:
            assert username is not None
            row = await loaders.user_by_username.get(username)
        return User.from_row(row) if row is not None else None

    @strawberry.field(description="Users by id; `search` matches username or full name.")
    async def users(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        search: str | None = None,
    ) -> Connection[User]:
        require_viewer(info.context)
        request = page_request(
            info.context.config, "user", first=first, after=after, last=last, before=before
        )
        needle = (search or "").strip() or None
        if needle is not None and len(needle) > 100:
            raise BadUserInput.one("search", "at most 100 characters")
        loaders = info.context.loaders
        page = await loaders.users_page((request, needle)).get(EVERYONE)
        return Connection[User].from_page(
            page,
            kind="user",
            node=User.from_row,
            count=lambda: loaders.user_count_by_search.get(needle or ""),
        )

    @strawberry.field(description="NOT_FOUND for conversations of others.")
    async def conversation(self, info: Info, id: strawberry.ID) -> Conversation | None:
        require_viewer(info.context)
        row = await info.context.loaders.conversation_by_id.get(decode_conversation_id(id))
        if row is None:
            raise NotFound()
        return Conversation.from_row(row)
