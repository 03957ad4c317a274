"""Trusted documents (issue 18): manifests loaded by `python server.py trust`, and the modes
off, audit and enforce, over every transport (POST, GET, the fast lane, both WebSocket
protocols), on both databases."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from starlette.applications import Starlette

from app.settings import Settings
from db.models import PersistedQuery
from schema.errors import PERSISTED_QUERY_REQUIRED
from schema.trusted import APOLLO_FORMAT, ManifestError, load_manifest, parse_manifest, retire
from tests.factories import Sessionmaker, make_user, token_for
from tests.helpers import Api, running
from tests.process import run_command
from tests.ws import PROTOCOLS, GraphQLSocket, asgi_socket

ME = "query Me { me { username } }"
HELLO = "query Hello { __typename }"
UNTRUSTED = "query Other { me { id } }"
RELAY_ID = "b2c6bd4b0b3f2f1cd1aa2bc0f4b3b2a1"  # Relay's own ids (an MD5 of its text)
GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
GET_HEADERS = {"Content-Type": JSON}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apollo(*bodies: str) -> dict[str, Any]:
    """A manifest as Apollo's generate-persisted-query-manifest writes it."""
    return {
        "format": APOLLO_FORMAT,
        "version": 1,
        "operations": [
            {"id": sha256(body), "body": body, "name": body.split()[1], "type": "query"}
            for body in bodies
        ],
    }


