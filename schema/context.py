"""The per-request context, built by one constructor that the server and the tests both call."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.reads import DriverReads, GuardedReads, Reads, SessionReads, ViewerGuard
from db.users import get_user
from loaders import Loaders, Viewer, make_loaders
from realtime.broker import Broker
from schema.auth import Passwords, read_token
from schema.config import Config
from schema.errors import BAD_TOKEN, Unauthenticated

if TYPE_CHECKING:
    from schema.budgets import Budgets
    from schema.trusted import TrustedDocuments


@dataclass(frozen=True)
class Services:
    """What lives as long as the process and every request shares."""

    sessionmaker: async_sessionmaker[AsyncSession]
    config: Config
    passwords: Passwords
    broker: Broker
    # Sessions for reads that need no transaction (loaders, the viewer): autocommit, so each
    # costs its statements alone, without BEGIN and ROLLBACK round trips. Defaults to
    # `sessionmaker`.
    reader: async_sessionmaker[AsyncSession] | None = None
    # Single-statement reads on the hot path (the viewer, some loaders); see `db.reads`.
    # Defaults to read sessions of `read_sessionmaker`.
    driver_reads: Reads | None = None
    # Issue 18, each None when off: the trusted documents and the cost budgets.
    trusted: TrustedDocuments | None = None
    budgets: Budgets | None = None
    # The rows of recent viewers by id, each with its `image` (PostgreSQL alone): see
    # `build_context`'s `tentative`.
    viewers: ViewerCache = field(default_factory=lambda: ViewerCache())

    @property
    def read_sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.reader or self.sessionmaker

    @cached_property
    def reads(self) -> Reads:
        return self.driver_reads or SessionReads(self.read_sessionmaker)


class ViewerCache:
    """The last row read of each recent viewer (at most `size`, the oldest dropped first).
    Never trusted alone: a request that takes a viewer from here checks it in its first
    statement (`db.reads.GuardedReads`) or looks it up again (`Context.confirm_viewer`)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.rows: dict[int, Any] = {}

    def get(self, user_id: int) -> Any | None:
        return self.rows.get(user_id)

    def put(self, user_id: int, row: Any | None) -> None:
        rows = self.rows
        rows.pop(user_id, None)
        if row is None:
            return
        if len(rows) >= self.size:
            del rows[next(iter(rows))]
        rows[user_id] = row


@dataclass
class Context:
    services: Services
    loaders: Loaders
    viewer: Viewer | None
    viewer_row: Row[Any] | None
    auth_error: Unauthenticated | None
    request_id: str
    client_address: str | None = None
    # When the viewer's token stops working (seconds since the epoch): a subscription, which
    # outlives the moment its token was checked, ends then.
    token_expires: float | None = None
    # Strawberry sets these on WebSocket connections.
    connection_params: dict[str, Any] | None = None
    request: Any = None
    response: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    # Set while the viewer is taken on trust from the process's cache and not yet checked.
    guard: ViewerGuard | None = None
    account_key: str | None = None

    @property
    def config(self) -> Config:
        return self.services.config

    def reset_loaders(self) -> None:
        """Empty loaders, as at the start of the request."""
        self.loaders = _loaders(self.services, self.viewer, self.viewer_row, self.guard)

    async def confirm_viewer(self) -> bool:
        """Check the viewer taken on trust (`build_context`'s `tentative`), if not checked yet:
        True when it still holds; else the viewer is what the database says now (another row,
        or none and `auth_error`: deactivated, deleted), the loaders are fresh, and False.
        Raises `db.errors.Unavailable` when the database does not answer."""
        guard = self.guard
        if guard is None:
            return True
        if guard.held:
            self.guard = None
            return True
        row = await _look_up(self.services, guard.user_id)
        if guard.held is None and row is not None and row.image == guard.image:
            guard.held = True
            self.guard = None
            return True
        self.guard = None
        if row is not None and row.account_key == self.account_key and row.is_active:
            self.sign_in_as(row)
        else:
            self.viewer, self.viewer_row, self.token_expires = None, None, None
            self.auth_error = Unauthenticated(BAD_TOKEN)
            self.reset_loaders()
        return False

    def sign_in_as(self, row: Row[Any] | None) -> None:
        """Make `row` (None: nobody) the viewer for the rest of the request, with loaders
        that check permissions as that viewer: the user of an auth payload, whose token the
        response carries, or nobody once the viewer deleted their own account."""
        self.viewer = Viewer(id=row.id, is_admin=row.is_admin) if row is not None else None
        self.viewer_row = row
        self.auth_error = None
        self.reset_loaders()

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.services.sessionmaker


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


