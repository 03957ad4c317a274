"""Automatic persisted queries (Apollo's protocol), shared by every process on one database."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from app.settings import Settings
from db.models import Conversation, PersistedQuery, utcnow
from schema.errors import INTERNAL
from schema.limits import TEXT_REFUSED, TOO_DEEP
from schema.validation import HAS_NUL, NOT_UNICODE
from tests.conftest import ApiFactory
from tests.factories import Sessionmaker, make_user, token_for
from tests.helpers import Api, StatementCounter, serve
from transport.persisted import (
    BAD_EXTENSION,
    HASH_MISMATCH,
    NOT_FOUND,
    TOO_LARGE,
    PersistedQueries,
)

QUERY = "query Hello { __typename }"
HASH = hashlib.sha256(QUERY.encode()).hexdigest()
HELLO = {"data": {"__typename": "Query"}}
GRAPHQL_RESPONSE = "application/graphql-response+json"


def persisted(sha256: str = HASH, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256}}


NOT_FOUND_RESULT = {
    "errors": [{"message": NOT_FOUND, "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]
}


@pytest.fixture
async def token(sessionmaker: Sessionmaker) -> str:
    """A logged-in client's: only theirs are stored."""
    return token_for(await make_user(sessionmaker))


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
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter, token: str
) -> None:
    registered = await api.post(QUERY, extensions=persisted(), token=token)
    assert (registered.status_code, registered.json()) == (200, HELLO)
    assert await stored(sessionmaker) == {HASH: QUERY}
    statements.reset()
    hit = await api.post(None, extensions=persisted())
    assert (hit.status_code, hit.json()) == (200, HELLO)
    assert statements.count == 0  # served from the process's cache


async def test_registering_twice_keeps_one_row(
    api: Api, sessionmaker: Sessionmaker, token: str
) -> None:
    for _ in range(2):
        response = await api.post(QUERY, extensions=persisted(), token=token)
        assert response.json() == HELLO
    assert await stored(sessionmaker) == {HASH: QUERY}


