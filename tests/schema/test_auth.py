from __future__ import annotations

import time

import jwt

from tests.factories import (
    PASSWORD,
    TEST_SECRET,
    Sessionmaker,
    account_key,
    gid,
    make_conversation,
    make_user,
    token_for,
)
from tests.helpers import Api

SIGN_UP = """
mutation ($input: SignUpInput!) {
  signUp(input: $input) { token user { id username fullName email isAdmin isActive } }
}
"""
LOG_IN = "mutation ($input: LogInInput!) { logIn(input: $input) { token user { username } } }"
ME = "{ me { username email isAdmin } }"


async def test_sign_up_then_log_in_then_me(api: Api) -> None:
    signed = await api.data(
        SIGN_UP,
        {
            "input": {
                "username": "ada",
                "email": "Ada@Example.com",
                "password": "s3cret-pass",
                "fullName": "  Ada Lovelace ",
            }
        },
    )
    user = signed["signUp"]["user"]
    assert user == {
        "id": user["id"],
        "username": "ada",
        "fullName": "Ada Lovelace",
        "email": "Ada@Example.com",
        "isAdmin": True,
        "isActive": True,
    }
    logged = await api.data(LOG_IN, {"input": {"login": "ADA", "password": "s3cret-pass"}})
    assert logged["logIn"]["user"] == {"username": "ada"}
    me = await api.data(ME, token=logged["logIn"]["token"])
    assert me == {"me": {"username": "ada", "email": "Ada@Example.com", "isAdmin": True}}


async def test_only_the_first_account_is_an_admin(api: Api) -> None:
    first = await api.data(
        SIGN_UP, {"input": {"username": "first", "email": "f@x.io", "password": "password1"}}
    )
    second = await api.data(
        SIGN_UP, {"input": {"username": "second", "email": "s@x.io", "password": "password1"}}
    )
    assert first["signUp"]["user"]["isAdmin"] is True
    assert second["signUp"]["user"]["isAdmin"] is False


async def test_log_in_by_email_works(api: Api, sessionmaker: Sessionmaker) -> None:
    await make_user(sessionmaker, username="grace", email="grace@navy.mil")
    data = await api.data(LOG_IN, {"input": {"login": "GRACE@navy.mil", "password": PASSWORD}})
    assert data["logIn"]["user"] == {"username": "grace"}


