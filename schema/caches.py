"""Parsed and validated documents, kept across requests, keyed by the query text; and what
the extensions learn from a document alone, kept as long as the document (`PerDocument`).

Clients send the same few documents over and over; parsing and validating them again costs
more than running a small query. Unlike Strawberry's `ParserCache`, which raises a syntax
error from inside its hook (and so past the extensions that give errors their codes), this
only hands Strawberry a document it parsed before: anything that fails is parsed again, by
Strawberry, and fails exactly as it would without the cache.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from graphql import DocumentNode, GraphQLError, Node
from strawberry.extensions import SchemaExtension

T = TypeVar("T")
N = TypeVar("N", bound=Node)


class DocumentCache:
    """At most `size` documents, the oldest dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parsed: dict[str, DocumentNode] = {}
        self.validated: dict[str, list[GraphQLError]] = {}

    def keep(self, query: str, document: DocumentNode) -> None:
        if len(self.parsed) >= self.size:
            oldest = next(iter(self.parsed))
            del self.parsed[oldest]
            self.validated.pop(oldest, None)
        self.parsed[query] = document

    def extension(self) -> Callable[[], SchemaExtension]:
        cache = self

        class Cached(SchemaExtension):
            def on_parse(self) -> Iterator[None]:
                context = self.execution_context
                query = context.query
                known = cache.parsed.get(query) if query else None
                if known is not None and context.graphql_document is None:
                    context.graphql_document = known
                yield
                if query and known is None and context.graphql_document is not None:
                    cache.keep(query, context.graphql_document)

            def on_validate(self) -> Iterator[None]:
                context = self.execution_context
                query = context.query
                cached = query is not None and context.graphql_document is cache.parsed.get(query)
                # Only a document that passed is remembered: errors are found afresh.
                if cached and query in cache.validated and context.pre_execution_errors is None:
                    context.pre_execution_errors = []
                yield
                if cached and query is not None and context.pre_execution_errors == []:
                    cache.validated[query] = []

        return Cached


class PerDocument(Generic[N, T]):
    """What `compute` makes of a document (or of one of its nodes, an operation say), worked
    out once and kept as long as the document.

    Documents the `DocumentCache` hands out live across requests, so facts about them are
    found again; without that cache each request parses its own document, whose facts go
    with it. Keyed by identity: a document's own hash walks the whole tree.
    """

    def __init__(self, compute: Callable[[N], T]) -> None:
        self.compute = compute
        self.known: dict[int, tuple[weakref.ref[N], T]] = {}

    def __call__(self, document: N) -> T:
        key = id(document)
        entry = self.known.get(key)
        if entry is not None and entry[0]() is document:
            return entry[1]
        value = self.compute(document)
        known = self.known

        def forget(ref: weakref.ref[N]) -> None:
            if known.get(key, (None,))[0] is ref:
                del known[key]

        self.known[key] = (weakref.ref(document, forget), value)
        return value
