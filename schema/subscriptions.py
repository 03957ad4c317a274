"""The Subscription root: new messages of one conversation, as they are committed.

The broker hands over message ids only. Every subscriber of the conversation gets the same
`Batch`, and what it needs is loaded once for all of them through the batch's `Shared` memo
(issue 17, item 1; after Hasura's multiplexed subscriptions): the conversation, the messages
(both as an admin sees them) and the current rows of every viewer subscribed at delivery, one
statement each. Each subscriber then gets a fresh set of loaders (the connection lives for
hours, so nothing is cached from one batch to the next) primed with those rows as its own
permissions let it see them (`_primed`), so its own selection of the message and its
conversation resolves exactly as in a query, without a statement of its own; its operation's
pipeline (token expiry, masking, budgets, logging) still runs per event. A
subscription ends with UNAUTHENTICATED when the token it was opened with expires, as every
request after that moment would be refused.

Notifications lost while the LISTEN connection was down (issue 13) are made up for: when it
comes back the hub sends a `resync` batch, and the subscription reads the ids of the
conversation's messages above the last one it delivered (or, before its first, above the
highest id once it had subscribed), which follow commit order within a conversation
(`db.messages.message_ids_after`). Later batches drop ids at or below the last delivered, so
nothing arrives twice. That highest id is read after subscribing (subscribing stays the first
thing the operation does, as before): a message committed in the instant between the two whose
notification a cut of the LISTEN connection also loses is the one case still missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from functools import partial
from typing import Any

import strawberry
from sqlalchemy import Row

from db.conversations import conversations_by_ids
from db.engine import idempotent_read
from db.messages import message_ids_after, messages_by_ids
from db.users import users_by_ids
from loaders import Loaders, Viewer, make_loaders
from realtime.hub import Batch, Shared, SubscriberTooSlow, ViewerGone
from schema.context import NO_LOADERS, Services
from schema.errors import BAD_TOKEN, NotFound, TooSlow, Unauthenticated
from schema.permissions import require_viewer
from schema.relay import decode_conversation_id
from schema.types import Info, Message


async def viewer_rows(
    services: Services, shared: Shared, viewer_ids: frozenset[int], viewer_id: int
) -> Row[Any] | None:
    """`viewer_id`'s current row, read once for every viewer of an event (`viewer_ids`, at its
    delivery: one statement for all); a viewer not among them reads its own."""
    if viewer_id not in viewer_ids:
        viewer_ids = frozenset([viewer_id])
        shared = Shared()
    rows = await shared.once(
        "viewers",
        lambda: idempotent_read(
            services.read_sessionmaker, partial(users_by_ids, ids=sorted(viewer_ids))
        ),
    )
    return rows.get(viewer_id)


async def _batch_rows(
    services: Services, shared: Shared, conversation_id: str, message_ids: Sequence[int]
) -> tuple[Row[Any] | None, dict[int, Row[Any]]]:
    """The conversation and the messages of an event as an admin sees them (`_primed` applies
    each subscriber's permissions): one statement each, once for all subscribers."""
    conversation = shared.once(
        "conversation",
        lambda: conversations_by_ids(services.reads, ids=[conversation_id], owner_id=None),
    )
    if not message_ids:  # who may see it changed: the conversation alone
        return (await conversation).get(conversation_id), {}
    conversations, messages = await asyncio.gather(
        conversation,
        shared.once(
            "messages",
            lambda: idempotent_read(
                services.read_sessionmaker,
                partial(messages_by_ids, ids=list(message_ids), owner_id=None),
            ),
        ),
    )
    return conversations.get(conversation_id), messages


def _primed(
    services: Services,
    viewer: Viewer,
    viewer_row: Row[Any],
    conversation: Row[Any] | None,
    messages: dict[int, Row[Any]],
    *,
    conversation_id: str,
    message_ids: Sequence[int],
) -> tuple[Loaders, list[Row[Any]]]:
    """Fresh loaders for one subscriber, primed with what the event loaded as the subscriber's
    own loaders would have answered (an owner sees its own conversation only, an admin every
    one), so resolving its selection of the message and its conversation costs no statement;
    and the messages it may see, in `message_ids`' order."""
    loaders = make_loaders(services.read_sessionmaker, viewer, services.reads)
    visible = conversation is not None and (viewer.is_admin or conversation.user_id == viewer.id)
    loaders.user_by_id.prime(viewer.id, viewer_row)
    loaders.conversation_by_id.prime(conversation_id, conversation if visible else None)
    rows: list[Row[Any]] = []
    for message_id in message_ids:
        row = messages.get(message_id) if visible else None
        if row is not None and row.conversation_id != conversation_id:
            row = None
        loaders.message_by_id.prime(message_id, row)
        if row is not None:
            rows.append(row)
    return loaders, rows


def until(moment: float | None) -> float | None:
    """Seconds from now until `moment` (seconds since the epoch), None for never."""
    return None if moment is None else max(moment - time.time(), 0.0)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Every message sent to or imported into a conversation, once committed, "
        "in commit order. Owner or admin."
    )
    async def message_added(
        self, info: Info, conversation_id: strawberry.ID
    ) -> AsyncGenerator[Message, None]:
        context = info.context
        viewer = require_viewer(context)
        pk = decode_conversation_id(conversation_id, field="conversationId")
        services = context.services
        sessionmaker = context.sessionmaker
        # Subscribe before checking access, so no message committed after the check is missed.
        async with context.services.broker.hub.subscribe(pk, viewer_id=viewer.id) as subscription:
            if await make_loaders(sessionmaker, viewer).conversation_by_id.get(pk) is None:
                raise NotFound()
            # What a resync reads above until a message is delivered.
            (floor,) = await idempotent_read(
                sessionmaker, partial(message_ids_after, conversation_id=pk, after=None)
            ) or [0]
            delivered = 0
            while True:
                # Nothing resolves while it waits: an idle subscription keeps no loaders.
                context.loaders = NO_LOADERS
                try:
                    async with asyncio.timeout(until(context.token_expires)):
                        batch = await subscription.next_batch()
                except TimeoutError as exc:  # the token it was opened with has expired
                    raise Unauthenticated(BAD_TOKEN) from exc
                except SubscriberTooSlow as exc:
                    raise TooSlow(exc.queue_size) from exc
                except ViewerGone as exc:
                    raise Unauthenticated(BAD_TOKEN) from exc
                if batch.resync:
                    above = max(delivered, floor)
                    ids = await idempotent_read(
                        sessionmaker, partial(message_ids_after, conversation_id=pk, after=above)
                    )
                    # Read for this subscriber alone: its own loads.
                    batch = Batch(pk, tuple(ids), viewer_ids=frozenset([viewer.id]))
                else:
                    ids = [i for i in batch.message_ids if i > delivered]
                # A batch of no ids at all says who may see the conversation changed: check.
                if not ids and (batch.resync or batch.message_ids):
                    continue
                delivered = max(delivered, *ids, 0)
                (conversation, messages), viewer_row = await asyncio.gather(
                    _batch_rows(services, batch.shared, pk, batch.message_ids),
                    viewer_rows(services, batch.shared, batch.viewer_ids, viewer.id),
                )
                if viewer_row is None or not viewer_row.is_active:
                    raise Unauthenticated(BAD_TOKEN)
                if conversation is None or not (
                    viewer.is_admin or conversation.user_id == viewer.id
                ):
                    raise NotFound()  # given to another user, or deleted: as if never seen
                context.loaders, rows = _primed(
                    services,
                    viewer,
                    viewer_row,
                    conversation,
                    messages,
                    conversation_id=pk,
                    message_ids=ids,
                )
                for row in rows:
                    yield Message.from_row(row)
