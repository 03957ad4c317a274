"""Automatic persisted queries (Apollo's protocol), shared by every process on one database."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import select

from db.models import PersistedQuery
from server import Settings
from tests.factories import Sessionmaker
from tests.helpers import Api, StatementCounter, serve
from transport.persisted import BAD_EXTENSION, HASH_MISMATCH, NOT_FOUND, PersistedQueries

QUERY = "query Hello { __typename }"
HASH = hashlib.sha256(QUERY.encode()).hexdigest()
HELLO = {"data": {"__typename": "Query"}}
GRAPHQL_RESPONSE = "application/graphql-response+json"


def persisted(sha256: str = HASH, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256}}


NOT_FOUND_RESULT = {
    "errors": [{"message": NOT_FOUND, "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]
}


async def stored(sessionmaker: Sessionmaker) -> dict[str, str]:
    async with sessionmaker() as session:
        rows = (await session.execute(select(PersistedQuery.sha256, PersistedQuery.query))).all()
    return {row.sha256: row.query for row in rows}


async def test_an_unknown_hash_is_persisted_query_not_found(api: Api) -> None:
    response = await api.post(None, extensions=persisted())
    assert (response.status_code, response.json()) == (200, NOT_FOUND_RESULT)


async def test_an_unknown_hash_is_400_in_graphql_response_json(api: Api) -> None:
    response = await api.post(None, extensions=persisted(), headers={"Accept": GRAPHQL_RESPONSE})
    assert (response.status_code, response.json()) == (400, NOT_FOUND_RESULT)
    assert response.headers["content-type"] == GRAPHQL_RESPONSE


async def test_a_registered_query_is_served_by_its_hash(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    registered = await api.post(QUERY, extensions=persisted())
    assert (registered.status_code, registered.json()) == (200, HELLO)
    assert await stored(sessionmaker) == {HASH: QUERY}
    statements.reset()
    hit = await api.post(None, extensions=persisted())
    assert (hit.status_code, hit.json()) == (200, HELLO)
    assert statements.count == 0  # served from the process's cache


async def test_registering_twice_keeps_one_row(api: Api, sessionmaker: Sessionmaker) -> None:
    for _ in range(2):
        response = await api.post(QUERY, extensions=persisted())
        assert response.json() == HELLO
    assert await stored(sessionmaker) == {HASH: QUERY}


async def test_a_hash_that_does_not_match_the_query_is_refused_and_stores_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    response = await api.post("{ __typename }", extensions=persisted())
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "message": HASH_MISMATCH,
                "extensions": {
                    "code": "BAD_USER_INPUT",
                    "fields": {"sha256Hash": "is not the SHA-256 of the query"},
                },
            }
        ]
    }
    assert await stored(sessionmaker) == {}


async def test_a_query_that_fails_validation_is_not_stored(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    query = "{ nope }"
    sha256 = hashlib.sha256(query.encode()).hexdigest()
    response = await api.post(query, extensions=persisted(sha256))
    assert response.json()["errors"][0]["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert await stored(sessionmaker) == {}
    again = await api.post(None, extensions=persisted(sha256))
    assert again.json() == NOT_FOUND_RESULT


@pytest.mark.parametrize(
    "extensions",
    [
        pytest.param(persisted(version=2), id="version-2"),
        pytest.param({"persistedQuery": {"version": 1}}, id="no-hash"),
        pytest.param({"persistedQuery": {"version": 1, "sha256Hash": 7}}, id="hash-not-a-string"),
        pytest.param({"persistedQuery": "yes"}, id="not-an-object"),
    ],
)
async def test_a_malformed_extension_is_400(api: Api, extensions: dict[str, Any]) -> None:
    response = await api.post(QUERY, extensions=extensions)
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"message": BAD_EXTENSION, "extensions": {"code": "BAD_REQUEST"}}]
    }


async def test_a_malformed_hash_alone_is_simply_not_found(
    api: Api, statements: StatementCounter
) -> None:
    statements.reset()
    response = await api.post(None, extensions=persisted("not-a-hash"))
    assert response.json() == NOT_FOUND_RESULT
    assert statements.count == 0


async def test_persisted_queries_work_over_get(api: Api) -> None:
    params = {"extensions": json.dumps(persisted())}
    headers = {"Apollo-Require-Preflight": "true", "Accept": "*/*"}
    missing = await api.raw("GET", params=params, headers=headers)
    registered = await api.raw("GET", params={**params, "query": QUERY}, headers=headers)
    hit = await api.raw("GET", params=params, headers=headers)
    assert (missing.status_code, missing.json()) == (200, NOT_FOUND_RESULT)
    assert (registered.status_code, registered.json()) == (200, HELLO)
    assert (hit.status_code, hit.json()) == (200, HELLO)


async def test_a_persisted_mutation_over_get_is_still_405(api: Api) -> None:
    mutation = 'mutation { logIn(input: {login: "x", password: "y"}) { token } }'
    sha256 = hashlib.sha256(mutation.encode()).hexdigest()
    await api.post(mutation, extensions=persisted(sha256))
    response = await api.raw(
        "GET",
        params={"extensions": json.dumps(persisted(sha256))},
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    assert response.status_code == 405


async def test_a_persisted_query_takes_variables(api: Api) -> None:
    query = "query Echo($skip: Boolean!) { __typename @skip(if: $skip) }"
    sha256 = hashlib.sha256(query.encode()).hexdigest()
    first = await api.post(query, {"skip": False}, extensions=persisted(sha256))
    second = await api.post(None, {"skip": True}, extensions=persisted(sha256))
    assert [first.json(), second.json()] == [HELLO, {"data": {}}]


@pytest.mark.postgres_only
async def test_a_query_registered_on_one_process_is_served_by_another(
    api: Api, settings: Settings, sessionmaker: Sessionmaker
) -> None:
    async with serve(settings) as other:
        missing = await other.post(None, extensions=persisted())
        registered = await api.post(QUERY, extensions=persisted())
        hit = await other.post(None, extensions=persisted())
    assert missing.json() == NOT_FOUND_RESULT
    assert registered.json() == hit.json() == HELLO
    assert await stored(sessionmaker) == {HASH: QUERY}


@pytest.mark.postgres_only
async def test_two_processes_registering_the_same_query_keep_one_row(
    api: Api, settings: Settings, sessionmaker: Sessionmaker
) -> None:
    async with serve(settings) as other:
        first = await api.post(QUERY, extensions=persisted())
        second = await other.post(QUERY, extensions=persisted())
    assert first.json() == second.json() == HELLO
    assert await stored(sessionmaker) == {HASH: QUERY}


async def test_the_cache_forgets_the_least_recently_used_query(
    sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    store = PersistedQueries(sessionmaker, capacity=2)
    queries = [f"query Q{i} {{ __typename }}" for i in range(3)]
    hashes = [hashlib.sha256(query.encode()).hexdigest() for query in queries]
    for query, sha256 in zip(queries, hashes, strict=True):
        await store.add(sha256, query)
    statements.reset()
    assert await store.get(hashes[2]) == queries[2]
    assert statements.count == 0
    # The first was pushed out of the cache; the table still has it.
    assert await store.get(hashes[0]) == queries[0]
    assert statements.count == 1
