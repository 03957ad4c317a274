"""The Subscription root: new messages of one conversation, as they are committed.

The broker hands over message ids only; each batch is loaded through a fresh set of loaders
(the connection lives for hours, so nothing is cached from one batch to the next), under the
subscriber's own permissions, so nested fields resolve exactly as they would in a query. A
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
from collections.abc import AsyncGenerator
from functools import partial

import strawberry

from db.engine import idempotent_read
from db.messages import message_ids_after
from loaders import make_loaders
from realtime.hub import SubscriberTooSlow, ViewerGone
from schema.errors import BAD_TOKEN, NotFound, TooSlow, Unauthenticated
from schema.permissions import require_viewer
from schema.relay import decode_conversation_id
from schema.types import Info, Message


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
                else:
                    ids = [i for i in batch.message_ids if i > delivered]
                if not ids:
                    continue
                delivered = max(delivered, *ids)
                loaders = make_loaders(sessionmaker, viewer)
                viewer_row, rows = await asyncio.gather(
                    loaders.user_by_id.get(viewer.id),
                    loaders.message_by_id.load_many(ids),
                )
                if viewer_row is None or not viewer_row.is_active:
                    raise Unauthenticated(BAD_TOKEN)
                context.loaders = loaders
                for row in rows:
                    # None: the conversation changed hands since; it is no longer the viewer's.
                    if row is not None:
                        yield Message.from_row(row)