# No loaders (reading one is an AttributeError): a WebSocket connection's context, and a
# subscription's between two events, when nothing resolves (each event primes fresh ones).
NO_LOADERS = Loaders({})


def _loaders(
    services: Services,
    viewer: Viewer | None,
    viewer_row: Row[Any] | None,
    guard: ViewerGuard | None = None,
) -> Loaders:
    reads = services.reads
    if guard is not None and isinstance(reads, DriverReads):
        reads = GuardedReads(reads, guard)
    loaders = make_loaders(services.read_sessionmaker, viewer, reads)
    if viewer_row is not None:
        # Primed when first used: most requests never read a user by id.
        loaders.prime_when_made("user_by_id", viewer_row.id, viewer_row)
    return loaders


async def build_context(
    services: Services,
    *,
    authorization: str | None,
    request_id: str,
    client_address: str | None = None,
    request: Any = None,
    response: Any = None,
    tentative: bool = False,
    connection: bool = False,
) -> Context:
    """Load the viewer once for the whole request.

    With `connection` (a WebSocket's own context, which lives as long as the socket: each of
    its operations runs with a context of its own), no loaders: `NO_LOADERS`, which
    has none and costs an idle socket nothing (its loaders' closures took ~7 KiB each).

    A token that is malformed, forged, expired, or names a missing or deactivated user makes
    `auth_error` set, and every operation of the request is refused with it.

    With `tentative` (the fast lane, on PostgreSQL), an active viewer the process read before
    is taken from `Services.viewers` without a statement; the request's first read checks it
    in the same statement (`db.reads.GuardedReads`: issue 14, one statement per screen), and
    the caller must `confirm_viewer()` before it answers or hands the context on.
    """
    token = bearer_token(authorization)
    viewer_row: Row[Any] | None = None
    auth_error: Unauthenticated | None = None
    expires: float | None = None
    guard: ViewerGuard | None = None
    account_key: str | None = None
    if token is not None:
        subject = read_token(services.config, token) if token else None
        if subject is not None:
            expires, account_key = subject.expires, subject.account_key
            cached = services.viewers.get(subject.user_id) if tentative else None
            if cached is not None and cached.account_key == account_key and cached.is_active:
                viewer_row, guard = cached, ViewerGuard(subject.user_id, cached.image)
            else:
                viewer_row = await _look_up(services, subject.user_id)
            if viewer_row is not None and viewer_row.account_key != account_key:
                viewer_row = None  # another account, given the id of the token's deleted one
        if viewer_row is None or not viewer_row.is_active:
            viewer_row, auth_error = None, Unauthenticated(BAD_TOKEN)
    viewer = Viewer(id=viewer_row.id, is_admin=viewer_row.is_admin) if viewer_row else None
    loaders = NO_LOADERS if connection else _loaders(services, viewer, viewer_row, guard)
    return Context(
        services=services,
        loaders=loaders,
        viewer=viewer,
        viewer_row=viewer_row,
        auth_error=auth_error,
        request_id=request_id,
        client_address=client_address,
        request=request,
        response=response,
        token_expires=expires if viewer_row is not None else None,
        guard=guard,
        account_key=account_key,
    )


async def _look_up(services: Services, user_id: int) -> Row[Any] | None:
    """The user's row; on PostgreSQL with its `image`, kept in `services.viewers`."""
    if not isinstance(services.reads, DriverReads):
        return await get_user(services.reads, user_id=user_id)
    row = await get_user(services.reads, user_id=user_id, image=True)
    services.viewers.put(user_id, row)
    return row