REQUIRED = {
    "errors": [
        {"message": PERSISTED_QUERY_REQUIRED, "extensions": {"code": "PERSISTED_QUERY_REQUIRED"}}
    ]
}
NOT_FOUND = {
    "errors": [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
}
HELLO_DATA = {"data": {"__typename": "Query"}}


class Clock:
    """The trusted documents' clock: the copy is looked at again once a second of it passes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 1.0


@dataclass
class Served:
    app: Starlette
    api: Api
    clock: Clock
    sessionmaker: Sessionmaker

    async def load(self, name: str, manifest: dict[str, Any]) -> None:
        operations = parse_manifest(json.dumps(manifest))
        await load_manifest(self.sessionmaker, name=name, operations=operations)
        self.clock.tick()


@contextlib.asynccontextmanager
async def trusted(settings: Settings, mode: str, **changes: Any) -> AsyncIterator[Served]:
    async with running(settings, trusted_documents=mode, **changes) as app:
        services = app.state.services
        clock = Clock()
        services.trusted.clock = clock
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Served(app, Api(client), clock, services.sessionmaker)


@pytest.fixture
async def enforce(settings: Settings) -> AsyncIterator[Served]:
    async with trusted(settings, "enforce") as served:
        await served.load("web", apollo(ME, HELLO))
        yield served


async def answer(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()


async def test_enforce_runs_a_trusted_document_sent_with_its_text_over_post_and_get(
    enforce: Served, sessionmaker: Sessionmaker
) -> None:
    token = token_for(await make_user(sessionmaker, username="ada"))
    me = {"data": {"me": {"username": "ada"}}}
    # Twice: the second is answered by the fast lane.
    assert await answer(await enforce.api.post(ME, token=token)) == (200, me)
    assert await answer(await enforce.api.post(ME, token=token)) == (200, me)
    got = await enforce.api.raw("GET", params={"query": HELLO}, headers=GET_HEADERS)
    assert await answer(got) == (200, HELLO_DATA)


async def test_enforce_runs_a_trusted_document_sent_by_hash_or_id_alone(enforce: Served) -> None:
    by_apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256(HELLO)}}
    assert await answer(await enforce.api.post(None, extensions=by_apq)) == (200, HELLO_DATA)
    got = await enforce.api.raw(
        "GET", params={"extensions": json.dumps(by_apq)}, headers={"Content-Type": JSON}
    )
    assert await answer(got) == (200, HELLO_DATA)
    for key in ("documentId", "id"):
        body = json.dumps({key: sha256(HELLO)})
        posted = await enforce.api.raw(content=body, headers={"Content-Type": JSON})
        assert await answer(posted) == (200, HELLO_DATA)
    got = await enforce.api.raw("GET", params={"documentId": sha256(HELLO)}, headers=GET_HEADERS)
    assert await answer(got) == (200, HELLO_DATA)


async def test_enforce_refuses_any_other_document_over_post_get_and_the_fast_lane(
    enforce: Served, sessionmaker: Sessionmaker
) -> None:
    token = token_for(await make_user(sessionmaker))
    assert await answer(await enforce.api.post(UNTRUSTED, token=token)) == (200, REQUIRED)
    refused = await enforce.api.post(UNTRUSTED, headers={"Accept": GRAPHQL_RESPONSE})
    assert await answer(refused) == (400, REQUIRED)
    got = await enforce.api.raw("GET", params={"query": UNTRUSTED}, headers=GET_HEADERS)
    assert await answer(got) == (200, REQUIRED)
    # An admin with the bypass off is refused too.
    admin = token_for(await make_user(sessionmaker, is_admin=True))
    assert await answer(await enforce.api.post(UNTRUSTED, token=admin)) == (200, REQUIRED)


async def test_enforce_refuses_an_unknown_hash_or_id(enforce: Served) -> None:
    by_apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256(UNTRUSTED)}}
    assert await answer(await enforce.api.post(None, extensions=by_apq)) == (200, NOT_FOUND)
    posted = await enforce.api.raw(
        content=json.dumps({"documentId": "nope"}), headers={"Content-Type": JSON}
    )
    assert await answer(posted) == (200, NOT_FOUND)


async def test_enforce_registers_no_automatic_persisted_query(
    enforce: Served, sessionmaker: Sessionmaker
) -> None:
    token = token_for(await make_user(sessionmaker))
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256(UNTRUSTED)}}
    refused = await enforce.api.post(UNTRUSTED, extensions=apq, token=token)
    assert await answer(refused) == (200, REQUIRED)
    trusted_apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256(HELLO)}}
    ran = await enforce.api.post(HELLO, extensions=trusted_apq, token=token)
    assert await answer(ran) == (200, HELLO_DATA)
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(PersistedQuery)) == 0


async def test_the_admin_bypass_lets_admins_alone_run_any_document(
    settings: Settings, sessionmaker: Sessionmaker
) -> None:
    admin = token_for(await make_user(sessionmaker, username="root", is_admin=True))
    user = token_for(await make_user(sessionmaker, username="ada"))
    async with trusted(settings, "enforce", trusted_documents_admin_bypass=True) as served:
        ran = await served.api.post(UNTRUSTED, token=admin)
        assert ran.status_code == 200 and "errors" not in ran.json(), ran.text
        # Now parsed and cached: the fast lane must refuse it to anyone else.
        assert await answer(await served.api.post(UNTRUSTED, token=user)) == (200, REQUIRED)
        assert await answer(await served.api.post(UNTRUSTED)) == (200, REQUIRED)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_enforce_over_both_websocket_protocols(
    enforce: Served, sessionmaker: Sessionmaker, protocol: str
) -> None:
    token = token_for(await make_user(sessionmaker, username="ada"))
    async with asgi_socket(enforce.app, protocol) as socket:
        await socket.login(token)
        assert await socket.execute("1", ME) == {"data": {"me": {"username": "ada"}}}
        assert await socket.execute("2", UNTRUSTED) == REQUIRED
        kind = "subscribe" if protocol == "graphql-transport-ws" else "start"
        apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256(HELLO)}}
        await socket.socket.send({"type": kind, "id": "3", "payload": {"extensions": apq}})
        assert await next_result(socket, "3") == HELLO_DATA
        await socket.socket.send({"type": kind, "id": "4", "payload": {"documentId": "nope"}})
        assert await next_result(socket, "4") == NOT_FOUND
        # A subscription is admitted like any other operation.
        subscription = 'subscription { messageAdded(conversationId: "x") { id } }'
        assert await socket.execute("5", subscription) == REQUIRED


async def next_result(socket: GraphQLSocket, op_id: str) -> dict[str, Any]:
    event = await socket.receive()
    assert event.id == op_id, event
    if event.kind == "error":
        return {"errors": event.payload}
    assert event.kind == "next", event
    assert (await socket.receive()).kind == "complete"
    result: dict[str, Any] = event.payload
    return result


def untrusted_count() -> float:
    return REGISTRY.get_sample_value("chatql_untrusted_operations_total") or 0.0


async def test_audit_runs_everything_and_logs_and_counts_what_is_untrusted(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatql.request")
    async with trusted(settings, "audit") as served:
        await served.load("web", apollo(HELLO))
        before = untrusted_count()
        assert await answer(await served.api.post(HELLO)) == (200, HELLO_DATA)
        assert await answer(await served.api.post(HELLO)) == (200, HELLO_DATA)  # fast lane
        other = "{ __typename }"
        assert await answer(await served.api.post(other)) == (200, HELLO_DATA)
        assert await answer(await served.api.post(other)) == (200, HELLO_DATA)  # fast lane
        assert untrusted_count() - before == 2
    lines = [dict(record.fields) for record in caplog.records if record.name == "chatql.request"]  # type: ignore[attr-defined]
    assert [line.get("trusted") for line in lines] == [None, None, False, False]


async def test_off_runs_everything_whatever_the_manifests(
    app: Starlette, api: Api, sessionmaker: Sessionmaker
) -> None:
    operations = parse_manifest(json.dumps(apollo(HELLO)))
    await load_manifest(sessionmaker, name="web", operations=operations)
    assert await answer(await api.post(UNTRUSTED)) == (200, {"data": {"me": None}})
    by_hash = {"persistedQuery": {"version": 1, "sha256Hash": sha256(HELLO)}}
    assert await answer(await api.post(None, extensions=by_hash)) == (200, NOT_FOUND)
    assert app.state.services.trusted is None


async def test_two_manifests_and_retiring_one(enforce: Served) -> None:
    relay = {RELAY_ID: UNTRUSTED}
    await enforce.load("ios", relay)
    assert (await enforce.api.post(UNTRUSTED)).json() == {"data": {"me": None}}
    assert await answer(await enforce.api.post(HELLO)) == (200, HELLO_DATA)
    assert await retire(enforce.sessionmaker, name="web")
    # Within a second of the process's clock, it has not looked yet.
    assert await answer(await enforce.api.post(HELLO)) == (200, HELLO_DATA)
    enforce.clock.tick()
    assert await answer(await enforce.api.post(HELLO)) == (200, REQUIRED)
    assert (await enforce.api.post(UNTRUSTED)).json() == {"data": {"me": None}}
    assert not await retire(enforce.sessionmaker, name="web")


async def test_relay_ids_and_their_sha256_both_find_a_relay_document(enforce: Served) -> None:
    await enforce.load("ios", {RELAY_ID: UNTRUSTED})
    for key in (RELAY_ID, sha256(UNTRUSTED)):
        posted = await enforce.api.raw(
            content=json.dumps({"documentId": key}), headers={"Content-Type": JSON}
        )
        assert await answer(posted) == (200, {"data": {"me": None}})


def test_manifests_are_read_in_both_formats_and_checked() -> None:
    [operation] = parse_manifest(json.dumps(apollo(HELLO)))
    assert (operation.document_id, operation.sha256, operation.body, operation.name) == (
        sha256(HELLO),
        sha256(HELLO),
        HELLO,
        "Hello",
    )
    [operation] = parse_manifest(json.dumps({RELAY_ID: HELLO}))
    assert (operation.document_id, operation.sha256, operation.body, operation.name) == (
        RELAY_ID,
        sha256(HELLO),
        HELLO,
        None,
    )
    wrong = apollo(HELLO)
    wrong["operations"][0]["id"] = sha256(ME)
    for bad, reason in [
        (json.dumps(wrong), f"operations[0]: id {sha256(ME)} is not the SHA-256 of its body"),
        ("[]", "a manifest is a JSON object"),
        ("{", "not JSON"),
        (json.dumps({**apollo(HELLO), "version": 2}), "version 2 is not 1"),
        (json.dumps({"a": 1}), "neither Apollo's"),
    ]:
        with pytest.raises(ManifestError) as raised:
            parse_manifest(bad)
        assert reason in str(raised.value)


async def test_a_manifest_loaded_by_the_trust_command_is_seen_by_a_running_server(
    settings: Settings, tmp_path: Path
) -> None:
    async with trusted(settings, "enforce") as served:
        assert await answer(await served.api.post(HELLO)) == (200, REQUIRED)
        path = tmp_path / "web-1.json"
        path.write_text(json.dumps(apollo(HELLO)))
        done = run_command(["trust", str(path)], database_url=settings.database_url, cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (
            0,
            "manifest 'web-1' loaded: 1 operations\n",
            "",
        )
        served.clock.tick()
        assert await answer(await served.api.post(HELLO)) == (200, HELLO_DATA)
        relay = tmp_path / "relay.json"
        relay.write_text(json.dumps({RELAY_ID: ME}))
        done = run_command(
            ["trust", str(relay), "--name", "ios-2", "--retire", "web-1"],
            database_url=settings.database_url,
            cwd=tmp_path,
        )
        assert (done.returncode, done.stdout) == (
            0,
            "manifest 'ios-2' loaded: 1 operations; manifest 'web-1' retired\n",
        )
        served.clock.tick()
        assert await answer(await served.api.post(HELLO)) == (200, REQUIRED)
        assert await answer(await served.api.post(ME)) == (200, {"data": {"me": None}})


async def test_the_trust_command_refuses_a_bad_manifest_and_changes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    wrong = apollo(HELLO)
    wrong["operations"][0]["id"] = sha256(ME)
    path.write_text(json.dumps(wrong))
    done = run_command(["trust", str(path)], database_url=settings.database_url, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"error: {path}: operations[0]: id {sha256(ME)} is not the SHA-256 of its body\n",
    )
    done = run_command(
        ["trust", "--retire", "nothing"], database_url=settings.database_url, cwd=tmp_path
    )
    assert (done.returncode, done.stderr) == (1, "error: no manifest named 'nothing'\n")
    async with trusted(settings, "enforce") as served:
        assert await answer(await served.api.post(HELLO)) == (200, REQUIRED)
