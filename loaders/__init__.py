"""Per-request DataLoaders: every loader answers a whole batch with one SQL statement.

`make_loaders` is called once per request (in the GraphQL context), so caches live exactly as
long as one request and never leak data between viewers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db import branches, conversations, messages, page_json, users
from db.branches import SiblingsKey
from db.conversations import ConversationFilter
from db.page_json import JsonPage, Shape
from db.pagination import Page, PageRequest
from db.reads import Reads, SessionReads
from loaders.batch import BatchLoader, LoaderFamily, in_session

UsersPageKey = tuple[PageRequest, str | None]
# A page of a user's conversations: the request and which conversations it takes.
ConversationsPageKey = tuple[PageRequest, ConversationFilter]
JsonPageKey = tuple[PageRequest, Shape]
# A top-level connection has one parent, the whole table; DataLoader keys cannot be None.
EVERYONE = "*"


@dataclass(frozen=True)
class Viewer:
    id: int
    is_admin: bool


class Loaders:
    """The loaders of one request, each made when it is first used (most requests use a few,
    and some, `{ __typename }` say, none)."""

    user_by_id: BatchLoader[int, Row[Any] | None]
    user_by_username: BatchLoader[str, Row[Any] | None]
    conversation_by_id: BatchLoader[str, Row[Any] | None]
    message_by_id: BatchLoader[int, Row[Any] | None]
    # The earlier revisions of each message, oldest first (its current content is on it).
    revisions_by_message: BatchLoader[int, list[Row[Any]]]
    conversation_count_by_user: BatchLoader[int, int]  # the default list's (not archived)
    conversation_count_by_user_filtered: LoaderFamily[ConversationFilter, int, int]
    tags_by_user: BatchLoader[int, list[str]]
    # Messages after each conversation's read mark that its owner did not write.
    unread_count_by_conversation: BatchLoader[str, int]
    message_count_by_conversation: BatchLoader[str, int]
    # The children of each (conversation, parent), oldest first (`db.branches`).
    siblings_by_parent: BatchLoader[SiblingsKey, list[Row[Any]]]
    user_count_by_search: BatchLoader[str, int]  # "" counts everyone
    users_page: LoaderFamily[UsersPageKey, str, Page]
    conversations_page_by_user: LoaderFamily[ConversationsPageKey, int, Page]
    # The same pages, each row with its `message_count`.
    conversations_with_counts_page_by_user: LoaderFamily[ConversationsPageKey, int, Page]
    messages_page_by_conversation: LoaderFamily[PageRequest, str, Page]
    # The same pages with their edges already JSON, for a selection of plain message fields.
    message_json_pages_by_conversation: LoaderFamily[JsonPageKey, str, JsonPage]

    def __init__(self, makers: dict[str, Callable[[], Any]]) -> None:
        self._makers = makers

    def __getattr__(self, name: str) -> Any:
        # Only reached for a loader not made yet (made ones are plain attributes).
        maker = self.__dict__.get("_makers", {}).get(name)
        if maker is None:
            raise AttributeError(name)
        made = self.__dict__[name] = maker()
        return made

    def prime_when_made(self, name: str, key: Any, value: Any) -> None:
        """`prime(key, value)` on loader `name` when it is made (at once if it is made already):
        a request that never uses it does not pay for making it."""
        made = self.__dict__.get(name)
        if made is not None:
            made.prime(key, value)
            return
        maker = self._makers[name]

        def primed() -> Any:
            loader = maker()
            loader.prime(key, value)
            return loader

        self._makers[name] = primed

    def forget_conversation(self, conversation_id: str) -> None:
        """Drop what a write to one conversation made stale."""
        self.conversation_by_id.clear(conversation_id)
        self.message_count_by_conversation.clear(conversation_id)
        self.revisions_by_message.clear_all()
        self.messages_page_by_conversation.clear_all()
        self.message_json_pages_by_conversation.clear_all()
        self.conversations_page_by_user.clear_all()
        self.conversations_with_counts_page_by_user.clear_all()
        self.conversation_count_by_user.clear_all()
        self.conversation_count_by_user_filtered.clear_all()
        self.tags_by_user.clear_all()
        self.unread_count_by_conversation.clear(conversation_id)
        self.siblings_by_parent.clear_all()


def make_loaders(
    sessionmaker: async_sessionmaker[AsyncSession],
    viewer: Viewer | None,
    reads: Reads | None = None,
) -> Loaders:
    """`reads` serves the loaders on the hot path (by default, sessions of `sessionmaker`)."""
    source: Reads = reads or SessionReads(sessionmaker)
    # None scopes a lookup to every owner: admins see everything. Anonymous viewers are
    # turned away by the resolvers before any loader runs; scope them to nobody anyway.
    owner_scope = None if viewer is not None and viewer.is_admin else (viewer.id if viewer else -1)

    async def user_rows(session: AsyncSession, ids: Sequence[int]) -> dict[Any, Row[Any] | None]:
        return dict(await users.users_by_ids(session, ids=ids))

    async def user_rows_by_name(
        session: AsyncSession, names: Sequence[str]
    ) -> dict[Any, Row[Any] | None]:
        found = await users.users_by_usernames(session, usernames=names)
        return {name: found.get(name) for name in names}

    async def conversation_rows(ids: Sequence[str]) -> dict[Any, Row[Any] | None]:
        found = await conversations.conversations_by_ids(source, ids=ids, owner_id=owner_scope)
        return dict(found)

    async def message_rows(session: AsyncSession, ids: Sequence[int]) -> dict[Any, Row[Any] | None]:
        return dict(await messages.messages_by_ids(session, ids=ids, owner_id=owner_scope))

    async def revision_rows(session: AsyncSession, ids: Sequence[int]) -> dict[Any, list[Row[Any]]]:
        return dict(await messages.revisions_by_message(session, message_ids=ids))

    async def conversation_counts(session: AsyncSession, ids: Sequence[int]) -> dict[Any, int]:
        return dict(await conversations.conversation_counts_by_user(session, user_ids=ids))

    async def filtered_conversation_counts(
        wanted: ConversationFilter, session: AsyncSession, ids: Sequence[int]
    ) -> dict[Any, int]:
        return dict(
            await conversations.conversation_counts_by_user(session, user_ids=ids, wanted=wanted)
        )

    async def tag_lists(session: AsyncSession, ids: Sequence[int]) -> dict[Any, list[str]]:
        return dict(await conversations.tags_by_user(session, user_ids=ids))

    async def unread_counts(ids: Sequence[str]) -> dict[Any, int]:
        return dict(await conversations.unread_counts(source, conversation_ids=ids))

    async def message_counts(session: AsyncSession, ids: Sequence[str]) -> dict[Any, int]:
        return dict(await messages.message_counts_by_conversation(session, conversation_ids=ids))

    async def sibling_rows(
        session: AsyncSession, keys: Sequence[SiblingsKey]
    ) -> dict[Any, list[Row[Any]]]:
        return dict(await branches.siblings_by_parent(session, keys=keys))

    async def user_counts(session: AsyncSession, searches: Sequence[str]) -> dict[Any, int]:
        # Keyed by the search text; "" (no search) counts everyone: None is not a valid key.
        return {
            search: await users.count_users(session, search=search or None) for search in searches
        }

    async def users_pages(
        key: UsersPageKey, session: AsyncSession, parents: Sequence[str]
    ) -> dict[Hashable, Page]:
        request, search = key
        return {EVERYONE: await users.users_page(session, request=request, search=search)}

    async def conversation_pages(
        key: ConversationsPageKey, session: AsyncSession, user_ids: Sequence[int]
    ) -> dict[Hashable, Page]:
        request, wanted = key
        return await conversations.conversation_pages_by_user(
            session, user_ids=user_ids, request=request, wanted=wanted
        )

    async def counted_conversation_pages(
        key: ConversationsPageKey, session: AsyncSession, user_ids: Sequence[int]
    ) -> dict[Hashable, Page]:
        request, wanted = key
        return await conversations.conversation_pages_by_user(
            session, user_ids=user_ids, request=request, with_message_counts=True, wanted=wanted
        )

    async def message_pages(
        request: PageRequest, session: AsyncSession, conversation_ids: Sequence[str]
    ) -> dict[Hashable, Page]:
        return await messages.message_pages_by_conversation(
            session, conversation_ids=conversation_ids, request=request
        )

    async def message_json_pages(
        key: JsonPageKey, conversation_ids: Sequence[str]
    ) -> dict[Hashable, JsonPage]:
        request, shape = key
        return await page_json.message_json_pages(
            source,
            conversation_ids=conversation_ids,
            request=request,
            shape=shape,
            owner_id=owner_scope,
        )

    def loader(fetch: Any, default: Any) -> Any:
        return BatchLoader(in_session(sessionmaker, fetch), default)

    def family(fetch: Any) -> Any:
        return LoaderFamily(lambda params: loader(partial(fetch, params), Page()))

    return Loaders(
        {
            "user_by_id": lambda: loader(user_rows, None),
            "user_by_username": lambda: loader(user_rows_by_name, None),
            "conversation_by_id": lambda: BatchLoader(conversation_rows, None),
            "message_by_id": lambda: loader(message_rows, None),
            "revisions_by_message": lambda: loader(revision_rows, []),
            "conversation_count_by_user": lambda: loader(conversation_counts, 0),
            "conversation_count_by_user_filtered": lambda: LoaderFamily(
                lambda wanted: loader(partial(filtered_conversation_counts, wanted), 0)
            ),
            "tags_by_user": lambda: loader(tag_lists, []),
            "unread_count_by_conversation": lambda: BatchLoader(unread_counts, 0),
            "message_count_by_conversation": lambda: loader(message_counts, 0),
            "user_count_by_search": lambda: loader(user_counts, 0),
            "siblings_by_parent": lambda: loader(sibling_rows, []),
            "users_page": lambda: family(users_pages),
            "conversations_page_by_user": lambda: family(conversation_pages),
            "conversations_with_counts_page_by_user": lambda: family(counted_conversation_pages),
            "messages_page_by_conversation": lambda: family(message_pages),
            "message_json_pages_by_conversation": lambda: LoaderFamily(
                lambda key: BatchLoader(partial(message_json_pages, key), JsonPage())
            ),
        }
    )
