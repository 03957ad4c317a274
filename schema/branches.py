"""Branches (issue 15, RULES.md "Assistant"): where `sendMessage`/`startMessage` put a new
message, and `selectBranch`. The storage design is `db.branches`'s.

Without `parentId` or `alternativeTo` a new message follows `currentLeaf` and no flag moves
(the statements of a send are those it had before branches). With `parentId: P` it follows P;
with `alternativeTo: S` it takes S's parent (a first message: none). Either way it becomes
`currentLeaf`, and its branch the active one (`db.branches.switch`). Both given is
BAD_USER_INPUT on both fields; a message of another conversation (or a deleted one) is
NOT_FOUND. Every write here holds the conversation's row lock, taken first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strawberry
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from db import branches
from db import conversations as conversation_data
from db import messages as message_data
from db.changes import ChangeKind, NewChange, record
from db.engine import write_transaction
from db.models import utcnow
from schema.conversation_mutations import owner_scope, remember
from schema.errors import BadUserInput, NotFound
from schema.permissions import require_viewer
from schema.relay import decode_id
from schema.types import Conversation, Info


@dataclass(frozen=True)
class Placement:
    """Where a new message goes: its parent, and (for a new branch) the messages that join the
    active branch above it and where they meet it (`db.branches.switch`)."""

    parent_id: int | None
    new_branch: bool = False
    joining: list[int] = field(default_factory=list)
    meets: int | None = None


def _message_key(global_id: str, name: str) -> int:
    key = decode_id(global_id, "Message", field=name)
    assert isinstance(key, int)
    return key


def check_branch_input(parent_id: str | None, alternative_to: str | None) -> None:
    """BAD_USER_INPUT before any write: both given, or an id that is not a message's."""
    if parent_id is not None and alternative_to is not None:
        reason = "give at most one of parentId and alternativeTo"
        raise BadUserInput({"parentId": reason, "alternativeTo": reason}, reason)
    if parent_id is not None:
        _message_key(parent_id, "parentId")
    if alternative_to is not None:
        _message_key(alternative_to, "alternativeTo")


async def place(
    session: AsyncSession,
    *,
    conversation: Row[Any],
    parent_id: str | None,
    alternative_to: str | None,
) -> Placement:
    """The `Placement` of a new message in `conversation` (locked by the caller). No statement
    without `parentId`/`alternativeTo`; one (the walk up to the active branch) with either."""
    if parent_id is None and alternative_to is None:
        return Placement(conversation.current_leaf_id)
    given = parent_id if parent_id is not None else alternative_to
    assert given is not None
    key = _message_key(given, "parentId" if parent_id is not None else "alternativeTo")
    found = await branches.chain(session, message_id=key)
    if found is None or found.head.conversation_id != conversation.id:
        raise NotFound()
    if parent_id is not None:
        return Placement(key, True, found.joining(), found.meets())
    return Placement(
        found.head.parent_id, True, found.joining(skip_head=True), found.meets(skip_head=True)
    )


async def settle(session: AsyncSession, *, conversation: Row[Any], placement: Placement) -> None:
    """After a new message was stored where `placement` says: move the active branch to it (no
    statement when it continues after the leaf)."""
    if placement.new_branch:
        await branches.switch(
            session,
            old_leaf=conversation.current_leaf_id,
            meets=placement.meets,
            joining=placement.joining,
        )


@strawberry.type
class BranchMutations:
    @strawberry.mutation(
        description="Make the branch through this message active: currentLeaf becomes the "
        "message reached from it by following, at each step, its most recently created "
        "child. NOT_FOUND for a deleted message or one of another user. Owner or admin."
    )
    async def select_branch(self, info: Info, message_id: strawberry.ID) -> Conversation:
        viewer = require_viewer(info.context)
        key = _message_key(message_id, "messageId")
        async with write_transaction(info.context.sessionmaker) as session:
            conversation = await message_data.lock_message_conversation(
                session, message_id=key, owner_id=owner_scope(viewer)
            )
            if conversation is None:
                raise NotFound()
            leaf = await branches.descend(session, conversation_id=conversation.id, message_id=key)
            if leaf != conversation.current_leaf_id:
                found = await branches.chain(session, message_id=leaf)
                assert found is not None
                await branches.switch(
                    session,
                    old_leaf=conversation.current_leaf_id,
                    meets=found.meets(),
                    joining=found.joining(),
                )
                conversation = await conversation_data.update_conversation(
                    session, conversation_id=conversation.id, values={"current_leaf_id": leaf}
                )
                await record(
                    session,
                    [
                        NewChange(
                            conversation.user_id,
                            ChangeKind.BRANCH_SELECTED,
                            conversation.id,
                            leaf,
                        )
                    ],
                    at=utcnow(),
                )
        return remember(info, conversation)
