"""A NUL in any string input is BAD_USER_INPUT before anything runs: PostgreSQL cannot store one."""

from __future__ import annotations

from schema.limits import TEXT_REFUSED
from schema.validation import HAS_NUL
from tests.factories import Sessionmaker, make_user, token_for
from tests.helpers import Api, StatementCounter


def refused(*paths: str) -> dict[str, object]:
    return {
        "errors": [
            {
                "message": TEXT_REFUSED,
                "extensions": {
                    "code": "BAD_USER_INPUT",
                    "fields": dict.fromkeys(paths, HAS_NUL),
                },
            }
        ],
    }


async def test_a_nul_in_a_literal_is_refused(api: Api) -> None:
    query = 'mutation { logIn(input: {login: "a\\u0000", password: "x"}) { token } }'
    assert await api.run(query) == refused("login")


async def test_a_nul_in_a_variable_is_refused_before_any_sql(
    api: Api, sessionmaker: Sessionmaker, statements: StatementCounter
) -> None:
    token = token_for(await make_user(sessionmaker))
    statements.reset()
    result = await api.run(
        """query ($s: String, $ids: [ID!]!) {
          users(search: $s) { totalCount } nodes(ids: $ids) { id }
        }""",
        {"s": "\x00", "ids": ["ok", "b\x00d"]},
        token=token,
    )
    assert result == refused("search", "ids.1")
    assert statements.count == 1  # the viewer


async def test_one_document_is_checked_again_with_each_requests_variables(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    token = token_for(await make_user(sessionmaker))
    query = "query ($s: String) { users(search: $s) { totalCount } }"
    results = [
        await api.run(query, {"s": s}, token=token) for s in ("fine", "bad\x00", "fine again")
    ]
    counted = {"data": {"users": {"totalCount": 0}}}
    assert results == [counted, refused("search"), counted]
