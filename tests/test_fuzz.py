"""Property-based fuzzing of the running app with hypothesis-graphql.

Valid and invalid queries and mutations over the whole schema, sent by an admin over HTTP to
a database with some data: never a 500, never an unexpected error, every error has a code,
nothing leaks.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from schema import make_schema
from tests.factories import Sessionmaker, make_conversation, make_messages, make_user, token_for
from tests.helpers import Api

# About 20 seconds per database on a shared 2-core machine; derandomized, so CI is repeatable.
EXAMPLES = 500
LEAKS = ("Traceback", "sqlalchemy", "asyncpg", "SELECT")
SDL = make_schema().as_str()
SCALARS = {"DateTime": st.datetimes(timezones=st.just(UTC)).map(nodes.String)}
OPERATIONS = st.one_of(
    from_schema(SDL, custom_scalars=SCALARS, mode=Mode.POSITIVE),
    from_schema(SDL, custom_scalars=SCALARS, mode=Mode.NEGATIVE),
)


@pytest.fixture
async def admin(sessionmaker: Sessionmaker) -> str:
    admin_id = await make_user(sessionmaker, is_admin=True)
    for owner in (admin_id, await make_user(sessionmaker)):
        for _ in range(2):
            conversation = await make_conversation(sessionmaker, owner_id=owner)
            await make_messages(sessionmaker, conversation_id=conversation, count=3)
    return token_for(admin_id)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operation=OPERATIONS)
async def test_no_operation_breaks_the_server(api: Api, admin: str, operation: str) -> None:
    response = await api.post(operation, token=admin)
    assert response.status_code in (200, 400), response.text
    assert not [leak for leak in LEAKS if leak in response.text], response.text
    result: dict[str, Any] = response.json()
    for error in result.get("errors", []):
        assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR", (operation, error)
