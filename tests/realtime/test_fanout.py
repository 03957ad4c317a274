"""Fan-out (issue 17, item 1): one event costs its subscribers' process the same statements
whether one or fifty are listening, and each subscriber still gets its own selection under its
own permissions, checked against the viewer's state at the event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import update
from starlette.applications import Starlette

from db.models import User
from schema.errors import BAD_TOKEN, NOT_FOUND
from tests.factories import Sessionmaker, gid, make_conversation, make_user, token_for
from tests.helpers import Api, StatementCounter
from tests.schema.test_changes_subscription import SUBSCRIBE as CHANGES
from tests.schema.test_subscriptions import send, wait_for_subscribers
from tests.ws import PROTOCOLS, TRANSPORT_WS, Event, GraphQLSocket, asgi_socket

MESSAGE_ADDED = """
subscription ($id: ID!) {
  messageAdded(conversationId: $id) { id role content conversation { id title } }
}
"""
T = TypeVar("T")
TRANSFER = """
mutation ($c: ID!, $to: ID!) {
  transferConversation(input: {conversationId: $c, toUserId: $to}) { id }
}
"""


async def on_socket(
    app: Starlette,
    token: str,
    script: Callable[[GraphQLSocket], Awaitable[T]],
    protocol: str = TRANSPORT_WS,
) -> T:
    """Log in on a socket of its own and run `script` on it (an in-process socket must be left
    in the task that entered it: one task per socket)."""
    async with asgi_socket(app, protocol) as socket:
        await socket.login(token)
        return await script(socket)


def subscriber(query: str, variables: dict[str, Any], count: int = 1) -> Any:
    """A script: subscribe as "1", then the data of the next `count` results."""

    async def script(socket: GraphQLSocket) -> list[dict[str, Any]]:
        await socket.subscribe("1", query, variables)
        return [await socket.next_data("1") for _ in range(count)]

    return script


async def statements_for_one_event(
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
    statements: StatementCounter,
    *,
    subscribers: int,
    kind: str,
) -> tuple[int, list[dict[str, Any]]]:
    """The statements one sent message costs, the send included, with `subscribers`
    subscriptions to it (`messageAdded`: its owner and admins; `changes`: its owner on
    as many sockets); and what each received."""
    owner = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=owner, title="t")
    if kind == "messageAdded":
        query, variables = MESSAGE_ADDED, {"id": gid("Conversation", conversation)}
        viewers = [owner] + [
            await make_user(sessionmaker, is_admin=True) for _ in range(subscribers - 1)
        ]
    else:
        query, variables = CHANGES, {}
        viewers = [owner] * subscribers
    everyone_ready = asyncio.Barrier(subscribers + 1)

    def script(socket: GraphQLSocket) -> Awaitable[list[dict[str, Any]]]:
        async def run() -> list[dict[str, Any]]:
            await socket.subscribe("1", query, variables)
            await socket.next_data("1")  # the first message: the subscription is set up
            await everyone_ready.wait()
            return [await socket.next_data("1")]

        return run()

    await no_subscribers_left(app)  # the last round's, or they would count as this one's
    tasks = [asyncio.create_task(on_socket(app, token_for(v), script)) for v in viewers]
    await wait_for_subscribers(app, subscribers)
    await send(api, token_for(owner), conversation, "warming up")
    await ready_or_failed(everyone_ready, tasks)
    statements.reset()
    await send(api, token_for(owner), conversation, "hello")
    got = [data for received in await asyncio.gather(*tasks) for data in received]
    return statements.count, got


async def no_subscribers_left(app: Starlette) -> None:
    hub = app.state.services.broker.hub
    for _ in range(500):
        if hub.subscriber_count == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{hub.subscriber_count} subscribers left over")


async def ready_or_failed(barrier: asyncio.Barrier, tasks: list[asyncio.Task[Any]]) -> None:
    """Wait at `barrier`; a subscriber that fails before it fails the test with its error
    (instead of leaving the others waiting there for ever)."""
    waiting = asyncio.ensure_future(barrier.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        failed = [task for task in tasks if task.done()]
        for task in tasks:
            task.cancel()
        failed[0].result()
        raise AssertionError("a subscriber ended before the event")


@pytest.mark.parametrize("kind", ["messageAdded", "changes"])
async def test_one_event_costs_the_same_statements_for_one_subscriber_and_for_fifty(
    app: Starlette,
    api: Api,
    sessionmaker: Sessionmaker,
    statements: StatementCounter,
    kind: str,
) -> None:
    one, [alone] = await statements_for_one_event(
        app, api, sessionmaker, statements, subscribers=1, kind=kind
    )
    fifty, got = await statements_for_one_event(
        app, api, sessionmaker, statements, subscribers=50, kind=kind
    )
    assert fifty == one, statements.seen
    # Every one of them got the whole event, as the lone subscriber did (its ids aside).
    assert len({str(data) for data in got}) == 1
    assert got[0].keys() == alone.keys() == {kind}
    field = got[0][kind]
    if kind == "messageAdded":
        assert {k: v for k, v in field.items() if k != "id"} == {
            "role": "USER",
            "content": "hello",
            "conversation": {"id": field["conversation"]["id"], "title": "t"},
        }
    else:
        assert (field["kind"], field["message"]) == ("MESSAGE_ADDED", {"content": "hello"})


async def test_each_subscriber_gets_its_own_selection_and_permissions(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    owner = await make_user(sessionmaker, username="owner")
    heir = await make_user(sessionmaker, username="heir")
    admin = await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=owner, title="Talk")
    other = await make_conversation(sessionmaker, owner_id=owner, title="Other")

    # An event is resolved when it is delivered, against the data as it is then: the transfer
    # waits until both have been given the first message, or they would read it as the heir's.
    owner_saw_first, admin_saw_first = asyncio.Event(), asyncio.Event()

    async def as_owner(socket: GraphQLSocket) -> list[Event]:
        await socket.subscribe(
            "1",
            "subscription ($id: ID!) { messageAdded(conversationId: $id) { content role } }",
            {"id": gid("Conversation", conversation)},
        )
        await socket.subscribe(
            "2",
            "subscription ($id: ID!) { messageAdded(conversationId: $id) { content } }",
            {"id": gid("Conversation", other)},
        )
        received = [await socket.receive()]
        owner_saw_first.set()
        return received + [await socket.receive() for _ in range(3)]

    async def as_admin(socket: GraphQLSocket) -> list[dict[str, Any]]:
        await socket.subscribe(
            "1",
            "subscription ($id: ID!) { messageAdded(conversationId: $id) "
            "{ content conversation { title owner { username } } } }",
            {"id": gid("Conversation", conversation)},
        )
        received = [await socket.next_data("1")]
        admin_saw_first.set()
        return [*received, await socket.next_data("1")]

    by_owner = asyncio.create_task(on_socket(app, token_for(owner), as_owner))
    by_admin = asyncio.create_task(on_socket(app, token_for(admin), as_admin))
    await wait_for_subscribers(app, 3)
    await send(api, token_for(owner), conversation, "first")
    await asyncio.wait_for(asyncio.gather(owner_saw_first.wait(), admin_saw_first.wait()), 10)
    await api.data(
        TRANSFER,
        {"c": gid("Conversation", conversation), "to": gid("User", heir)},
        token=token_for(owner),
    )
    await send(api, token_for(heir), conversation, "second")
    assert await by_admin == [
        {
            "messageAdded": {
                "content": "first",
                "conversation": {"title": "Talk", "owner": {"username": "owner"}},
            }
        },
        {
            "messageAdded": {
                "content": "second",
                "conversation": {"title": "Talk", "owner": {"username": "heir"}},
            }
        },
    ]
    # The former owner's subscription to the one it gave ends at the transfer; its own
    # conversation's goes on.
    await send(api, token_for(owner), other, "mine")
    not_found = {"message": NOT_FOUND, "extensions": {"code": "NOT_FOUND"}}
    assert await by_owner == [
        Event("next", "1", {"data": {"messageAdded": {"content": "first", "role": "USER"}}}),
        Event("next", "1", {"data": None, "errors": [not_found]}),
        Event("complete", "1", None),
        Event("next", "2", {"data": {"messageAdded": {"content": "mine"}}}),
    ]


@pytest.mark.parametrize("kind", ["messageAdded", "changes"])
async def test_a_subscriber_deactivated_between_two_events_gets_no_second_event(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, kind: str
) -> None:
    leaving = await make_user(sessionmaker)
    staying = await make_user(sessionmaker, is_admin=True)
    conversation = await make_conversation(sessionmaker, owner_id=leaving, title="t")
    variables = {"id": gid("Conversation", conversation)}
    first_seen = asyncio.Event()

    async def as_leaving(socket: GraphQLSocket) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if kind == "messageAdded":
            await socket.subscribe(
                "1",
                "subscription ($id: ID!) { messageAdded(conversationId: $id) { content } }",
                variables,
            )
        else:
            await socket.subscribe("1", "subscription { changes { kind message { content } } }")
        first = await socket.next_data("1")
        first_seen.set()
        return first, await socket.errors("1")

    by_leaving = asyncio.create_task(on_socket(app, token_for(leaving), as_leaving))
    by_staying = asyncio.create_task(
        on_socket(
            app,
            token_for(staying),
            subscriber(
                "subscription ($id: ID!) { messageAdded(conversationId: $id) { content } }",
                variables,
                count=2,
            ),
        )
    )
    await wait_for_subscribers(app, 2)
    await send(api, token_for(staying), conversation, "one")
    await first_seen.wait()
    async with sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.id == leaving).values(is_active=False))
    await send(api, token_for(staying), conversation, "two")
    assert await by_staying == [
        {"messageAdded": {"content": "one"}},
        {"messageAdded": {"content": "two"}},
    ]
    first, errors = await by_leaving
    assert first == (
        {"messageAdded": {"content": "one"}}
        if kind == "messageAdded"
        else {"changes": {"kind": "MESSAGE_ADDED", "message": {"content": "one"}}}
    )
    assert [(e["message"], e["extensions"]) for e in errors] == [
        (BAD_TOKEN, {"code": "UNAUTHENTICATED"})
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_transfer_or_deletion_ends_the_subscriptions_of_those_who_lose_the_conversation(
    app: Starlette, api: Api, sessionmaker: Sessionmaker, protocol: str
) -> None:
    """Who may see a conversation changes without a message: its subscribers are told at the
    commit (an event of no messages) and check again, together. The former owner's end with
    NOT_FOUND at once, as the conversation now reads to them, instead of going silent; an
    admin's goes on after a transfer and ends after a deletion."""
    owner = await make_user(sessionmaker, username="owner")
    heir = await make_user(sessionmaker, username="heir")
    admin = await make_user(sessionmaker, is_admin=True)
    given_pk = await make_conversation(sessionmaker, owner_id=owner, title="g")
    given = gid("Conversation", given_pk)
    dropped = gid("Conversation", await make_conversation(sessionmaker, owner_id=owner, title="d"))
    query = "subscription ($id: ID!) { messageAdded(conversationId: $id) { content } }"
    ended: dict[str, asyncio.Event] = {"given": asyncio.Event(), "dropped": asyncio.Event()}

    def script(*, admin: bool) -> Callable[[GraphQLSocket], Awaitable[list[Any]]]:
        async def run(socket: GraphQLSocket) -> list[Any]:
            await socket.subscribe("given", query, {"id": given})
            await socket.subscribe("dropped", query, {"id": dropped})
            got: list[Any] = []
            for op_id in ["dropped"] if admin else ["given", "dropped"]:
                errors = await socket.errors(op_id)
                got.append((op_id, [(e["message"], e["extensions"]) for e in errors]))
                ended[op_id].set()
            return [*got, await socket.next_data("given")] if admin else got

        return run

    by_owner = asyncio.create_task(on_socket(app, token_for(owner), script(admin=False), protocol))
    by_admin = asyncio.create_task(on_socket(app, token_for(admin), script(admin=True), protocol))
    await wait_for_subscribers(app, 4)
    await api.data(TRANSFER, {"c": given, "to": gid("User", heir)}, token=token_for(owner))
    await ended["given"].wait()
    await api.data(
        "mutation ($c: ID!) { deleteConversation(id: $c) { deletedId } }",
        {"c": dropped},
        token=token_for(owner),
    )
    await ended["dropped"].wait()
    await send(api, token_for(heir), given_pk, "after")
    not_found = [(NOT_FOUND, {"code": "NOT_FOUND"})]
    assert (await by_owner, await by_admin) == (
        [("given", not_found), ("dropped", not_found)],
        [("dropped", not_found), {"messageAdded": {"content": "after"}}],
    )
