"""The load driver of `bench/cluster`: chatql hosts, HAProxy, a mixed load, a kill, a restart.

Runs inside the client namespace that `bench/cluster` built (it reaches every host over the
bridge; processes are started in their own namespaces with `ip netns exec`). In order:

1. `python server.py migrate` once, then three hosts `serve --workers 2`, then HAProxy
   (health checks on `/readyz`, WebSockets, `leastconn`, no stickiness).
2. **The kill run**: senders (`sendMessage` with a `clientId`, retried with the same one until
   acknowledged), readers (a conversation's last 20 messages) and `messageAdded` subscribers
   (two per conversation, spread over the hosts by HAProxy) through HAProxy. Mid-load every
   process of one host is killed (SIGKILL); HAProxy's own status says when it stops routing to
   it; its subscribers reconnect; the host is started again and must come back UP and serve.
   Then PostgreSQL is asked: every acknowledged send must be stored exactly once.
3. **The same load on 1, 2 and 3 hosts** (the others put in maintenance through HAProxy's
   admin socket), reported as ratios to one host.

Events: a subscriber is owed every message whose send started after its subscription had
been open for `--settle` seconds and was acknowledged before it was lost (or the run ended);
a message owed and not delivered is *lost*. Messages committed while a `messageAdded`
subscriber was reconnecting are counted apart (*missed while reconnecting*): that
subscription does not replay.

Resume without loss: `--feeds` `changes` subscribers per user (schema/feed.py) take
`changesCursor` once, subscribe `changes(after:)` from it, and after every reconnect (through
HAProxy, to whichever host) subscribe again after the last cursor they were given. Each is
owed every acknowledged send to its user's conversations that started after its first cursor,
across reconnects, with no window and no grace; counted per subscriber: published, received,
gaps (owed, never received), duplicates (a change received twice), and how many of those
committed while it was reconnecting it got back by the replay. Writes the report to
bench/results/cluster-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import io
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parents[1]
LB = "198.18.0.1"
PG = "198.18.0.2"
HOSTS = {"app1": "198.18.0.11", "app2": "198.18.0.12", "app3": "198.18.0.13"}
APP_PORT = 8000
LB_PORT = 8080
BACKEND = "chatql"
SECRET = "cluster-bench-secret-key-long-enough-for-hs256"
PASSWORD = "cluster-bench-password"
HOST_HEADER = "x-chatql-host"

SEND = "mutation ($input: SendMessageInput!) { sendMessage(input: $input) { id clientId } }"
READ = (
    "query ($id: ID!) { conversation(id: $id) { id messages(last: 20) "
    "{ edges { node { id content } } } } }"
)
SUBSCRIBE = "subscription ($id: ID!) { messageAdded(conversationId: $id) { id clientId content } }"
# The change feed (schema/feed.py): take the feed's end first, then subscribe after it, and
# after every reconnect subscribe again after the last cursor delivered.
FEED_CURSOR = "query { changesCursor }"
FEED_SUBSCRIBE = (
    "subscription ($after: String) { changes(after: $after) { cursor kind messageId } }"
)

HAPROXY_CONFIG = """\
global
    maxconn 5000
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # An upgraded WebSocket is a tunnel: it lives as long as the subscriber stays.
    timeout tunnel 1h
    # A connection the server refused (a dead host not yet marked down) is tried again on
    # another server; a request already sent is never replayed.
    retries 2
    option redispatch

frontend graphql
    bind {lb}:{port}
    option forwardfor
    default_backend {backend}

