"""Issue 14: a process keeps the viewers it has read (`schema.context.ViewerCache`, PostgreSQL)
and checks them in a request's first statement; a change to an account made through another
process still takes effect at once: deactivation, deletion, and the token of a deleted account
whose username was taken again. Two `python server.py serve` processes on one PostgreSQL, and
on one SQLite file; over HTTP (Strawberry's way and the fast lane's) and WebSocket (an
operation on a socket opened before the change). `tests/test_server.py` has the PostgreSQL
case of a profile change over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from schema.errors import BAD_TOKEN
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.process import Served, serve
from tests.ws import PROTOCOLS, process_socket

SCREEN = """query Screen($id: ID!) {
  me { username }
  conversation(id: $id) { title messages(last: 5) { edges { node { content } } } }
}"""
ME = "query Me { me { username } }"
UPDATE = "mutation ($id: ID!, $on: Boolean!) { updateUser(id: $id, input: {isActive: $on}) { id } }"
DELETE = "mutation ($id: ID!) { deleteUser(id: $id) { deletedId } }"
SIGN_UP = "mutation ($input: SignUpInput!) { signUp(input: $input) { token } }"
# Refused before it ran, as every request with a bad token is.
REFUSED = {"errors": [{"message": BAD_TOKEN, "extensions": {"code": "UNAUTHENTICATED"}}]}


async def post(url: str, query: str, variables: dict[str, Any] | None, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{url}/graphql", json={"query": query, "variables": variables}, headers=headers
        )
    return response.json()


@contextlib.contextmanager
def two_servers(database_url: str, tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    """Two server processes on one database, started side by side (a start is seconds of
    imports), both stopped at the end."""
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(2) as pool:
            starts = []
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                starts.append(
                    pool.submit(stack.enter_context, serve(database_url, tmp_path / name))
                )
        a, b = (start.result() for start in starts)
        yield a, b


async def test_account_changes_made_through_one_process_take_effect_at_once_in_another(
    database_url: str, sessionmaker: Sessionmaker, tmp_path: Path
) -> None:
    admin = token_for(await make_user(sessionmaker, is_admin=True))
    user = await make_user(sessionmaker, username="viewer")
    token = token_for(user)
    conversation = gid(
        "Conversation", await make_conversation(sessionmaker, owner_id=user, title="Mine")
    )
    user_id = gid("User", user)
    screen_variables = {"id": conversation}
    with two_servers(database_url, tmp_path) as (a, b):

        async def reads(socket: Any, op: str) -> list[Any]:
            """What the viewer gets from process a: the screen twice (Strawberry's way, then
            the fast lane's, from the cached viewer on PostgreSQL), `me`, and the socket's."""
            return [
                await post(a.url, SCREEN, screen_variables, token),
                await post(a.url, SCREEN, screen_variables, token),
                await post(a.url, ME, None, token),
                await socket.execute(op, ME),
            ]

        screen = {
            "data": {
                "me": {"username": "viewer"},
                "conversation": {"title": "Mine", "messages": {"edges": []}},
            }
        }
        me = {"data": {"me": {"username": "viewer"}}}
        ran = [screen, screen, me, me]

        async def change(query: str, variables: dict[str, Any]) -> Any:
            return await post(b.url, query, variables, admin)

        for protocol in PROTOCOLS:
            async with process_socket(a.url, protocol) as socket:
                await socket.login(token)
                assert await reads(socket, "1") == ran
                assert await change(UPDATE, {"id": user_id, "on": False}) == {
                    "data": {"updateUser": {"id": user_id}}
                }
                assert await reads(socket, "2") == [REFUSED] * 4
                assert await change(UPDATE, {"id": user_id, "on": True}) == {
                    "data": {"updateUser": {"id": user_id}}
                }
                assert await reads(socket, "3") == ran

        async with process_socket(a.url, PROTOCOLS[0]) as socket:
            await socket.login(token)
            assert await reads(socket, "4") == ran
            assert await change(DELETE, {"id": user_id}) == {
                "data": {"deleteUser": {"deletedId": user_id}}
            }
            assert await reads(socket, "5") == [REFUSED] * 4
        # The username taken again, through the other process: the old token is still
        # refused, the new account's works.
        credentials = {"username": "viewer", "email": "viewer@example.net", "password": "pw-123456"}
        signed = await post(b.url, SIGN_UP, {"input": credentials}, "")
        new_token = signed["data"]["signUp"]["token"]
        assert [
            await post(a.url, ME, None, token),
            await post(a.url, SCREEN, screen_variables, token),
            await post(a.url, ME, None, new_token),
        ] == [REFUSED, REFUSED, me]
