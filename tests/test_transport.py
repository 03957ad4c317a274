"""GraphQL over HTTP: methods, CSRF, media types, status codes, the body limit, CORS, masking."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette

from app.settings import Settings
from db.models import User
from schema.errors import INTERNAL
from schema.limits import BAD_OPERATION_NAME
from schema.operation import OPERATION_NAME_REQUIRED
from tests.factories import Sessionmaker, gid, make_user, token_for
from tests.helpers import Api, StatementCounter, serve
from transport.body import BODY_TOO_LARGE
from transport.view import (
    CSRF_REFUSED,
    METHOD_NOT_ALLOWED,
    MUTATION_OVER_GET,
    NOT_AN_OBJECT,
    NOT_JSON,
)

GRAPHQL_RESPONSE = "application/graphql-response+json"
TYPENAME = {"data": {"__typename": "Query"}}
PREFLIGHT = {"X-Requested-With": "XMLHttpRequest"}
SIGN_UP = """
mutation { signUp(input: {username: "eve", email: "e@x.io", password: "password1"}) { token } }
"""
MiB = 1_048_576


def bad_request(message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]}


async def user_count(sessionmaker: Sessionmaker) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


# ---- methods ----------------------------------------------------------------------------


async def test_get_runs_a_query(api: Api) -> None:
    response = await api.raw("GET", params={"query": "{ __typename }"}, headers=PREFLIGHT)
    assert (response.status_code, response.json()) == (200, TYPENAME)


async def test_a_mutation_over_get_is_refused_with_405_and_changes_nothing(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    response = await api.raw("GET", params={"query": SIGN_UP}, headers=PREFLIGHT)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == bad_request(MUTATION_OVER_GET)
    assert await user_count(sessionmaker) == 0


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_are_refused_with_405(api: Api, method: str) -> None:
    response = await api.raw(method, content=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json() == bad_request(METHOD_NOT_ALLOWED)


# ---- malformed requests -----------------------------------------------------------------

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{not json", NOT_JSON, id="not-json"),
        pytest.param(b"", NOT_JSON, id="empty"),
        pytest.param(b'{"query": "\xff"}', NOT_JSON, id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, NOT_JSON, id="nested-too-deep"),
        pytest.param(b'"{ __typename }"', NOT_AN_OBJECT, id="a-string"),
        pytest.param(b"null", NOT_AN_OBJECT, id="null"),
        pytest.param(b"{}", "No GraphQL query found in the request", id="no-query"),
        pytest.param(b'{"query": ""}', "No GraphQL query found in the request", id="empty-query"),
        pytest.param(
            b'{"query": 1}',
            "The GraphQL operation's `query` must be a string or null, if provided.",
            id="query-not-a-string",
        ),
        pytest.param(
            b'{"query": "{ __typename }", "variables": [1]}',
            "The GraphQL operation's `variables` must be an object or null, if provided.",
            id="variables-not-an-object",
        ),
        pytest.param(
            b'{"query": "{ __typename }", "operationName": 1}',
            BAD_OPERATION_NAME,
            id="operation-name-not-a-string",
        ),
        pytest.param(b'[{"query": "{ __typename }"}]', "Batching is not enabled", id="a-batch"),
    ],
)
async def test_a_malformed_request_is_400(api: Api, body: bytes, message: str) -> None:
    response = await api.raw(content=body, headers=JSON_HEADERS)
    assert (response.status_code, response.json()) == (400, bad_request(message))


async def test_malformed_variables_over_get_are_400(api: Api) -> None:
    params = {"query": "{ __typename }", "variables": "{nope"}
    response = await api.raw("GET", params=params, headers=PREFLIGHT)
    assert (response.status_code, response.json()) == (400, bad_request(NOT_JSON))


async def test_an_unknown_operation_name_is_400(api: Api) -> None:
    body = {"query": "query A { __typename }", "operationName": "B"}
    response = await api.raw(content=json.dumps(body), headers=JSON_HEADERS)
    assert (response.status_code, response.json()["errors"][0]["extensions"]) == (
        400,
        {"code": "BAD_REQUEST"},
    )


SIGN_UP_AND_QUERY = (
    f"mutation SignUp {SIGN_UP.strip().removeprefix('mutation')} query Q {{ __typename }}"
)


@pytest.mark.parametrize(
    ("method", "headers"),
    [pytest.param("POST", JSON_HEADERS, id="post"), pytest.param("GET", PREFLIGHT, id="get")],
)
async def test_several_operations_and_no_operation_name_are_refused_and_run_nothing(
    api: Api, sessionmaker: Sessionmaker, method: str, headers: dict[str, str]
) -> None:
    # GraphQL spec, "GetOperation": a request error requiring operationName (not the first
    # operation, and over GET not a 405 for it).
    body = {"query": SIGN_UP_AND_QUERY}
    response = await api.raw(
        method,
        content=json.dumps(body) if method == "POST" else None,
        params=body if method == "GET" else None,
        headers={**headers, "Accept": GRAPHQL_RESPONSE},
    )
    assert (response.status_code, response.json()) == (400, bad_request(OPERATION_NAME_REQUIRED))
    assert await user_count(sessionmaker) == 0


async def test_the_named_operation_of_several_runs(api: Api, sessionmaker: Sessionmaker) -> None:
    params = {"query": SIGN_UP_AND_QUERY, "operationName": "Q"}
    response = await api.raw("GET", params=params, headers=PREFLIGHT)
    assert (response.status_code, response.json()) == (200, TYPENAME)
    assert await user_count(sessionmaker) == 0


# ---- CSRF -------------------------------------------------------------------------------


async def test_a_get_without_a_preflight_header_is_refused(
    api: Api, statements: StatementCounter
) -> None:
    response = await api.raw(
        "GET", params={"query": "{ __typename }"}, token=token_for(1), headers={}
    )
    assert (response.status_code, response.json()) == (400, bad_request(CSRF_REFUSED))
    assert statements.count == 0  # refused before the viewer is looked up


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Requested-With": "XMLHttpRequest"}, id="x-requested-with"),
        pytest.param({"Apollo-Require-Preflight": "true"}, id="apollo-require-preflight"),
        pytest.param({"X-Apollo-Operation-Name": "Q"}, id="x-apollo-operation-name"),
        # A browser sends this only after a preflight, which CORS answers.
        pytest.param({"Content-Type": "application/json"}, id="json-content-type"),
    ],
)
async def test_a_get_with_a_preflight_header_runs(api: Api, headers: dict[str, str]) -> None:
    response = await api.raw("GET", params={"query": "{ __typename }"}, headers=headers)
    assert (response.status_code, response.json()) == (200, TYPENAME)


async def test_an_empty_preflight_header_does_not_count(api: Api) -> None:
    headers = {
        "X-Requested-With": " ",
        "Apollo-Require-Preflight": "",
        "X-Apollo-Operation-Name": "",
    }
    response = await api.raw("GET", params={"query": "{ __typename }"}, headers=headers)
    assert (response.status_code, response.json()) == (400, bad_request(CSRF_REFUSED))


@pytest.mark.parametrize(
    "content_type",
    ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"],
)
async def test_a_get_with_a_content_type_a_browser_sends_cross_site_is_refused(
    api: Api, content_type: str
) -> None:
    response = await api.raw(
        "GET", params={"query": "{ __typename }"}, headers={"Content-Type": content_type}
    )
    assert (response.status_code, response.json()) == (400, bad_request(CSRF_REFUSED))


async def test_apollo_clients_get_for_hashed_persisted_queries_runs(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    # What Apollo Client's HttpLink sends with the persisted-queries link's
    # `useGETForHashedQueries`: its default headers and no preflight header; the query itself
    # is registered over POST when the hash is unknown (by a logged-in client: see
    # tests/test_persisted_queries.py for who may store).
    query = "query Q { __typename }"
    extensions = {
        "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}
    }
    token = token_for(await make_user(sessionmaker))
    apollo = {
        "accept": GRAPHQL_RESPONSE,
        "content-type": "application/json",
        "authorization": f"Bearer {token}",
    }
    params = {"operationName": "Q", "variables": "{}", "extensions": json.dumps(extensions)}
    unknown = await api.raw("GET", params=params, headers=apollo)
    body = {"operationName": "Q", "variables": {}, "extensions": extensions, "query": query}
    registered = await api.raw("POST", content=json.dumps(body), headers=apollo)
    hit = await api.raw("GET", params=params, headers=apollo)
    assert (unknown.status_code, unknown.json()["errors"][0]["extensions"]) == (
        400,
        {"code": "PERSISTED_QUERY_NOT_FOUND"},
    )
    assert (registered.status_code, registered.json()) == (200, TYPENAME)
    assert (hit.status_code, hit.json()) == (200, TYPENAME)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_post_that_is_not_json_needs_a_preflight_header(
    api: Api, sessionmaker: Sessionmaker, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"query": SIGN_UP})
    refused = await api.raw(content=body, headers=headers)
    unsupported = await api.raw(content=body, headers={**headers, **PREFLIGHT})
    assert (refused.status_code, refused.json()) == (400, bad_request(CSRF_REFUSED))
    assert (unsupported.status_code, unsupported.json()) == (
        400,
        bad_request("Unsupported content type"),
    )
    assert await user_count(sessionmaker) == 0


async def test_a_json_post_needs_no_preflight_header(api: Api) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    response = await api.raw(content=json.dumps({"query": "{ __typename }"}), headers=headers)
    assert (response.status_code, response.json()) == (200, TYPENAME)


@pytest.mark.parametrize("accept", ["text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", "*/*"])
async def test_graphiql_is_served_to_a_browser_without_a_preflight_header(
    api: Api, accept: str
) -> None:
    response = await api.raw("GET", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


# ---- media types and status codes -------------------------------------------------------

VALIDATION_ERROR = {
    "errors": [
        {
            "message": "Cannot query field 'nope' on type 'Query'.",
            "locations": [{"line": 1, "column": 3}],
            "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
        }
    ],
}
PARSE_ERROR = {
    "errors": [
        {
            "message": "Syntax Error: Expected Name, found <EOF>.",
            "locations": [{"line": 1, "column": 2}],
            "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
        }
    ],
}
FIELD_ERROR = {
    "data": {"node": None},
    "errors": [
        {
            "message": "You must be logged in.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["node"],
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    ],
}
NODE = '{ node(id: "VXNlcjox") { id } }'
TOO_DEEP = """{ me { conversations { edges { node { messages { edges { node { conversation {
  owner { conversations { edges { node { id } } } } } } } } } } } } }"""


@pytest.mark.parametrize(
    ("query", "status", "result"),
    [
        pytest.param("{ __typename }", 200, TYPENAME, id="ok"),
        pytest.param(NODE, 200, FIELD_ERROR, id="field-error-ran"),
        pytest.param("{ nope }", 400, VALIDATION_ERROR, id="validation-error"),
        pytest.param("{", 400, PARSE_ERROR, id="parse-error"),
    ],
)
async def test_graphql_response_json_answers_400_when_the_operation_cannot_run(
    api: Api, query: str, status: int, result: dict[str, Any]
) -> None:
    response = await api.post(query, headers={"Accept": GRAPHQL_RESPONSE})
    assert response.status_code == status
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json() == result


# ---- request errors: no `data` entry ----------------------------------------------------
# GraphQL spec, "Response": when an error is raised before execution begins, `data` is absent.

COUNT_USERS = "query Count($first: Int) { users(first: $first) { totalCount } }"
NOT_AN_INT = {
    "errors": [
        {
            "message": "Variable '$first' has invalid value: Int cannot represent non-integer "
            "value: 'x'",
            "locations": [{"line": 1, "column": 13}],
            "extensions": {"code": "BAD_USER_INPUT"},
        }
    ]
}
BAD_TOKEN = {
    "errors": [
        {
            "message": "Your session is invalid or has expired; log in again.",
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    ]
}
ACCEPT_SPEC = {"Accept": GRAPHQL_RESPONSE}


def request_error(response: httpx.Response) -> dict[str, Any]:
    """The body of a request error answered in graphql-response+json: 400, and no `data`."""
    assert (response.status_code, response.headers["content-type"]) == (400, GRAPHQL_RESPONSE)
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("query", "result"),
    [
        pytest.param("{ nope }", VALIDATION_ERROR, id="validation-error"),
        pytest.param("{", PARSE_ERROR, id="parse-error"),
    ],
)
async def test_a_request_error_over_get_has_no_data_entry(
    api: Api, query: str, result: dict[str, Any]
) -> None:
    response = await api.raw("GET", params={"query": query}, headers={**ACCEPT_SPEC, **PREFLIGHT})
    assert request_error(response) == result


async def test_variables_that_do_not_coerce_are_a_request_error(api: Api) -> None:
    response = await api.post(COUNT_USERS, {"first": "x"}, headers=ACCEPT_SPEC)
    assert request_error(response) == NOT_AN_INT


async def test_variables_that_do_not_coerce_are_a_request_error_after_the_fast_lane(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    # Answered once, the document is known: the next request is tried on the fast lane, which
    # hands a failing one to Strawberry's way.
    token = token_for(await make_user(sessionmaker, is_admin=True))
    ran = await api.post(COUNT_USERS, {"first": 1}, token=token, headers=ACCEPT_SPEC)
    refused = await api.post(COUNT_USERS, {"first": "x"}, token=token, headers=ACCEPT_SPEC)
    assert (ran.status_code, ran.json()) == (200, {"data": {"users": {"totalCount": 1}}})
    assert request_error(refused) == NOT_AN_INT


async def test_a_bad_token_is_a_request_error(api: Api) -> None:
    response = await api.post("{ me { id } }", token="garbage", headers=ACCEPT_SPEC)
    assert request_error(response) == BAD_TOKEN


async def test_a_persisted_query_refused_before_it_runs_has_no_data_entry(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token = token_for(await make_user(sessionmaker))
    extensions = {
        "persistedQuery": {
            "version": 1,
            "sha256Hash": hashlib.sha256(COUNT_USERS.encode()).hexdigest(),
        }
    }
    unknown = await api.post(None, extensions=extensions, headers=ACCEPT_SPEC)
    registered = await api.post(COUNT_USERS, {"first": 1}, extensions=extensions, token=token)
    by_hash = await api.post(None, {"first": "x"}, extensions=extensions, headers=ACCEPT_SPEC)
    over_get = await api.raw(
        "GET",
        params={"variables": '{"first": "x"}', "extensions": json.dumps(extensions)},
        headers={**ACCEPT_SPEC, **JSON_HEADERS},
    )
    assert request_error(unknown) == {
        "errors": [
            {
                "message": "PersistedQueryNotFound",
                "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
            }
        ]
    }
    # It ran (and so was stored).
    assert (registered.status_code, registered.json()) == (
        200,
        {"data": {"users": {"totalCount": 1}}},
    )
    assert request_error(by_hash) == NOT_AN_INT
    assert request_error(over_get) == NOT_AN_INT


async def test_a_limit_is_400_in_graphql_response_json(api: Api) -> None:
    response = await api.post(TOO_DEEP, headers={"Accept": GRAPHQL_RESPONSE})
    assert request_error(response) == {
        "errors": [
            {
                "message": "The query is 13 levels deep; the limit is 12.",
                "extensions": {"code": "QUERY_TOO_COMPLEX", "limit": 12, "actual": 13},
            }
        ]
    }


@pytest.mark.parametrize(
    "query", [pytest.param("{ nope }", id="validation-error"), pytest.param("{", id="parse-error")]
)
async def test_application_json_answers_200_even_when_the_operation_cannot_run(
    api: Api, query: str
) -> None:
    response = await api.post(query, headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["errors"][0]["extensions"]["code"].startswith("GRAPHQL_")


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        pytest.param(None, "application/json", id="none"),
        pytest.param("*/*", "application/json", id="anything"),
        pytest.param("text/plain", "application/json", id="neither"),
        pytest.param(f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE, id="spec"),
        pytest.param(f"application/json, {GRAPHQL_RESPONSE}", "application/json", id="order"),
        pytest.param(f"application/json;q=0.5, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE, id="q"),
        pytest.param(f"{GRAPHQL_RESPONSE};q=0, */*", "application/json", id="q-zero"),
    ],
)
async def test_the_media_type_follows_the_accept_header(
    api: Api, accept: str | None, media_type: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = await api.raw(
        content=json.dumps({"query": "{ __typename }"}), headers=headers | JSON_HEADERS
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["vary"] == "Accept"


async def test_a_transport_error_is_answered_in_the_accepted_media_type(api: Api) -> None:
    response = await api.raw(
        "GET", params={"query": "{ __typename }"}, headers={"Accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == GRAPHQL_RESPONSE


# ---- the body limit ---------------------------------------------------------------------


def body_of(size: int) -> bytes:
    """A JSON request of exactly `size` bytes: a query and an unused padding variable."""
    empty = json.dumps({"query": "{ __typename }", "variables": {"pad": ""}}).encode()
    return json.dumps(
        {"query": "{ __typename }", "variables": {"pad": "x" * (size - len(empty))}}
    ).encode()


def too_large(actual: int) -> dict[str, Any]:
    message = BODY_TOO_LARGE.format(actual=actual, limit=MiB)
    return {
        "errors": [
            {
                "message": message,
                "extensions": {"code": "QUERY_TOO_COMPLEX", "limit": MiB, "actual": actual},
            }
        ]
    }


async def test_a_body_of_one_mebibyte_is_accepted(api: Api) -> None:
    body = body_of(MiB)
    assert len(body) == MiB
    response = await api.raw(content=body, headers=JSON_HEADERS)
    assert (response.status_code, response.json()) == (200, TYPENAME)


async def test_a_body_one_byte_over_is_refused_before_anything_runs(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    token = token_for(await make_user(sessionmaker))
    statements.reset()
    response = await api.raw(content=body_of(MiB + 1), headers=JSON_HEADERS, token=token)
    assert (response.status_code, response.json()) == (413, too_large(MiB + 1))
    assert statements.count == 0


async def test_a_streamed_body_is_refused_once_it_passes_the_limit(api: Api) -> None:
    head = b'{"query": "{ __typename }", "variables": {"pad": "'
    chunk = b"x" * 65_536

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        for _ in range(20):
            yield chunk
        yield b'"}}'

    response = await api.client.post("/graphql", content=chunks(), headers=JSON_HEADERS)
    assert "content-length" not in response.request.headers
    # Refused at the chunk that crossed the limit: the 16th after the head.
    assert (response.status_code, response.json()) == (413, too_large(len(head) + 16 * 65_536))


async def test_the_body_limit_is_configurable(settings: Settings) -> None:
    async with serve(settings.model_copy(update={"max_body_bytes": 100})) as api:
        allowed = await api.raw(content=body_of(100), headers=JSON_HEADERS)
        refused = await api.raw(content=body_of(101), headers=JSON_HEADERS)
    assert allowed.status_code == 200
    assert refused.status_code == 413
    assert refused.json()["errors"][0]["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": 100,
        "actual": 101,
    }


# ---- CORS -------------------------------------------------------------------------------

ORIGIN = "https://chat.example"
PREFLIGHT_REQUEST = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_no_origin_is_allowed_by_default(api: Api) -> None:
    preflight = await api.raw("OPTIONS", headers=PREFLIGHT_REQUEST)
    simple = await api.post("{ __typename }", headers={"Origin": ORIGIN})
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_configured_origins_may_call_the_api(settings: Settings) -> None:
    allowing = settings.model_copy(update={"cors_origins": [ORIGIN]})
    async with serve(allowing) as api:
        preflight = await api.raw("OPTIONS", headers=PREFLIGHT_REQUEST)
        simple = await api.post("{ __typename }", headers={"Origin": ORIGIN})
        other = await api.raw(
            "OPTIONS", headers={**PREFLIGHT_REQUEST, "Origin": "https://evil.example"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert simple.json() == TYPENAME
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    "value", ["https://a.example, https://b.example", '["https://a.example", "https://b.example"]']
)
def test_cors_origins_are_read_as_a_list_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CHATQL_CORS_ORIGINS", value)
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]


# ---- masking ----------------------------------------------------------------------------

LEAKS = ("Traceback", "SELECT", "sqlalchemy", "asyncpg", "secret")


def driver_failure(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError("SELECT secret FROM users", {}, Exception("asyncpg: connection reset"))


async def test_a_failure_while_building_the_context_is_a_masked_500(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("schema.context.get_user", driver_failure)
    with caplog.at_level(logging.ERROR, logger="chatql.http"):
        response = await api.post(
            "{ me { id } }", token=token_for(1), headers={"X-Request-ID": "req-context"}
        )
    assert response.status_code == 500
    assert response.json() == {
        "errors": [
            {
                "message": INTERNAL,
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-context"},
            }
        ]
    }
    assert not [leak for leak in LEAKS if leak in response.text]
    [record] = caplog.records
    assert "req-context" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is OperationalError


async def test_a_failure_inside_a_loader_is_masked_and_logged(
    api: Api,
    sessionmaker: Sessionmaker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    viewer = await make_user(sessionmaker)
    other = await make_user(sessionmaker)
    monkeypatch.setattr("db.users.users_by_ids", driver_failure)
    with caplog.at_level(logging.ERROR, logger="chatql.errors"):
        response = await api.post(
            "query ($id: ID!) { user(id: $id) { username } }",
            {"id": gid("User", other)},
            token=token_for(viewer),
            headers={"X-Request-ID": "req-loader"},
        )
    assert response.status_code == 200
    assert response.json() == {
        "data": {"user": None},
        "errors": [
            {
                "message": INTERNAL,
                "locations": [{"line": 1, "column": 20}],
                "path": ["user"],
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-loader"},
            }
        ],
    }
    assert not [leak for leak in LEAKS if leak in response.text]
    [record] = caplog.records
    assert "req-loader" in record.getMessage()


async def test_an_unusable_request_id_is_replaced(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("schema.context.get_user", driver_failure)
    response = await api.post("{ me { id } }", token=token_for(1), headers={"X-Request-ID": "a\tb"})
    request_id = response.json()["errors"][0]["extensions"]["requestId"]
    assert len(request_id) == 32 and request_id.isalnum()


async def test_every_error_of_a_bad_request_has_a_code(api: Api) -> None:
    responses = [
        await api.raw(content=b"nope", headers=JSON_HEADERS),
        await api.raw("DELETE"),
        await api.post("{ nope }"),
        await api.post("{ users { totalCount } }"),
        await api.raw("GET", params={"query": "{ __typename }"}),
    ]
    assert [
        bool(error["extensions"]["code"])
        for response in responses
        for error in response.json()["errors"]
    ] == [True] * 5


# ---- WebSocket ----------------------------------------------------------------------------


async def test_limits_hold_over_websocket(app: Starlette) -> None:
    aliases = " ".join(f"a{i}: __typename" for i in range(31))
    async with contextlib.AsyncExitStack() as stack:
        transport = await stack.enter_async_context(ASGIWebSocketTransport(app=app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver")
        )
        ws: AsyncWebSocketSession = await stack.enter_async_context(
            aconnect_ws("/graphql", client, subprotocols=["graphql-transport-ws"])
        )
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert await ws.receive_json() == {"type": "connection_ack"}
        await ws.send_json(
            {"type": "subscribe", "id": "1", "payload": {"query": f"{{ {aliases} }}"}}
        )
        assert await ws.receive_json() == {
            "id": "1",
            "type": "error",
            "payload": [
                {
                    "message": "The query has 31 aliases; the limit is 30.",
                    "extensions": {"code": "QUERY_TOO_COMPLEX", "limit": 30, "actual": 31},
                }
            ],
        }


async def test_a_field_error_that_nulls_the_whole_answer_keeps_its_data_entry(api: Api) -> None:
    # The operation ran: a field error that reaches the root is `"data": null`, not a request
    # error (GraphQL spec, "Response"), in either media type.
    for accept in (GRAPHQL_RESPONSE, "application/json"):
        response = await api.post(COUNT_USERS, {"first": 1}, headers={"Accept": accept})
        assert (response.status_code, response.json()) == (
            200,
            {
                "data": None,
                "errors": [
                    {
                        "message": "You must be logged in.",
                        "locations": [{"line": 1, "column": 28}],
                        "path": ["users"],
                        "extensions": {"code": "UNAUTHENTICATED"},
                    }
                ],
            },
        )