backend {backend}
    # Subscribers hold connections for long: send new ones where there are fewest.
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    # Which host answered, for this bench only.
    http-response set-header X-Chatql-Host %[srv_name]
    default-server check inter 500ms fall 2 rise 2
{servers}
"""


# ---- processes -------------------------------------------------------------------------


class Cluster:
    """The chatql hosts and HAProxy, each started in its own namespace."""

    def __init__(self, *, prefix: str, work: Path, database_url: str) -> None:
        self.prefix = prefix
        self.work = work
        self.database_url = database_url
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, host: str) -> dict[str, str]:
        metrics = self.work / f"metrics-{host}"
        metrics.mkdir(exist_ok=True)
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "CHATQL_SECRET_KEY": SECRET,
            "CHATQL_LOG_LEVEL": "WARNING",
            "CHATQL_TRUST_PROXY": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        }

    def in_namespace(self, host: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", f"{self.prefix}-{host}", *command]

    def migrate(self) -> None:
        subprocess.run(
            self.in_namespace("app1", sys.executable, "server.py", "migrate"),
            cwd=ROOT,
            env=self.env("app1"),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start_host(self, host: str) -> None:
        log = (self.work / f"{host}.log").open("ab")
        self.processes[host] = subprocess.Popen(
            self.in_namespace(
                host,
                sys.executable,
                "server.py",
                "serve",
                "--host",
                HOSTS[host],
                "--port",
                str(APP_PORT),
                "--workers",
                "2",
            ),
            cwd=ROOT,
            env=self.env(host),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill_host(self, host: str) -> int:
        """SIGKILL every process in the host's namespace (by id); returns how many."""
        pids = subprocess.run(
            ["ip", "netns", "pids", f"{self.prefix}-{host}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        process = self.processes.pop(host, None)
        if process is not None:
            process.wait(10)
        return len(pids)

    def cpu_seconds(self, *hosts: str) -> float:
        """User and system CPU of every process now in these hosts' namespaces."""
        total = 0
        for host in hosts:
            pids = subprocess.run(
                ["ip", "netns", "pids", f"{self.prefix}-{host}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(OSError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def start_haproxy(self) -> None:
        servers = "\n".join(
            f"    server {host} {address}:{APP_PORT}" for host, address in HOSTS.items()
        )
        config = self.work / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                socket=self.admin_socket,
                lb=LB,
                port=LB_PORT,
                backend=BACKEND,
                servers=servers,
            )
        )
        subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
        log = (self.work / "haproxy.log").open("ab")
        self.processes["lb"] = subprocess.Popen(
            self.in_namespace("lb", "haproxy", "-db", "-f", str(config)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def admin_socket(self) -> Path:
        return self.work / "haproxy.sock"

    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(self.admin_socket))
            client.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's `show stat` rows of the backend's servers, by name."""
        text = self.admin("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] in HOSTS
        }

    def status(self, host: str) -> str:
        return self.servers()[host]["status"].split()[0]

    def set_state(self, host: str, state: str) -> None:
        self.admin(f"set server {BACKEND}/{host} state {state}")

    def stop_all(self) -> None:
        for host in list(self.processes):
            if host == "lb":
                process = self.processes.pop(host)
                process.terminate()
                process.wait(10)
            else:
                self.kill_host(host)


async def wait_until(predicate: Any, *, limit: float, what: str) -> float:
    """Poll `predicate()` every 50 ms; the seconds it took."""
    started = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise RuntimeError(f"{what}: not within {limit:.0f} s")
        await asyncio.sleep(0.05)


async def ready(address: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            response = await client.get(f"http://{address}:{APP_PORT}/readyz")
        return response.status_code == 200
    except httpx.HTTPError:
        return False


# ---- the load ----------------------------------------------------------------------------


@dataclass
class Send:
    client_id: str
    conversation: str
    started: float
    acked: float | None = None
    message_id: str | None = None
    attempts: int = 0


@dataclass
class Subscriber:
    conversation: str
    token: str
    # (opened, lost): the times its subscription was live.
    windows: list[tuple[float, float | None]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    delivered: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    reconnects: list[float] = field(default_factory=list)


@dataclass
class FeedSubscriber:
    """A `changes` subscriber of one user's feed: resumes after its last cursor."""

    user: User
    # When the first cursor (`changesCursor`) was answered: every send that started later and
    # was acknowledged is in the feed after it, whatever happened to the connection since.
    started: float | None = None
    cursor: str | None = None
    # The first cursor's (user id, position), to read the feed back from PostgreSQL at the end.
    first: tuple[int, int] | None = None
    windows: list[tuple[float, float | None]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    # MESSAGE_ADDED changes by message id: when received.
    received: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    reconnects: list[float] = field(default_factory=list)


@dataclass
class Record:
    sends: list[Send] = field(default_factory=list)
    # When each read was answered.
    reads: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # (time, kind) of every error: when they happened relative to the kill.
    error_times: list[tuple[float, str]] = field(default_factory=list)
    # (time, host) of every answered HTTP request.
    served: list[tuple[float, str]] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1
        self.error_times.append((time.monotonic(), kind))


@dataclass
class User:
    token: str
    conversations: list[str]


def http_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "http: timeout"
    return f"http: {type(exc).__name__}"


class Load:
    """Senders, readers and subscribers through HAProxy until `stop()`."""

    def __init__(
        self, *, users: list[User], phase: str, senders: int, readers: int, feeds: int = 1
    ) -> None:
        self.users = users
        self.phase = phase
        self.record = Record()
        self.subscribers = [
            Subscriber(conversation, user.token)
            for user in users
            for conversation in user.conversations
            for _ in range(2)
        ]
        self._stopping = asyncio.Event()
        self._client = httpx.AsyncClient(
            base_url=f"http://{LB}:{LB_PORT}",
            timeout=10,
            limits=httpx.Limits(max_connections=senders + readers),
        )
        self._workers = [
            *(asyncio.create_task(self._sender()) for _ in range(senders)),
            *(asyncio.create_task(self._reader()) for _ in range(readers)),
        ]
        self.feeds = [FeedSubscriber(user) for user in users for _ in range(feeds)]
        self._listeners = [
            *(asyncio.create_task(self._subscriber(sub)) for sub in self.subscribers),
            *(asyncio.create_task(self._feed_subscriber(feed)) for feed in self.feeds),
        ]
        self.started = time.monotonic()
        self.stopped = self.started

    async def subscribed(self) -> None:
        await wait_until(
            self._all_subscribed, limit=30, what=f"{self.phase}: subscribers connected"
        )

    async def _all_subscribed(self) -> bool:
        lives = [sub.windows for sub in self.subscribers] + [feed.windows for feed in self.feeds]
        return all(lived and lived[-1][1] is None for lived in lives)

    def _feeds_complete(self) -> bool:
        """Whether every feed subscriber has every acknowledged send it is owed."""
        acked = [send for send in self.record.sends if send.acked is not None]
        for feed in self.feeds:
            mine = set(feed.user.conversations)
            for send in acked:
                if (
                    send.conversation in mine
                    and feed.started is not None
                    and send.started >= feed.started
                    and send.message_id not in feed.received
                ):
                    return False
        return True

    async def stop(self, *, drain: float) -> None:
        """Stop sending (each send in progress retries until acknowledged), wait `drain` s for
        the last events, then close the subscribers."""
        self._stopping.set()
        await asyncio.gather(*self._workers)
        self.stopped = time.monotonic()
        await asyncio.sleep(drain)
        # Feed subscribers owe nothing to timing: give the last reconnects time to catch up.
        deadline = time.monotonic() + 20
        while not self._feeds_complete() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        for task in self._listeners:
            task.cancel()
        await asyncio.gather(*self._listeners, return_exceptions=True)
        await self._client.aclose()

    def _served(self, response: httpx.Response) -> None:
        self.record.served.append((time.monotonic(), response.headers.get(HOST_HEADER, "?")))

    async def _sender(self) -> None:
        while not self._stopping.is_set():
            user = random.choice(self.users)
            conversation = random.choice(user.conversations)
            send = Send(f"{self.phase}-{uuid.uuid4().hex}", conversation, time.monotonic())
            self.record.sends.append(send)
            variables = {
                "input": {
                    "conversationId": conversation,
                    "content": f"hello from {send.client_id}",
                    "clientId": send.client_id,
                }
            }
            while send.acked is None:
                send.attempts += 1
                try:
                    response = await self._client.post(
                        "/graphql",
                        json={"query": SEND, "variables": variables},
                        headers={"Authorization": f"Bearer {user.token}"},
                    )
                except httpx.HTTPError as exc:
                    self.record.error(http_kind(exc))
                else:
                    self._served(response)
                    body = response.json() if response.status_code in {200, 503} else {}
                    if response.status_code == 200 and "errors" not in body:
                        send.message_id = body["data"]["sendMessage"]["id"]
                        send.acked = time.monotonic()
                        break
                    self.record.error(answer_kind(response.status_code, body))
                # The same clientId again: stored at most once, whatever happened to the first.
                await asyncio.sleep(0.05)

    async def _reader(self) -> None:
        while not self._stopping.is_set():
            user = random.choice(self.users)
            try:
                response = await self._client.post(
                    "/graphql",
                    json={"query": READ, "variables": {"id": random.choice(user.conversations)}},
                    headers={"Authorization": f"Bearer {user.token}"},
                )
            except httpx.HTTPError as exc:
                self.record.error(http_kind(exc))
                await asyncio.sleep(0.05)
                continue
            self._served(response)
            body = response.json() if response.status_code in {200, 503} else {}
            if response.status_code == 200 and "errors" not in body:
                self.record.reads.append(time.monotonic())
            else:
                self.record.error(answer_kind(response.status_code, body))
                await asyncio.sleep(0.05)

    async def _subscriber(self, sub: Subscriber) -> None:
        lost: float | None = None
        while True:
            try:
                await self._subscribe_once(sub, lost)
                self.record.error("ws: closed by the server")
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                self.record.error(f"ws: {type(exc).__name__}")
            except SubscriptionError as exc:
                self.record.error(f"ws: {exc}")
            lost = time.monotonic()
            if sub.windows and sub.windows[-1][1] is None:
                sub.windows[-1] = (sub.windows[-1][0], lost)
            await asyncio.sleep(0.1 + random.random() * 0.2)

    async def _subscribe_once(self, sub: Subscriber, lost: float | None) -> None:
        async with connect(
            f"ws://{LB}:{LB_PORT}/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            open_timeout=5,
        ) as ws:
            await self._open(ws, sub, lost)
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "next":
                    payload = message["payload"]
                    if "errors" in payload:
                        raise SubscriptionError(payload["errors"][0]["message"])
                    message_id = payload["data"]["messageAdded"]["id"]
                    if message_id in sub.delivered:
                        sub.duplicates += 1
                    else:
                        sub.delivered[message_id] = time.monotonic()
                elif kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind in {"error", "complete"}:
                    raise SubscriptionError(kind)

    async def _open(self, ws: ClientConnection, sub: Subscriber, lost: float | None) -> None:
        await ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {sub.token}"}}
            )
        )
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if ack.get("type") != "connection_ack":
            raise SubscriptionError(f"no ack: {ack}")
        payload = {"query": SUBSCRIBE, "variables": {"id": sub.conversation}}
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
        opened = time.monotonic()
        if lost is not None:
            sub.reconnects.append(opened - lost)
        sub.windows.append((opened, None))
        response = ws.response
        sub.hosts.append(response.headers.get(HOST_HEADER, "?") if response else "?")

    async def _feed_subscriber(self, feed: FeedSubscriber) -> None:
        lost: float | None = None
        while True:
            try:
                await self._feed_once(feed, lost)
                self.record.error("feed ws: closed by the server")
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                self.record.error(f"feed ws: {type(exc).__name__}")
            except httpx.HTTPError as exc:
                self.record.error(f"feed {http_kind(exc)}")
            except SubscriptionError as exc:
                self.record.error(f"feed ws: {exc}")
            lost = time.monotonic()
            if feed.windows and feed.windows[-1][1] is None:
                feed.windows[-1] = (feed.windows[-1][0], lost)
            await asyncio.sleep(0.1 + random.random() * 0.2)

    async def _feed_once(self, feed: FeedSubscriber, lost: float | None) -> None:
        if feed.cursor is None:
            response = await self._client.post(
                "/graphql",
                json={"query": FEED_CURSOR},
                headers={"Authorization": f"Bearer {feed.user.token}"},
            )
            body = response.json() if response.status_code in {200, 503} else {}
            if response.status_code != 200 or "errors" in body:
                raise SubscriptionError(answer_kind(response.status_code, body))
            feed.cursor = body["data"]["changesCursor"]
            feed.started = time.monotonic()
            # `["f",<user id>,<position>]`, unpadded base64url (db.formats.encode_cursor).
            values = base64.urlsafe_b64decode(feed.cursor + "=" * (-len(feed.cursor) % 4))
            _, user_id, position = json.loads(values)
            feed.first = (user_id, position)
        async with connect(
            f"ws://{LB}:{LB_PORT}/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            open_timeout=5,
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"authorization": f"Bearer {feed.user.token}"},
                    }
                )
            )
            ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if ack.get("type") != "connection_ack":
                raise SubscriptionError(f"no ack: {ack}")
            payload = {"query": FEED_SUBSCRIBE, "variables": {"after": feed.cursor}}
            await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
            opened = time.monotonic()
            if lost is not None:
                feed.reconnects.append(opened - lost)
            feed.windows.append((opened, None))
            upgrade = ws.response
            feed.hosts.append(upgrade.headers.get(HOST_HEADER, "?") if upgrade else "?")
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "next":
                    payload = message["payload"]
                    if "errors" in payload:
                        code = payload["errors"][0].get("extensions", {}).get("code", "?")
                        raise SubscriptionError(code)
                    change = payload["data"]["changes"]
                    feed.cursor = change["cursor"]
                    if change["kind"] != "MESSAGE_ADDED":
                        continue
                    if change["messageId"] in feed.received:
                        feed.duplicates += 1
                    else:
                        feed.received[change["messageId"]] = time.monotonic()
                elif kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind in {"error", "complete"}:
                    raise SubscriptionError(kind)


