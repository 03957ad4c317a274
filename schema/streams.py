"""Streamed answers (issue 15): `startMessage`, `appendMessage`, `finishMessage` and the
`messageStream` subscription. The storage design is `db.streams`'s.

`startMessage` is `sendMessage` for an empty STREAMING message, through the same code
(`schema.message_mutations.add_one`: the same clientId idempotency, one key space for both,
the same `messageAdded` and MESSAGE_ADDED). `appendMessage` is two statements and nothing
else: no conversation lock, no feed change (appends are what `messageStream` is for); on
PostgreSQL they are one statement on its own (`db.streams.append_at_once`: the claim, the
chunk's INSERT and its NOTIFY, one round trip with no BEGIN or COMMIT), and only an append it
did not store as new (a retry, an error, a race) is looked at again in a transaction
(`db.streams.append`). `finishMessage` folds the chunks into `content`, adds
MESSAGE_FINISHED and wakes the stream's subscribers for the last chunk.

`messageStream` subscribes to the stream's wake-ups first, then reads what was stored after
`afterSeq`; each wake-up (an append's, a finish's, or a resync after the LISTEN connection came
back) makes it read the chunks after the last seq it delivered, in one statement that also
gives the status, so each character reaches the subscriber once and none is lost. A wake-up's
payload is never trusted for content. It ends after the chunk with the final status. The
subscribers of one message in this process that one wake-up finds at the same seq (and with
the same owner scope) read once between them: the wake-up's `Shared` memo, as `messageAdded`'s
subscribers load an event once (issue 15, S1).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from functools import partial

import strawberry

from db import messages as message_data
from db import streams
from db.changes import ChangeKind, NewChange, record
from db.engine import write_transaction
from db.models import MessageRole, MessageStatus
from realtime.hub import Batch, SubscriberTooSlow, ViewerGone
from schema.conversation_mutations import owner_scope
from schema.errors import BAD_TOKEN, BadUserInput, NotFound, TooSlow, Unauthenticated
from schema.inputs import AppendMessageInput, FinishMessageInput, StartMessageInput
from schema.message_mutations import add_one
from schema.permissions import require_viewer
from schema.relay import decode_id, to_global_id
from schema.subscriptions import until
from schema.types import AppendMessagePayload, Info, Message, MessageChunk
from schema.validation import (
    content_problem,
    raise_for,
    tokens_problem,
)

# Seconds between the reads of a stream that no append wakes: a deleted message (or
# conversation) wakes nothing, and the next read ends the subscription with NOT_FOUND.
RECHECK_SECONDS = 5.0


def _message_id(global_id: str, field: str) -> int:
    key = decode_id(global_id, "Message", field=field)
    assert isinstance(key, int)
    return key


def _problem(problem: streams.StreamProblem) -> BadUserInput:
    return BadUserInput.one(problem.field, problem.reason)


async def _append(
    info: Info, message_id: int, input: AppendMessageInput
) -> streams.Appended | None:
    """`db.streams.append` in a transaction, announced through the broker where the chunk's
    INSERT does not NOTIFY (SQLite)."""
    services = info.context.services
    broker = services.broker
    async with write_transaction(services.sessionmaker) as session:
        appended = await streams.append(
            session,
            message_id=message_id,
            owner_id=owner_scope(require_viewer(info.context)),
            seq=input.seq,
            delta=input.delta,
            max_chars=info.context.config.max_streamed_chars,
            notify_channel=broker.notify_channel,
        )
        if appended is not None and appended.new and broker.notify_channel is None:
            await broker.publish(
                session, conversation_id=streams.stream_key(message_id), message_ids=[input.seq]
            )
    return appended


@strawberry.type
class StreamMutations:
    @strawberry.mutation(
        description="Start a streamed message: STREAMING, empty; resending a clientId returns "
        "the first one. Owner or admin."
    )
    async def start_message(self, info: Info, input: StartMessageInput) -> Message:
        return await add_one(
            info,
            conversation_id=input.conversation_id,
            role=input.role or MessageRole.ASSISTANT,
            content="",
            client_id=input.client_id,
            model=input.model,
            parent_id=input.parent_id,
            alternative_to=input.alternative_to,
            streaming=True,
        )

    @strawberry.mutation(
        description="Add text to a streaming message; a seq already stored is answered with "
        "the stored state. Owner or admin."
    )
    async def append_message(self, info: Info, input: AppendMessageInput) -> AppendMessagePayload:
        viewer = require_viewer(info.context)
        message_id = _message_id(input.message_id, "messageId")
        raise_for(
            {
                "seq": None if input.seq >= 1 else "must be 1 or more",
                "delta": content_problem(input.delta),
            }
        )
        services = info.context.services
        broker = services.broker
        try:
            appended = None
            if broker.notify_channel is not None and services.driver_reads is not None:
                appended = await streams.append_at_once(
                    services.driver_reads,
                    message_id=message_id,
                    owner_id=owner_scope(viewer),
                    seq=input.seq,
                    delta=input.delta,
                    max_chars=info.context.config.max_streamed_chars,
                    notify_channel=broker.notify_channel,
                )
            if appended is None:
                appended = await _append(info, message_id, input)
        except streams.StreamProblem as problem:
            raise _problem(problem) from None
        if appended is None:
            raise NotFound()
        info.context.loaders.message_by_id.clear(message_id)
        return AppendMessagePayload(
            message_id=strawberry.ID(to_global_id("Message", message_id)),
            seq=appended.seq,
            length=appended.length,
        )

    @strawberry.mutation(
        description="End a streaming message: COMPLETE, FAILED or CANCELLED, with its usage. "
        "Owner or admin."
    )
    async def finish_message(self, info: Info, input: FinishMessageInput) -> Message:
        viewer = require_viewer(info.context)
        message_id = _message_id(input.message_id, "messageId")
        usage = input.usage
        raise_for(
            {
                "status": (
                    "must be COMPLETE, FAILED or CANCELLED"
                    if input.status == MessageStatus.STREAMING
                    else None
                ),
                "usage.inputTokens": tokens_problem(usage.input_tokens) if usage else None,
                "usage.outputTokens": tokens_problem(usage.output_tokens) if usage else None,
            }
        )
        services = info.context.services
        try:
            async with write_transaction(services.sessionmaker) as session:
                conversation = await message_data.lock_message_conversation(
                    session, message_id=message_id, owner_id=owner_scope(viewer)
                )
                row = (
                    await streams.finish(
                        session,
                        message_id=message_id,
                        owner_id=owner_scope(viewer),
                        status=input.status.value,
                        input_tokens=usage.input_tokens if usage else None,
                        output_tokens=usage.output_tokens if usage else None,
                    )
                    if conversation is not None
                    else None
                )
                if conversation is None or row is None:
                    raise NotFound()
                await services.broker.publish(
                    session,
                    conversation_id=streams.stream_key(message_id),
                    message_ids=[row.stream_seq],
                )
                await record(
                    session,
                    [
                        NewChange(
                            conversation.user_id,
                            ChangeKind.MESSAGE_FINISHED,
                            conversation.id,
                            message_id,
                        )
                    ],
                )
        except streams.StreamProblem as problem:
            raise _problem(problem) from None
        info.context.loaders.message_by_id.put(row.id, row)
        return Message.from_row(row)


@strawberry.type
class StreamSubscription:
    @strawberry.subscription(
        description="The message's text after append `afterSeq` (0: all of it), then each "
        "append as it is stored, until it is finished: the last chunk's status is not "
        "STREAMING, and the subscription ends. Owner or admin."
    )
    async def message_stream(
        self, info: Info, message_id: strawberry.ID, after_seq: int | None = 0
    ) -> AsyncGenerator[MessageChunk, None]:
        context = info.context
        viewer = require_viewer(context)
        pk = _message_id(message_id, "messageId")
        if after_seq is not None and after_seq < 0:
            raise BadUserInput.one("afterSeq", "must be 0 or more")
        after = after_seq or 0
        owner = owner_scope(viewer)
        read = partial(streams.read_after, context.services.reads, message_id=pk, owner_id=owner)
        gid = strawberry.ID(to_global_id("Message", pk))
        hub = context.services.broker.hub
        # Subscribe before the first read, so nothing committed after it is missed.
        async with hub.subscribe(streams.stream_key(pk), viewer_id=viewer.id) as subscription:
            woken: Batch | None = None
            while True:
                load = partial(read, after=after)
                # The subscribers of the message woken by one append, in step (the same last
                # seq) and with the same scope, share one read (`realtime.hub.Shared`).
                state = await (woken.shared.once(f"{owner}:{after}", load) if woken else load())
                if state is None:
                    raise NotFound()
                final = state.status != streams.STREAMING
                if state.delta or final:
                    yield MessageChunk(
                        message_id=gid,
                        seq=state.seq,
                        delta=state.delta,
                        status=MessageStatus(state.status),
                    )
                    after = max(after, state.seq)
                if final:
                    return
                expires = until(context.token_expires)
                try:
                    # No wake-up comes when the message or its conversation is deleted: read
                    # again now and then, and the read ends it with NOT_FOUND.
                    wait = RECHECK_SECONDS if expires is None else min(expires, RECHECK_SECONDS)
                    woken = None
                    async with asyncio.timeout(wait):
                        woken = await subscription.next_batch()
                    # The read below covers every wake-up queued meanwhile: it is the last
                    # one's (a read shared under an earlier one may predate the later appends).
                    woken = subscription.drain() or woken
                except TimeoutError as exc:
                    if expires is not None and expires <= RECHECK_SECONDS:
                        raise Unauthenticated(BAD_TOKEN) from exc  # its token has expired
                except SubscriberTooSlow as exc:
                    raise TooSlow(exc.queue_size) from exc
                except ViewerGone as exc:
                    raise Unauthenticated(BAD_TOKEN) from exc
