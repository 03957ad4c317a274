"""The object types the "sync" extension adds to messages (`sync.graphql`): a message's
revisions. `schema.types.Message` wires `revisions` to `message_revisions`.

A message row holds its current content, `revision` and `edited_at`; each earlier content is a
`message_revisions` row (`db.messages.edit_message`). The list a client sees is those rows,
oldest first, then the current content as the last revision, written at `editedAt` (or at
`createdAt` for a message never edited).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import strawberry

from schema.context import Context

Info = strawberry.Info[Context, None]


@strawberry.type
class MessageRevision:
    revision: int = strawberry.field(description="1 is the content as first written.")
    content: str
    created_at: datetime = strawberry.field(description="When this revision was written.")


class Revised(Protocol):
    """What a revision list needs of a message (a `Message`, or a row of `messages`)."""

    @property
    def content(self) -> str: ...
    @property
    def revision(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def edited_at(self) -> datetime | None: ...


def revision_list(message: Revised, stored: Sequence[Any]) -> list[MessageRevision]:
    """Every revision of `message`, oldest first: its `stored` earlier ones (rows of
    `message_revisions`), then its current content, written at `editedAt` (or `createdAt`)."""
    earlier = [
        MessageRevision(revision=row.revision, content=row.content, created_at=row.created_at)
        for row in stored
        if row.revision < message.revision
    ]
    current = MessageRevision(
        revision=message.revision,
        content=message.content,
        created_at=message.edited_at or message.created_at,
    )
    return [*earlier, current]


async def message_revisions(root: Any, info: Info) -> list[MessageRevision]:
    """Every revision of `root` (a `Message`), oldest first, the current one last. A message
    never edited needs no statement; the edited messages of a page are loaded together, with
    one statement (`Loaders.revisions_by_message`)."""
    if root.revision == 1:
        return revision_list(root, ())
    return revision_list(root, await info.context.loaders.revisions_by_message.get(root.pk))