class SubscriptionError(Exception):
    pass


def answer_kind(status: int, body: Any) -> str:
    if status != 200:
        code = ""
        with contextlib.suppress(KeyError, IndexError, TypeError):
            code = f" {body['errors'][0]['extensions']['code']}"
        return f"http {status}{code}"
    code = body["errors"][0].get("extensions", {}).get("code", "?")
    return f"graphql {code}"


# ---- what the load did -------------------------------------------------------------------


@dataclass
class Events:
    published: int
    owed: int
    delivered: int
    lost: int
    duplicates: int
    missed_while_reconnecting: int
    latencies: list[float]
    per_subscriber: list[tuple[int, int]]  # (owed, delivered of those)


def events(load: Load, *, settle: float, grace: float) -> Events:
    acked = [send for send in load.record.sends if send.acked is not None]
    by_conversation: dict[str, list[Send]] = {}
    for send in acked:
        by_conversation.setdefault(send.conversation, []).append(send)
    owed = delivered = lost = duplicates = missed = 0
    latencies: list[float] = []
    per_subscriber = []
    for sub in load.subscribers:
        sub_owed = sub_delivered = 0
        # A subscription lost with its host also loses what that host was still delivering.
        windows = [
            (opened + settle, load.stopped if closed is None else closed - grace)
            for opened, closed in sub.windows
        ]
        for send in by_conversation.get(sub.conversation, []):
            assert send.acked is not None and send.message_id is not None
            at = sub.delivered.get(send.message_id)
            if at is not None:
                latencies.append(at - send.started)
            if any(start <= send.started and send.acked <= end for start, end in windows):
                sub_owed += 1
                if at is not None:
                    sub_delivered += 1
            elif at is None:
                missed += 1
        owed += sub_owed
        delivered += sub_delivered
        lost += sub_owed - sub_delivered
        duplicates += sub.duplicates
        per_subscriber.append((sub_owed, sub_delivered))
    return Events(len(acked), owed, delivered, lost, duplicates, missed, latencies, per_subscriber)