async def test_wrong_password_and_unknown_login_give_the_same_error(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    await make_user(sessionmaker, username="alan")
    wrong = await api.error(LOG_IN, {"input": {"login": "alan", "password": "not-it-at-all"}})
    unknown = await api.error(LOG_IN, {"input": {"login": "nobody", "password": PASSWORD}})
    assert wrong["message"] == unknown["message"] == "Wrong login or password."
    assert wrong["extensions"] == unknown["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_deactivated_users_cannot_log_in_and_their_tokens_stop_working(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user_id = await make_user(sessionmaker, username="gone", is_active=False)
    error = await api.error(LOG_IN, {"input": {"login": "gone", "password": PASSWORD}})
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    error = await api.error(ME, token=token_for(user_id))
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_bad_forged_and_expired_tokens_fail_every_operation(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user_id = await make_user(sessionmaker)
    now = int(time.time())
    key = account_key(user_id)
    forged = jwt.encode(
        {"sub": str(user_id), "key": key, "iat": now, "exp": now + 60},
        "other-secret-key-0123456789abcdef",
        "HS256",
    )
    expired = jwt.encode(
        {"sub": str(user_id), "key": key, "iat": now - 120, "exp": now - 60}, TEST_SECRET, "HS256"
    )
    for token in ("garbage", forged, expired):
        result = await api.run(ME, token=token)
        assert "data" not in result  # refused before execution: a request error
        assert [e["extensions"]["code"] for e in result["errors"]] == ["UNAUTHENTICATED"]


async def test_no_token_means_me_is_null_and_the_rest_needs_a_login(api: Api) -> None:
    assert await api.data(ME) == {"me": None}
    error = await api.error("{ users { totalCount } }")
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_sign_up_validates_every_field_at_once(api: Api) -> None:
    error = await api.error(
        SIGN_UP,
        {"input": {"username": "a b", "email": "nope", "password": "short", "fullName": "x" * 101}},
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert set(error["extensions"]["fields"]) == {"username", "email", "password", "fullName"}


async def test_taken_username_or_email_is_a_conflict_whatever_the_case(api: Api) -> None:
    await api.data(
        SIGN_UP, {"input": {"username": "taken", "email": "t@x.io", "password": "password1"}}
    )
    by_name = await api.error(
        SIGN_UP, {"input": {"username": "TAKEN", "email": "other@x.io", "password": "password1"}}
    )
    by_email = await api.error(
        SIGN_UP, {"input": {"username": "other", "email": "T@X.IO", "password": "password1"}}
    )
    assert by_name["extensions"]["code"] == by_email["extensions"]["code"] == "CONFLICT"
    assert list(by_name["extensions"]["fields"]) == ["username"]
    assert list(by_email["extensions"]["fields"]) == ["email"]


UPDATE = """
mutation ($id: ID!, $input: UpdateUserInput!) {
  updateUser(id: $id, input: $input) { username fullName email isActive }
}
"""


async def test_users_update_themselves_but_not_others(api: Api, sessionmaker: Sessionmaker) -> None:
    me = await make_user(sessionmaker, username="self")
    other = await make_user(sessionmaker, username="other")
    data = await api.data(
        UPDATE, {"id": gid("User", me), "input": {"fullName": "Me Myself"}}, token=token_for(me)
    )
    assert data["updateUser"] == {
        "username": "self",
        "fullName": "Me Myself",
        "email": "self@example.com",
        "isActive": True,
    }
    error = await api.error(
        UPDATE, {"id": gid("User", other), "input": {"fullName": "X"}}, token=token_for(me)
    )
    assert error["extensions"]["code"] == "FORBIDDEN"
    error = await api.error(
        UPDATE, {"id": gid("User", me), "input": {"isActive": False}}, token=token_for(me)
    )
    assert error["extensions"]["code"] == "FORBIDDEN"


async def test_an_admin_deactivates_a_user_whose_token_then_fails(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    user = await make_user(sessionmaker)
    assert (await api.data(ME, token=token_for(user)))["me"] is not None
    data = await api.data(
        UPDATE, {"id": gid("User", user), "input": {"isActive": False}}, token=token_for(admin)
    )
    assert data["updateUser"]["isActive"] is False
    error = await api.error(ME, token=token_for(user))
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_changed_password_is_the_one_that_logs_in(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker, username="pw")
    await api.data(
        UPDATE,
        {"id": gid("User", user), "input": {"password": "brand-new-pass"}},
        token=token_for(user),
    )
    await api.data(LOG_IN, {"input": {"login": "pw", "password": "brand-new-pass"}})
    error = await api.error(LOG_IN, {"input": {"login": "pw", "password": PASSWORD}})
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_delete_user_removes_the_account(api: Api, sessionmaker: Sessionmaker) -> None:
    admin = await make_user(sessionmaker, is_admin=True)
    user = await make_user(sessionmaker)
    data = await api.data(
        "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }",
        {"id": gid("User", user)},
        token=token_for(admin),
    )
    assert data == {"deleteUser": {"deletedId": gid("User", user)}}
    found = await api.data(
        "query ($id: ID!) { user(id: $id) { id } }",
        {"id": gid("User", user)},
        token=token_for(admin),
    )
    assert found == {"user": None}


VIEWER_FIELDS = """
  token
  user {
    username email conversationCount
    conversations { totalCount edges { node { title owner { username } } } }
  }
"""
SIGN_UP_AS_VIEWER = (
    f"mutation ($input: SignUpInput!) {{ signUp(input: $input) {{ {VIEWER_FIELDS} }} }}"
)
LOG_IN_AS_VIEWER = (
    f"mutation ($input: LogInInput!) {{ logIn(input: $input) {{ {VIEWER_FIELDS} }} }}"
)


async def test_the_user_a_sign_up_returns_is_the_viewer_of_its_response(api: Api) -> None:
    first = {"username": "first", "email": "first@x.io", "password": "password1"}
    await api.data(SIGN_UP, {"input": first})
    new = {"username": "newcomer", "email": "new@x.io", "password": "password1"}
    data = await api.data(SIGN_UP_AS_VIEWER, {"input": new})
    token = data["signUp"].pop("token")
    assert data == {
        "signUp": {
            "user": {
                "username": "newcomer",
                "email": "new@x.io",
                "conversationCount": 0,
                "conversations": {"totalCount": 0, "edges": []},
            }
        }
    }
    me = await api.data("{ me { username } }", token=token)
    assert me == {"me": {"username": "newcomer"}}


async def test_the_user_a_login_returns_is_the_viewer_whatever_token_came_with_it(
    api: Api, sessionmaker: Sessionmaker
) -> None:
    someone = await make_user(sessionmaker, username="someone")
    admin = await make_user(sessionmaker, username="boss", is_admin=True)
    await make_conversation(sessionmaker, owner_id=someone, title="Theirs")
    await make_conversation(sessionmaker, owner_id=admin, title="Mine")
    login = {"login": "boss@example.com", "password": PASSWORD}
    for token in (None, token_for(someone)):
        data = await api.data(LOG_IN_AS_VIEWER, {"input": login}, token=token)
        assert data["logIn"]["token"]
        assert data["logIn"]["user"] == {
            "username": "boss",
            "email": "boss@example.com",
            "conversationCount": 1,
            "conversations": {
                "totalCount": 1,
                "edges": [{"node": {"title": "Mine", "owner": {"username": "boss"}}}],
            },
        }
