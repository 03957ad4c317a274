"""What the extensions learn from a document is worked out once and lives as long as it."""

from __future__ import annotations

import gc

from graphql import DocumentNode, parse

from schema.caches import PerDocument


def test_facts_are_worked_out_once_per_document_and_forgotten_with_it() -> None:
    seen: list[str] = []

    def name(document: DocumentNode) -> str:
        text = document.loc.source.body if document.loc else ""
        seen.append(text)
        return text

    facts = PerDocument(name)
    first, second = parse("{ a }"), parse("{ a }")
    answers = [facts(first), facts(first), facts(second), facts(first)]
    del first
    gc.collect()
    assert (answers, seen, list(facts.known)) == (
        ["{ a }"] * 4,
        ["{ a }", "{ a }"],
        [id(second)],
    )