@dataclass
class FeedEvents:
    """The `changes` subscribers. Published to one: every MESSAGE_ADDED change of this phase
    in its user's feed after its first cursor, as PostgreSQL has it at the end; all of them are
    owed, across reconnects (no windows, no grace)."""

    subscribers: int
    # Sum over subscribers: owed (published to them), received of those, gaps (owed, never
    # received), duplicates (a change received twice).
    owed: int
    received: int
    gaps: int
    duplicates: int
    # Owed sends acknowledged while the subscriber was disconnected, and received anyway (the
    # replay after its cursor).
    during_reconnect: int
    recovered: int
    latencies: list[float]
    per_subscriber: list[tuple[int, int, int, int]]  # (owed, received, gaps, duplicates)


async def feed_events(database_url: str, load: Load) -> FeedEvents:
    connection = await asyncpg.connect(database_url)
    try:
        published: list[set[int]] = []
        for feed in load.feeds:
            assert feed.first is not None
            rows = await connection.fetch(
                "SELECT c.message_id FROM changes c JOIN messages m ON m.id = c.message_id "
                "WHERE c.user_id = $1 AND c.position > $2 AND c.kind = 'MESSAGE_ADDED' "
                "AND m.client_id LIKE $3",
                *feed.first,
                f"{load.phase}-%",
            )
            published.append({row["message_id"] for row in rows})
    finally:
        await connection.close()
    sends = {message_id(send.message_id): send for send in load.record.sends if send.message_id}
    owed_total = received_total = gaps = duplicates = during = recovered = 0
    latencies: list[float] = []
    per = []
    for feed, ids in zip(load.feeds, published, strict=True):
        received = {message_id(key): at for key, at in feed.received.items()}
        got = 0
        # The gaps between a subscription lost and the next one opened.
        outages = [
            (closed, feed.windows[index + 1][0] if index + 1 < len(feed.windows) else load.stopped)
            for index, (_, closed) in enumerate(feed.windows)
            if closed is not None
        ]
        for key in ids:
            send = sends.get(key)
            at = received.get(key)
            missed = (
                send is not None
                and send.acked is not None
                and any(start <= send.acked <= end for start, end in outages)
            )
            during += missed
            if at is not None:
                got += 1
                recovered += missed
                if send is not None:
                    latencies.append(at - send.started)
        owed_total += len(ids)
        received_total += got
        gaps += len(ids) - got
        duplicates += feed.duplicates
        per.append((len(ids), got, len(ids) - got, feed.duplicates))
    return FeedEvents(
        len(load.feeds),
        owed_total,
        received_total,
        gaps,
        duplicates,
        during,
        recovered,
        latencies,
        per,
    )


