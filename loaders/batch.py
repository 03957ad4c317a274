"""The pieces every loader is made of.

aiodataloader dispatches each batch as its own task, so sibling fields load concurrently; an
`AsyncSession` is not safe across tasks, so every batch opens a short session of its own
(`in_session`), or reads through `db.reads`, which needs none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from aiodataloader import DataLoader
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.deadline import hold_until_done
from db.engine import idempotent_read

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = TypeVar("P", bound=Hashable)

Fetch = Callable[[AsyncSession, Sequence[K]], Awaitable[dict[Any, V]]]
Load = Callable[[Sequence[K]], Awaitable[dict[Any, V]]]


def in_session(sessionmaker: async_sessionmaker[AsyncSession], fetch: Fetch[K, V]) -> Load[K, V]:
    """`fetch` run in a read session of its own (a second one if the first's connection broke)."""

    async def load(keys: Sequence[K]) -> dict[Any, V]:
        return await idempotent_read(sessionmaker, lambda session: fetch(session, keys))

    return load


class BatchLoader(DataLoader[K, V]):
    """Loads a batch of keys with one call of `load`; keys it does not find get `default`."""

    def __init__(self, load: Load[K, V], default: V) -> None:
        super().__init__()
        self._load = load
        self._default = default

    async def batch_load_fn(self, keys: Sequence[K]) -> list[V]:
        # aiodataloader runs the batch as a task that nobody awaits (its callers await their
        # futures, and may be cancelled): the app's shutdown waits for it before closing its
        # pools, which it would otherwise give its connection back to once closed.
        task = asyncio.current_task()
        if task is not None:
            hold_until_done(task)
        found = await self._load(keys)
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
