"""The embedded default behaves like PostgreSQL: ids, tokens and caseless text, on both."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import User
from db.seed import SeedPlan, seed
from db.users import with_keys
from schema.errors import BAD_TOKEN
from schema.relay import decode_user_id
from tests.conftest import ApiFactory
from tests.factories import _HASH as HASH
from tests.factories import PASSWORD, Sessionmaker, make_user, token_for
from tests.helpers import Api, codes

SIGN_UP = """
mutation ($input: SignUpInput!) { signUp(input: $input) { token user { id username email } } }
"""
LOG_IN = """
mutation ($login: String!, $password: String!) {
  logIn(input: {login: $login, password: $password}) { user { username email } }
}
"""
ME = "{ me { id username email } }"
DELETE_USER = "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }"
UPDATE_EMAIL = """
mutation ($id: ID!, $email: String!) { updateUser(id: $id, input: {email: $email}) { email } }
"""
SEARCH = """
query ($search: String!) { users(search: $search) { totalCount edges { node { username } } } }
"""
REFUSED = {"message": BAD_TOKEN, "extensions": {"code": "UNAUTHENTICATED"}}


async def sign_up(api: Api, username: str, email: str | None = None) -> dict[str, Any]:
    """The `signUp` payload: `token` and `user` (`id`, `username`, `email`)."""
    variables = {
        "input": {
            "username": username,
            "email": email or f"{username}@example.com",
            "password": PASSWORD,
        }
    }
    payload: dict[str, Any] = (await api.data(SIGN_UP, variables))["signUp"]
    return payload


async def refusal(api: Api, token: str) -> dict[str, Any]:
    error = await api.error(ME, token=token)
    return {"message": error["message"], "extensions": error["extensions"]}


async def test_the_token_of_a_deleted_account_never_works_for_the_next_sign_up(api: Api) -> None:
    lee = await sign_up(api, "lee")
    await api.data(DELETE_USER, {"id": lee["user"]["id"]}, token=lee["token"])
    kim = await sign_up(api, "kim")
    assert kim["user"]["id"] != lee["user"]["id"]
    assert await refusal(api, lee["token"]) == REFUSED
    assert await api.data(ME, token=kim["token"]) == {"me": kim["user"]}


async def test_a_token_names_its_account_not_the_id_a_later_account_is_given(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    """However ids come to be assigned (a restore, a bulk load), a deleted account stays gone."""
    lee = await sign_up(api, "lee")
    await api.data(DELETE_USER, {"id": lee["user"]["id"]}, token=lee["token"])
    keys = with_keys({"username": "kim", "email": "kim@example.com", "full_name": None})
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(User).values(id=decode_user_id(lee["user"]["id"]), hashed_password=HASH, **keys)
        )
    assert await refusal(api, lee["token"]) == REFUSED


async def test_seeding_with_reset_revives_no_token_and_no_id(api: Api, engine: AsyncEngine) -> None:
    lee = await sign_up(api, "lee")
    assert (await api.data(ME, token=lee["token"]))["me"]["username"] == "lee"
    plan = SeedPlan(users=2, conversations_per_user=1, messages_per_conversation=2)
    await seed(engine, plan=plan, hashed_password=HASH, reset=True)
    assert await refusal(api, lee["token"]) == REFUSED
    logged_in = await api.data(
        "mutation ($l: String!, $p: String!) { logIn(input: {login: $l, password: $p}) "
        "{ user { id username isAdmin } } }",
        {"l": "user1", "p": PASSWORD},
    )
    seeded = logged_in["logIn"]["user"]
    assert seeded["username"] == "user1" and seeded["isAdmin"] is True
    assert seeded["id"] != lee["user"]["id"]


async def test_message_ids_are_never_handed_out_again(api: Api, sessionmaker: Sessionmaker) -> None:
    user = await make_user(sessionmaker)
    token = token_for(user)

    async def conversation_with_a_message() -> tuple[str, str]:
        created = await api.data(
            'mutation { createConversation(input: {title: "t"}) { id } }', token=token
        )
        conversation = created["createConversation"]["id"]
        sent = await api.data(
            'mutation ($c: ID!) { sendMessage(input: {conversationId: $c, content: "hi"}) { id } }',
            {"c": conversation},
            token=token,
        )
        return conversation, sent["sendMessage"]["id"]

    first, first_message = await conversation_with_a_message()
    await api.data(
        "mutation ($id: ID!) { deleteConversation(id: $id) { deletedId } }",
        {"id": first},
        token=token,
    )
    _, second_message = await conversation_with_a_message()
    assert second_message != first_message
    found = await api.data(
        "query ($id: ID!) { node(id: $id) { id } }", {"id": first_message}, token=token
    )
    assert found == {"node": None}


@pytest.mark.parametrize(
    ("taken", "again"),
    [
        ("ÄDA@example.com", "äda@example.com"),
        ("Émile@example.com", "E\u0301MILE@example.com"),
        ("straße@example.com", "STRASSE@example.com"),
        ("\uff4bim@example.com", "KIM@example.com"),
    ],
    ids=["umlaut", "decomposed accent", "sharp s", "full-width"],
)
async def test_emails_that_differ_only_in_unicode_case_are_one_email(
    api: Api, taken: str, again: str
) -> None:
    first = await sign_up(api, "first", taken)
    result = await api.run(
        SIGN_UP,
        {"input": {"username": "second", "email": again, "password": PASSWORD}},
    )
    assert result["data"] is None
    assert [{"message": e["message"], "extensions": e["extensions"]} for e in result["errors"]] == [
        {
            "message": "email: this email is already taken",
            "extensions": {"code": "CONFLICT", "fields": {"email": "this email is already taken"}},
        }
    ]
    other = await sign_up(api, "other")
    error = await api.error(
        UPDATE_EMAIL, {"id": other["user"]["id"], "email": again}, token=other["token"]
    )
    assert error["extensions"] == {
        "code": "CONFLICT",
        "fields": {"email": "this email is already taken"},
    }
    assert first["user"]["email"] == taken


async def test_logging_in_by_a_non_ascii_email_works_exactly_and_in_any_case(api: Api) -> None:
    await sign_up(api, "ada", "Ädä.Lövelace@Example.com")
    for login in (
        "Ädä.Lövelace@Example.com",
        "ädä.lövelace@example.com",
        "ÄDÄ.LÖVELACE@EXAMPLE.COM",
    ):
        data = await api.data(LOG_IN, {"login": login, "password": PASSWORD})
        assert data == {"logIn": {"user": {"username": "ada", "email": "Ädä.Lövelace@Example.com"}}}


async def test_search_is_a_caseless_substring_by_unicode_folding(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    viewer = await make_user(sessionmaker, username="viewer", full_name="Plain Viewer")
    await make_user(sessionmaker, username="zola", full_name="Émile Zola")
    await make_user(sessionmaker, username="gauss", full_name="Carl Friedrich Gauß")
    await make_user(sessionmaker, username="emil", full_name="Emil Artin")
    await make_user(sessionmaker, username="under_score", full_name="100% Ünder")
    cases = {
        "émile": ["zola"],
        "ÉMILE": ["zola"],
        "E\u0301mile": ["zola"],
        "emil": ["emil"],
        "GAUSS": ["gauss"],
        "gauß": ["gauss"],
        "ünder": ["under_score"],
        "%": ["under_score"],
        "_": ["under_score"],
        "VIEW": ["viewer"],
    }
    found = {}
    for search in cases:
        data = (await api.data(SEARCH, {"search": search}, token=token_for(viewer)))["users"]
        names = [edge["node"]["username"] for edge in data["edges"]]
        assert data["totalCount"] == len(names)
        found[search] = names
    assert found == cases


async def test_the_login_limit_counts_every_caseless_spelling_of_a_name(
    other_app: ApiFactory, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="straw", email="straße@example.com")
    spellings = ["straße@example.com", "STRASSE@example.com", "\uff53trasse@example.com"]
    async with other_app(login_failures_per_name=2) as api:
        outcomes = [
            codes(await api.run(LOG_IN, {"login": login, "password": "not the password"}))
            for login in spellings
        ]
    assert outcomes == [["UNAUTHENTICATED"], ["UNAUTHENTICATED"], ["RATE_LIMITED"]]