@dataclass
class Stored:
    acknowledged: int
    stored_once: int
    missing: int
    duplicated: int
    wrong_id: int
    unacknowledged_stored: int


async def stored(database_url: str, load: Load) -> Stored:
    """Every acknowledged send against PostgreSQL: stored exactly once, under the id the
    client was given."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT client_id, count(*) AS n, min(id) AS id FROM messages "
            "WHERE client_id LIKE $1 GROUP BY client_id",
            f"{load.phase}-%",
        )
    finally:
        await connection.close()
    in_db = {row["client_id"]: (row["n"], row["id"]) for row in rows}
    acked = [send for send in load.record.sends if send.acked is not None]
    once = missing = duplicated = wrong = 0
    for send in acked:
        count, row_id = in_db.get(send.client_id, (0, None))
        if count == 0:
            missing += 1
        elif count > 1:
            duplicated += 1
        else:
            once += 1
            if send.message_id is None or not global_id_is(send.message_id, row_id):
                wrong += 1
    unacked = len(set(in_db) - {send.client_id for send in acked})
    return Stored(len(acked), once, missing, duplicated, wrong, unacked)


def message_id(global_id: str) -> int:
    """The row id of a Message's global id (base64 of `Message:<id>`)."""
    decoded = base64.b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    return int(decoded.rsplit(":", 1)[-1])


def global_id_is(global_id: str, row_id: int | None) -> bool:
    with contextlib.suppress(ValueError):
        decoded = base64.b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
        return decoded.rsplit(":", 1)[-1] == str(row_id)
    return False


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# ---- the runs ----------------------------------------------------------------------------


