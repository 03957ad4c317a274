"""Parsed and validated documents, kept across requests, keyed by the query text.

Clients send the same few documents over and over; parsing and validating them again costs
more than running a small query. Unlike Strawberry's `ParserCache`, which raises a syntax
error from inside its hook (and so past the extensions that give errors their codes), this
only hands Strawberry a document it parsed before: anything that fails is parsed again, by
Strawberry, and fails exactly as it would without the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension


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