async def test_a_hash_that_does_not_match_the_query_is_refused_and_stores_nothing(
    api: Api, sessionmaker: Sessionmaker, token: str
) -> None:
    response = await api.post("{ __typename }", extensions=persisted(), token=token)
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
    api: Api, sessionmaker: Sessionmaker, token: str
) -> None:
    query = "{ nope }"
    sha256 = hashlib.sha256(query.encode()).hexdigest()
    response = await api.post(query, extensions=persisted(sha256), token=token)
    assert response.json()["errors"][0]["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert await stored(sessionmaker) == {}
    again = await api.post(None, extensions=persisted(sha256))
    assert again.json() == NOT_FOUND_RESULT


async def test_a_query_over_a_limit_is_not_stored(
    other_app: ApiFactory, sessionmaker: Sessionmaker, token: str
) -> None:
    query = "{ me { conversations { totalCount } } }"
    async with other_app(max_query_depth=2) as api:
        response = await api.post(query, extensions=persisted(sha(query)), token=token)
    extensions = {"code": "QUERY_TOO_COMPLEX", "limit": 2, "actual": 3}
    message = TOO_DEEP.format(limit=2, actual=3)
    assert response.json() == {"errors": [{"message": message, "extensions": extensions}]}
    assert await stored(sessionmaker) == {}


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


async def test_persisted_queries_work_over_get(api: Api, token: str) -> None:
    params = {"extensions": json.dumps(persisted())}
    headers = {
        "Apollo-Require-Preflight": "true",
        "Accept": "*/*",
        "Authorization": f"Bearer {token}",
    }
    missing = await api.raw("GET", params=params, headers=headers)
    registered = await api.raw("GET", params={**params, "query": QUERY}, headers=headers)
    hit = await api.raw("GET", params=params, headers=headers)
    assert (missing.status_code, missing.json()) == (200, NOT_FOUND_RESULT)
    assert (registered.status_code, registered.json()) == (200, HELLO)
    assert (hit.status_code, hit.json()) == (200, HELLO)


async def test_a_persisted_mutation_over_get_is_still_405(api: Api, token: str) -> None:
    mutation = 'mutation { logIn(input: {login: "x", password: "y"}) { token } }'
    sha256 = hashlib.sha256(mutation.encode()).hexdigest()
    await api.post(mutation, extensions=persisted(sha256), token=token)
    response = await api.raw(
        "GET",
        params={"extensions": json.dumps(persisted(sha256))},
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    assert response.status_code == 405


async def test_a_persisted_query_takes_variables(api: Api, token: str) -> None:
    query = "query Echo($skip: Boolean!) { __typename @skip(if: $skip) }"
    sha256 = hashlib.sha256(query.encode()).hexdigest()
    first = await api.post(query, {"skip": False}, extensions=persisted(sha256), token=token)
    second = await api.post(None, {"skip": True}, extensions=persisted(sha256))
    assert [first.json(), second.json()] == [HELLO, {"data": {}}]


@pytest.mark.postgres_only
async def test_a_query_registered_on_one_process_is_served_by_another(
    api: Api, settings: Settings, sessionmaker: Sessionmaker, token: str
) -> None:
    async with serve(settings) as other:
        missing = await other.post(None, extensions=persisted())
        registered = await api.post(QUERY, extensions=persisted(), token=token)
        hit = await other.post(None, extensions=persisted())
    assert missing.json() == NOT_FOUND_RESULT
    assert registered.json() == hit.json() == HELLO
    assert await stored(sessionmaker) == {HASH: QUERY}


@pytest.mark.postgres_only
async def test_two_processes_registering_the_same_query_keep_one_row(
    api: Api, settings: Settings, sessionmaker: Sessionmaker, token: str
) -> None:
    async with serve(settings) as other:
        first = await api.post(QUERY, extensions=persisted(), token=token)
        second = await other.post(QUERY, extensions=persisted(), token=token)
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


# ---- bounds: who stores, what, how many, how long ----------------------------------------

CREATE = 'mutation { createConversation(input: {title: "t"}) { title } }'
CREATED = {"data": {"createConversation": {"title": "t"}}}


def sha(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()


async def conversation_count(sessionmaker: Sessionmaker) -> int:
    async with sessionmaker() as session:
        count = await session.execute(select(func.count()).select_from(Conversation))
        return int(count.scalar_one())


async def test_an_anonymous_clients_query_runs_but_is_not_stored(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    registered = await api.post(QUERY, extensions=persisted())
    again = await api.post(None, extensions=persisted())
    assert (registered.json(), again.json()) == (HELLO, NOT_FOUND_RESULT)
    assert await stored(sessionmaker) == {}


@pytest.mark.parametrize(
    ("comment", "reason"),
    [("# \x00", HAS_NUL), ("# \ud800", NOT_UNICODE)],
    ids=["nul", "lone-surrogate"],
)
async def test_a_document_no_database_keeps_is_refused_before_it_runs(
    api: Api, sessionmaker: Sessionmaker, token: str, comment: str, reason: str
) -> None:
    mutation = f"{CREATE} {comment}"
    # Encoded with ASCII escapes: a lone surrogate is valid JSON ("\ud800") but no UTF-8.
    body = json.dumps({"query": mutation, "extensions": persisted(sha(mutation))})
    response = await api.raw(
        "POST", content=body, headers={"Content-Type": "application/json"}, token=token
    )
    assert (response.status_code, response.json()) == (
        200,
        {
            "errors": [
                {
                    "message": TEXT_REFUSED,
                    "extensions": {"code": "BAD_USER_INPUT", "fields": {"query": reason}},
                }
            ]
        },
    )
    assert (await conversation_count(sessionmaker), await stored(sessionmaker)) == (0, {})


async def test_a_document_over_the_size_limit_is_refused_before_it_runs(
    other_app: ApiFactory, sessionmaker: Sessionmaker, token: str
) -> None:
    mutation = f"{CREATE} # {'x' * 100}"
    size = len(mutation.encode())
    async with other_app(persisted_query_max_bytes=100) as api:
        response = await api.post(mutation, extensions=persisted(sha(mutation)), token=token)
    assert (response.status_code, response.json()) == (
        200,
        {
            "errors": [
                {
                    "message": TOO_LARGE.format(limit=100, actual=size),
                    "extensions": {"code": "QUERY_TOO_COMPLEX", "limit": 100, "actual": size},
                }
            ]
        },
    )
    assert (await conversation_count(sessionmaker), await stored(sessionmaker)) == (0, {})


async def test_a_mutation_whose_query_cannot_be_stored_does_not_run(
    api: Api, sessionmaker: Sessionmaker, token: str
) -> None:
    # The table is gone for a moment: storing fails as the database fails it.
    async with sessionmaker() as session, session.begin():
        await session.execute(text("ALTER TABLE persisted_queries RENAME TO persisted_away"))
    try:
        response = await api.post(CREATE, extensions=persisted(sha(CREATE)), token=token)
    finally:
        async with sessionmaker() as session, session.begin():
            await session.execute(text("ALTER TABLE persisted_away RENAME TO persisted_queries"))
    result = response.json()
    assert result["errors"][0]["extensions"].pop("requestId")
    assert (response.status_code, result) == (
        500,
        {"errors": [{"message": INTERNAL, "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]},
    )
    assert await conversation_count(sessionmaker) == 0
    # Once it can be stored, it runs once.
    retried = await api.post(CREATE, extensions=persisted(sha(CREATE)), token=token)
    assert (retried.json(), await conversation_count(sessionmaker)) == (CREATED, 1)
    assert await stored(sessionmaker) == {sha(CREATE): CREATE}


async def test_the_table_keeps_the_newest_queries_up_to_its_limit(
    other_app: ApiFactory, sessionmaker: Sessionmaker, token: str
) -> None:
    queries = [f"query Q{i} {{ __typename }}" for i in range(3)]
    async with other_app(persisted_query_max_rows=2) as api:
        for query in queries:
            response = await api.post(query, extensions=persisted(sha(query)), token=token)
            assert response.json() == HELLO
    assert await stored(sessionmaker) == {sha(query): query for query in queries[1:]}


async def test_a_query_is_served_until_it_expires(
    other_app: ApiFactory, sessionmaker: Sessionmaker, token: str
) -> None:
    async with other_app(persisted_query_ttl=60) as api:
        assert (await api.post(QUERY, extensions=persisted(), token=token)).json() == HELLO
        assert (await api.post(None, extensions=persisted())).json() == HELLO
    async with sessionmaker() as session, session.begin():
        an_hour_ago = utcnow() - timedelta(hours=1)
        await session.execute(update(PersistedQuery).values(created_at=an_hour_ago))
    other = "query Other { __typename }"
    # A process that has not seen it since.
    async with other_app(persisted_query_ttl=60) as api:
        expired = await api.post(None, extensions=persisted())
        # Registering another drops it from the table.
        await api.post(other, extensions=persisted(sha(other)), token=token)
    assert expired.json() == NOT_FOUND_RESULT
    assert await stored(sessionmaker) == {sha(other): other}