async def sign_up(count: int, conversations: int) -> list[User]:
    users = []
    async with httpx.AsyncClient(base_url=f"http://{LB}:{LB_PORT}", timeout=30) as client:

        async def call(query: str, variables: dict[str, Any], token: str | None = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await client.post(
                "/graphql", json={"query": query, "variables": variables}, headers=headers
            )
            body = response.json()
            if "errors" in body:
                raise RuntimeError(f"set-up failed: {body['errors']}")
            return body["data"]

        run = uuid.uuid4().hex[:8]
        for index in range(count):
            name = f"c{run}u{index}"
            data = await call(
                "mutation ($input: SignUpInput!) { signUp(input: $input) { token } }",
                {"input": {"username": name, "email": f"{name}@example.com", "password": PASSWORD}},
            )
            token = data["signUp"]["token"]
            ids = []
            for number in range(conversations):
                created = await call(
                    "mutation ($t: String!) { createConversation(input: {title: $t}) { id } }",
                    {"t": f"{name} #{number}"},
                    token,
                )
                ids.append(created["createConversation"]["id"])
            users.append(User(token, ids))
    return users


@dataclass
class KillRun:
    load: Load
    victim: str
    subscribers_on_victim: int
    killed_processes: int
    killed_at: float
    down_after: float
    reconnected_after: float
    restarted_at: float
    up_after: float
    served_after_rejoin: int
    served_while_down: int
    errors_after_down: Counter[str]
    events: Events
    stored: Stored
    feeds: FeedEvents
    feeds_on_victim: int


async def kill_run(
    cluster: Cluster, users: list[User], args: argparse.Namespace, database_url: str
) -> KillRun:
    victim = "app2"
    load = Load(
        users=users, phase="kill", senders=args.senders, readers=args.readers, feeds=args.feeds
    )
    await load.subscribed()
    await asyncio.sleep(args.seconds)
    on_victim = [sub for sub in load.subscribers if sub.hosts and sub.hosts[-1] == victim]
    feeds_on_victim = [feed for feed in load.feeds if feed.hosts and feed.hosts[-1] == victim]
    windows = [sub.windows for sub in on_victim] + [feed.windows for feed in feeds_on_victim]
    print(f"killing {victim} ({len(on_victim)} subscribers on it)", flush=True)
    killed_at = time.monotonic()
    killed = cluster.kill_host(victim)

    async def marked_down() -> bool:
        return cluster.status(victim) == "DOWN"

    down_after = await wait_until(marked_down, limit=30, what=f"HAProxy marks {victim} DOWN")
    print(f"HAProxy marked {victim} DOWN after {down_after:.2f} s", flush=True)

    async def moved() -> bool:
        return all(lived[-1][1] is None and lived[-1][0] > killed_at for lived in windows)

    await wait_until(moved, limit=30, what="subscribers reconnected")
    reconnected_after = max(lived[-1][0] for lived in windows) - killed_at
    await asyncio.sleep(max(0.0, killed_at + args.seconds - time.monotonic()))
    restarted_at = time.monotonic()
    cluster.start_host(victim)

    async def marked_up() -> bool:
        return cluster.status(victim) == "UP"

    up_after = await wait_until(marked_up, limit=90, what=f"HAProxy marks {victim} UP")
    print(f"{victim} restarted; UP after {up_after:.2f} s", flush=True)
    up_at = time.monotonic()
    await asyncio.sleep(args.seconds)
    await load.stop(drain=args.drain)
    down_at = killed_at + down_after
    served = load.record.served
    return KillRun(
        load=load,
        victim=victim,
        subscribers_on_victim=len(on_victim),
        killed_processes=killed,
        killed_at=killed_at,
        down_after=down_after,
        reconnected_after=reconnected_after,
        restarted_at=restarted_at,
        up_after=up_after,
        served_after_rejoin=sum(1 for at, host in served if host == victim and at > up_at),
        served_while_down=sum(
            1 for at, host in served if host == victim and down_at < at < restarted_at
        ),
        errors_after_down=Counter(
            kind for at, kind in load.record.error_times if down_at < at < restarted_at
        ),
        events=events(load, settle=args.settle, grace=args.grace),
        stored=await stored(database_url, load),
        feeds=await feed_events(database_url, load),
        feeds_on_victim=len(feeds_on_victim),
    )


@dataclass
class ScaleRun:
    hosts: int
    seconds: float
    load: Load
    events: Events
    stored: Stored
    feeds: FeedEvents
    # Over the measured seconds: acknowledged sends, reads, events delivered.
    sends: int
    reads: int
    delivered: int
    # CPU seconds over the measured seconds: chatql (all hosts), PostgreSQL, HAProxy.
    cpu_app: float
    cpu_pg: float
    cpu_lb: float


async def scale_run(
    cluster: Cluster,
    users: list[User],
    hosts: int,
    phase: str,
    args: argparse.Namespace,
    database_url: str,
) -> ScaleRun:
    for index, host in enumerate(HOSTS):
        cluster.set_state(host, "ready" if index < hosts else "maint")

    async def settled() -> bool:
        states = cluster.servers()
        return all(
            states[host]["status"].startswith("UP" if index < hosts else "MAINT")
            for index, host in enumerate(HOSTS)
        )

    await wait_until(settled, limit=30, what=f"{hosts} hosts in service")
    load = Load(
        users=users, phase=phase, senders=args.senders, readers=args.readers, feeds=args.feeds
    )
    await load.subscribed()
    await asyncio.sleep(1)  # past the first requests' connecting
    started = time.monotonic()
    cpu = [cluster.cpu_seconds(*HOSTS), cluster.cpu_seconds("pg"), cluster.cpu_seconds("lb")]
    await asyncio.sleep(args.seconds)
    cpu = [
        cluster.cpu_seconds(*HOSTS) - cpu[0],
        cluster.cpu_seconds("pg") - cpu[1],
        cluster.cpu_seconds("lb") - cpu[2],
    ]
    ended = time.monotonic()
    await load.stop(drain=args.drain)

    def within(at: float | None) -> bool:
        return at is not None and started <= at < ended

    return ScaleRun(
        hosts=hosts,
        seconds=ended - started,
        load=load,
        events=events(load, settle=args.settle, grace=args.grace),
        stored=await stored(database_url, load),
        feeds=await feed_events(database_url, load),
        sends=sum(1 for send in load.record.sends if within(send.acked)),
        reads=sum(1 for at in load.record.reads if within(at)),
        delivered=sum(1 for sub in load.subscribers for at in sub.delivered.values() if within(at)),
        cpu_app=cpu[0],
        cpu_pg=cpu[1],
        cpu_lb=cpu[2],
    )


# ---- the report --------------------------------------------------------------------------


def errors_text(errors: Counter[str]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in errors.most_common()) or "none"


def report(kill: KillRun, scale: list[ScaleRun], args: argparse.Namespace) -> str:
    load = kill.load
    ev = kill.events
    st = kill.stored
    reconnects = [seconds for sub in load.subscribers for seconds in sub.reconnects if seconds > 0]
    moved = [sub for sub in load.subscribers if kill.victim in sub.hosts[:1]]
    hosts_at_start = Counter(sub.hosts[0] for sub in load.subscribers if sub.hosts)
    per = [delivered / owed for owed, delivered in ev.per_subscriber if owed]
    fe = kill.feeds
    feed_reconnects = [seconds for feed in load.feeds for seconds in feed.reconnects]
    lines = [
        f"### Cluster run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        "shared by PostgreSQL, HAProxy, three chatql hosts of 2 workers each and the load "
        f"driver; Python {platform.python_version()}. Command: `bench/cluster "
        f"{' '.join(sys.argv[7:])}".rstrip()
        + "`.",
        f"Load: {args.senders} senders (sendMessage with a clientId, retried with the same one "
        f"until acknowledged), {args.readers} readers (a conversation's last 20 messages), "
        f"{len(load.subscribers)} messageAdded subscribers (2 per conversation, "
        f"{len(load.subscribers) // 2} conversations of {args.users} users), "
        f"{len(load.feeds)} `changes` subscribers ({args.feeds} per user, resuming after their "
        "last cursor), all through "
        "HAProxy (leastconn, /readyz checks every 500 ms, down after 2 failures).",
        "",
        "**Kill and restart** (one host's every process SIGKILLed mid-load):",
        "",
        "| | |",
        "|---|---|",
        f"| subscribers per host at the start | "
        f"{', '.join(f'{h} {n}' for h, n in sorted(hosts_at_start.items()))} |",
        f"| killed | {kill.victim}: {kill.killed_processes} processes, "
        f"{kill.subscribers_on_victim} subscribers on it |",
        f"| HAProxy marked it DOWN after | {kill.down_after:.2f} s |",
        f"| its subscribers all reconnected (elsewhere) after | {kill.reconnected_after:.2f} s |",
        f"| reconnect times (each lost subscription until subscribed again) | "
        f"p50 {percentile(reconnects, 0.5):.2f} s, max {max(reconnects, default=0):.2f} s, "
        f"{len(reconnects)} reconnects |",
        f"| requests answered by {kill.victim} while DOWN | {kill.served_while_down} |",
        f"| errors between DOWN and the restart | {errors_text(kill.errors_after_down)} |",
        f"| restarted: UP after | {kill.up_after:.2f} s (start-up, migrate check, 2 checks) |",
        f"| requests it answered after rejoining | {kill.served_after_rejoin} |",
        f"| requests | {len(load.record.sends)} sends "
        f"({sum(s.attempts for s in load.record.sends)} attempts), "
        f"{len(load.record.reads)} reads |",
        f"| errors by kind (whole run) | {errors_text(load.record.errors)} |",
        f"| acknowledged vs stored | {st.acknowledged} acknowledged, {st.stored_once} stored "
        f"exactly once, **{st.missing} lost, {st.duplicated} duplicated**, {st.wrong_id} under "
        f"another id; {st.unacknowledged_stored} stored but never acknowledged |",
        f"| events | {ev.published} published; owed to subscribers {ev.owed}, delivered "
        f"{ev.delivered}, **lost {ev.lost}, duplicated {ev.duplicates}**; "
        f"missed while reconnecting {ev.missed_while_reconnecting} "
        f"(subscribers first on {kill.victim}: {len(moved)}) |",
        f"| delivered per subscriber (of what it was owed) | "
        f"min {min(per, default=0):.3f}, median {statistics.median(per) if per else 0:.3f} |",
        f"| event latency (send started → subscriber has it) | "
        f"p50 {percentile(ev.latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(ev.latencies, 0.99) * 1000:.0f} ms |",
        f"| `changes` subscribers (resume after the last cursor) | {fe.subscribers} "
        f"({args.feeds} per user), {kill.feeds_on_victim} on {kill.victim} when killed; "
        f"{sum(len(feed.reconnects) for feed in load.feeds)} reconnects, "
        f"p50 {percentile(feed_reconnects, 0.5):.2f} s, "
        f"max {max(feed_reconnects, default=0):.2f} s |",
        f"| changes published to them vs received | {fe.owed} published, {fe.received} "
        f"received, **{fe.gaps} gaps, {fe.duplicates} duplicated**; of those committed while "
        f"a subscriber was reconnecting, {fe.recovered} of {fe.during_reconnect} received "
        "(replayed after its cursor) |",
        f"| per `changes` subscriber (published / received / gaps / duplicates) | "
        f"{', '.join(f'{o}/{r}/{g}/{d}' for o, r, g, d in fe.per_subscriber)} |",
        f"| change latency (send started → subscriber has it) | "
        f"p50 {percentile(fe.latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(fe.latencies, 0.99) * 1000:.0f} ms |",
        "",
        f"**The same load on 1, 2 and 3 hosts** (the others in maintenance; medians of "
        f"{args.rounds} interleaved rounds of {args.seconds:.0f} s; ratios to one host; CPU in "
        "ms per answered request, sends and reads together):",
        "",
        "| hosts | sends/s | reads/s | events delivered/s | ratio sends | ratio reads | "
        "ratio events | event p50 ms | event p99 ms | chatql CPU ms/req | PostgreSQL CPU ms/req "
        "| HAProxy CPU ms/req | errors | acked / stored once / lost / dup "
        "| events owed / lost / dup | changes published / gaps / dup |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    base: list[float] | None = None
    for hosts in (1, 2, 3):
        runs = [run for run in scale if run.hosts == hosts]
        if not runs:
            continue

        def median(value: Callable[[ScaleRun], float], runs: list[ScaleRun] = runs) -> float:
            return statistics.median([value(run) for run in runs])

        rates = [
            median(lambda run: run.sends / run.seconds),
            median(lambda run: run.reads / run.seconds),
            median(lambda run: run.delivered / run.seconds),
        ]
        cpu = [
            median(lambda run: run.cpu_app * 1000 / max(1, run.sends + run.reads)),
            median(lambda run: run.cpu_pg * 1000 / max(1, run.sends + run.reads)),
            median(lambda run: run.cpu_lb * 1000 / max(1, run.sends + run.reads)),
        ]
        base = base or rates
        ratios = [
            rate / first if first else float("nan") for rate, first in zip(rates, base, strict=True)
        ]
        latencies = [at for run in runs for at in run.events.latencies]
        errors: Counter[str] = Counter()
        for run in runs:
            errors.update(run.load.record.errors)
        lines.append(
            f"| {hosts} | {rates[0]:.1f} | {rates[1]:.1f} | {rates[2]:.1f} | "
            f"{ratios[0]:.2f} | {ratios[1]:.2f} | {ratios[2]:.2f} | "
            f"{percentile(latencies, 0.5) * 1000:.0f} | "
            f"{percentile(latencies, 0.99) * 1000:.0f} | "
            f"{cpu[0]:.1f} | {cpu[1]:.1f} | {cpu[2]:.1f} | {errors_text(errors)} | "
            f"{sum(run.stored.acknowledged for run in runs)} / "
            f"{sum(run.stored.stored_once for run in runs)} / "
            f"{sum(run.stored.missing for run in runs)} / "
            f"{sum(run.stored.duplicated for run in runs)} | "
            f"{sum(run.events.owed for run in runs)} / {sum(run.events.lost for run in runs)} / "
            f"{sum(run.events.duplicates for run in runs)} | "
            f"{sum(run.feeds.owed for run in runs)} / {sum(run.feeds.gaps for run in runs)} / "
            f"{sum(run.feeds.duplicates for run in runs)} |"
        )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> tuple[str, bool]:
    work = Path(args.work)
    database_url = f"postgresql+asyncpg://postgres@{PG}:5432/postgres"
    cluster = Cluster(prefix=args.prefix, work=work, database_url=database_url)
    try:
        print("migrating once, then starting 3 hosts and HAProxy", flush=True)
        cluster.migrate()
        for host in HOSTS:
            cluster.start_host(host)
        for host, address in HOSTS.items():

            async def host_ready(address: str = address) -> bool:
                return await ready(address)

            await wait_until(host_ready, limit=90, what=f"{host} ready")
        cluster.start_haproxy()

        async def all_up() -> bool:
            if cluster.processes["lb"].poll() is not None:
                raise RuntimeError("HAProxy exited: see bench/results/cluster-logs/haproxy.log")
            if not cluster.admin_socket.exists():
                return False
            states = {host: row["status"] for host, row in cluster.servers().items()}
            return len(states) == len(HOSTS) and set(states.values()) == {"UP"}

        await asyncio.sleep(0.5)  # the admin socket

        await wait_until(all_up, limit=30, what="HAProxy sees every host UP")
        users = await sign_up(args.users, args.conversations)
        print("kill run", flush=True)
        kill = await kill_run(cluster, users, args, f"postgresql://postgres@{PG}:5432/postgres")
        scale = []
        for round_ in range(args.rounds):
            # Interleaved, and every other round backwards: drift hits each size alike.
            sizes = (1, 2, 3) if round_ % 2 == 0 else (3, 2, 1)
            for hosts in sizes:
                print(f"round {round_ + 1}: load on {hosts} host(s)", flush=True)
                scale.append(
                    await scale_run(
                        cluster,
                        users,
                        hosts,
                        f"scale{hosts}r{round_}",
                        args,
                        f"postgresql://postgres@{PG}:5432/postgres",
                    )
                )
    finally:
        cluster.stop_all()
    ok = (
        kill.stored.missing == 0
        and kill.stored.duplicated == 0
        and kill.events.lost == 0
        and kill.events.duplicates == 0
        and kill.served_after_rejoin > 0
        and kill.feeds.gaps == 0
        and kill.feeds.duplicates == 0
        and all(
            run.stored.missing == 0
            and run.events.lost == 0
            and run.feeds.gaps == 0
            and run.feeds.duplicates == 0
            for run in scale
        )
    )
    return report(kill, scale, args), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--work", required=True, help="bench/cluster's temporary folder")
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--prefix", required=True, help="the namespaces' prefix")
    parser.add_argument("--seconds", type=float, default=15, help="length of each phase")
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--conversations", type=int, default=3, help="per user")
    parser.add_argument("--drain", type=float, default=3, help="seconds for the last events")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds after `subscribe` before a subscriber is owed events",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=2.0,
        help="seconds before a subscription was lost in which events may die with its host",
    )
    parser.add_argument(
        "--feeds", type=int, default=2, help="`changes` subscribers per user (resume by cursor)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1, 2, 3 hosts")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "cluster-latest.md"))
    args = parser.parse_args()
    text, ok = asyncio.run(main_async(args))
    print("\n" + text)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print("PASS" if ok else "FAIL: see the table", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
