"""The pieces every loader is made of.

aiodataloader dispatches each batch as its own task, so sibling fields load concurrently; an
`AsyncSession` is not safe across tasks, so every batch opens a short session of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import read_session

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = TypeVar("P", bound=Hashable)

Fetch = Callable[[AsyncSession, Sequence[K]], Awaitable[dict[Any, V]]]


class BatchLoader(DataLoader[K, V]):
    """Loads a batch of keys with one call of `fetch` in a session of its own."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        fetch: Fetch[K, V],
        default: V,
    ) -> None:
        super().__init__()
        self._sessionmaker = sessionmaker
        self._fetch = fetch
        self._default = default

    async def batch_load_fn(self, keys: Sequence[K]) -> list[V]:
        async with read_session(self._sessionmaker) as session:
            found = await self._fetch(session, keys)
        return [found.get(key, self._default) for key in keys]

    async def get(self, key: K) -> V:
        # The future is shared by every field that asked for this key. graphql-core cancels
        # a field's siblings when it fails; unshielded, that would cancel the shared future
        # and crash the other fields that wait on it.
        result: V = await asyncio.shield(self.load(key))
        return result

    def put(self, key: K, value: V) -> None:
        self.clear(key)
        self.prime(key, value)


class LoaderFamily(Generic[P, K, V]):
    """One loader per set of arguments (a page size and cursors, say), made on first use."""

    def __init__(self, make: Callable[[P], BatchLoader[K, V]]) -> None:
        self._make = make
        self._loaders: dict[P, BatchLoader[K, V]] = {}

    def __call__(self, params: P) -> BatchLoader[K, V]:
        loader = self._loaders.get(params)
        if loader is None:
            loader = self._loaders[params] = self._make(params)
        return loader

    def clear_all(self) -> None:
        self._loaders.clear()
