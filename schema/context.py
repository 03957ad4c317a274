"""The per-request context, built by one constructor that the server and the tests both call."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.reads import Reads, SessionReads
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

    @property
    def read_sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.reader or self.sessionmaker

    @cached_property
    def reads(self) -> Reads:
        return self.driver_reads or SessionReads(self.read_sessionmaker)


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

    @property
    def config(self) -> Config:
        return self.services.config

    def reset_loaders(self) -> None:
        """Empty loaders, as at the start of the request."""
        self.loaders = _loaders(self.services, self.viewer, self.viewer_row)

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


def _loaders(services: Services, viewer: Viewer | None, viewer_row: Row[Any] | None) -> Loaders:
    loaders = make_loaders(services.read_sessionmaker, viewer, services.reads)
    if viewer_row is not None:
        loaders.user_by_id.prime(viewer_row.id, viewer_row)
    return loaders


async def build_context(
    services: Services,
    *,
    authorization: str | None,
    request_id: str,
    client_address: str | None = None,
    request: Any = None,
    response: Any = None,
) -> Context:
    """Load the viewer once for the whole request.

    A token that is malformed, forged, expired, or names a missing or deactivated user makes
    `auth_error` set, and every operation of the request is refused with it.
    """
    token = bearer_token(authorization)
    viewer_row: Row[Any] | None = None
    auth_error: Unauthenticated | None = None
    expires: float | None = None
    if token is not None:
        subject = read_token(services.config, token) if token else None
        if subject is not None:
            expires = subject.expires
            viewer_row = await get_user(services.reads, user_id=subject.user_id)
            if viewer_row is not None and viewer_row.account_key != subject.account_key:
                viewer_row = None  # another account, given the id of the token's deleted one
        if viewer_row is None or not viewer_row.is_active:
            viewer_row, auth_error = None, Unauthenticated(BAD_TOKEN)
    viewer = Viewer(id=viewer_row.id, is_admin=viewer_row.is_admin) if viewer_row else None
    loaders = _loaders(services, viewer, viewer_row)
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
    )
