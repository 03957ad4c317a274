"""`GET /export` (all the viewer's conversations as NDJSON) and
`GET /export/conversations/<id>.md` (one conversation as Markdown), under /graphql's rules.

What they share with `GET /graphql` (RULES.md, "Organize"; issue 16 item 4):

- CSRF: nothing more to check. The rule of /graphql refuses what a browser could send
  cross-site without a preflight; these routes answer only requests with an `Authorization`
  header, which no browser sends cross-site without a preflight (it is not a CORS-safelisted
  header), and there are no cookies to ride on. So `curl -H 'Authorization: Bearer ...'`
  works as it is, and CORS (the app's middleware, `CHATQL_CORS_ORIGINS`) decides the rest.
- Auth: the viewer is looked up by `schema.context.build_context`, the same as an operation's,
  from the `Authorization` bearer token; without a valid one the answer is 401 with a GraphQL
  error body whose code is UNAUTHENTICATED (and `WWW-Authenticate: Bearer`).
- Budgets (when on, `schema.budgets`): an export costs the objects it writes (conversations
  plus messages; for the Markdown, the conversation plus its messages), counted before it
  starts; one its budget cannot pay is 429 RATE_LIMITED with `Retry-After`, and every answer
  to a viewer has the `RateLimit-Policy` and `RateLimit` headers.
- Logging and metrics: the request log line and the request metrics of `ops.middleware`, with
  the operation named `export` or `exportMarkdown`; the request deadline of /graphql applies
  until the first byte is sent (`transport.deadline.RequestDeadline`, 503 before).

The NDJSON (documented in README.md, "Export and import"): one conversation a line, no header
line, in conversation id order, empty and archived ones included: `{"id", "title", "createdAt",
"updatedAt", "archived", "pinned", "tags", "messages"}`, each message `{"id", "parentId",
"role", "content", "model", "createdAt", "editedAt", "revisions", "status", "usage"}` in
(`createdAt`, id) order, every branch; `parentId` is its parent ("assistant"'s branches: null
for a first message); `revisions` are the earlier contents of an edited message,
`{"revision", "content", "createdAt"}`, oldest first; `status` and `usage`
(`{"inputTokens", "outputTokens"}` or null) are a streamed answer's, as `Message.status` and
`Message.usage` give them: part of what a user takes with them. Ids are global ids, times
`db.formats.stamp`s. Lines are written a batch of messages at a time (`db.export`), so memory
stays bounded by a batch whatever the export's size.

The Markdown: `# <title>`, a line with the conversation's times, then each message of its
active branch as a `### <Role> · <createdAt>` heading (` · edited <editedAt>` when edited)
followed by its content as written, messages separated by `---` rules.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Row
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from db.conversations import tag_list
from db.errors import Unavailable
from db.export import (
    MessageBatch,
    Revision,
    conversation_batches,
    export_size,
    message_batches,
    message_count,
    one_conversation,
)
from db.formats import global_id, stamp
from schema.budgets import Budgets, Charge
from schema.context import Services, build_context
from schema.errors import INTERNAL, LOGIN_REQUIRED, NOT_FOUND, OverBudget, Unauthenticated
from schema.relay import parse_global_id
from transport.responses import Refusal, media_type_of
from transport.view import request_id_of

logger = logging.getLogger("chatql.http")

NDJSON = "application/x-ndjson"
MARKDOWN = "text/markdown; charset=utf-8"
# Where `ops.middleware.RequestLog` finds the name of the operation a route answered.
OPERATION = "operation"
METHOD_NOT_ALLOWED = "The export is read with GET."
NOT_AN_ID = "not a valid id"

AddressOf = Callable[[Request], "str | None"]


class Export:
    """The ASGI app of one export route: `markdown` False is `GET /export`, True is
    `GET /export/conversations/<id>.md` (the path parameter `conversation_id`, a global id,
    percent-encoded). `address_of` gives a request's client address (the app's rule: the
    socket peer, or the first `X-Forwarded-For` hop behind a trusted proxy)."""

    def __init__(self, *, markdown: bool, address_of: AddressOf) -> None:
        self.markdown = markdown
        self.address_of = address_of
        self.operation = "exportMarkdown" if markdown else "export"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        setattr(request.state, OPERATION, self.operation)
        media_type = media_type_of(request.headers)
        services: Services = request.app.state.services
        budget: dict[str, str] = {}
        try:
            if request.method != "GET":
                raise Refusal(405, METHOD_NOT_ALLOWED, headers={"Allow": "GET"})
            context = await build_context(
                services,
                authorization=request.headers.get("authorization"),
                request_id=request_id_of(request),
                client_address=self.address_of(request),
                request=request,
            )
            viewer = context.viewer
            if viewer is None:
                error = context.auth_error or Unauthenticated(LOGIN_REQUIRED)
                raise Refusal(
                    401, error.message, code=error.code, headers={"WWW-Authenticate": "Bearer"}
                )
            sessionmaker = services.read_sessionmaker
            if self.markdown:
                conversation = await self.conversation(request, viewer.id, viewer.is_admin)
                cost = 1 + (
                    await message_count(sessionmaker, conversation_id=conversation.id)
                    if services.budgets is not None
                    else 0
                )
            else:
                conversation = None
                cost = (
                    sum(await export_size(sessionmaker, user_id=viewer.id))
                    if services.budgets is not None
                    else 0
                )
            if services.budgets is not None:
                budget = await charge(services.budgets, f"user:{viewer.id}", cost)
        except Refusal as refusal:
            request.state.refused = refusal.outcome
            answer = refusal.response(media_type)
            answer.headers.update(budget)
            return answer
        except Unavailable:
            raise  # answered 503 by transport.deadline.RequestDeadline
        except Exception:
            request_id = request_id_of(request)
            logger.exception("unexpected error answering an export (request %s)", request_id)
            internal = Refusal(500, INTERNAL, code="INTERNAL_SERVER_ERROR", requestId=request_id)
            request.state.refused = internal.outcome
            return internal.response(media_type)
        if conversation is not None:
            return StreamingResponse(
                markdown(sessionmaker, conversation), media_type=MARKDOWN, headers=budget
            )
        filename = f"chatql-export-{viewer.id}.ndjson"
        return StreamingResponse(
            ndjson(sessionmaker, viewer.id),
            media_type=NDJSON,
            headers={**budget, "Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def conversation(self, request: Request, viewer_id: int, is_admin: bool) -> Row[Any]:
        """The conversation the path names, if the viewer may see it (an admin may see any,
        as through GraphQL's `conversation`); 404 NOT_FOUND otherwise, 400 BAD_USER_INPUT
        for an id that is not a conversation's."""
        parsed = parse_global_id(request.path_params["conversation_id"])
        if parsed is None or parsed[0] != "Conversation":
            raise Refusal(400, "Invalid input.", code="BAD_USER_INPUT", fields={"id": NOT_AN_ID})
        services: Services = request.app.state.services
        found = await one_conversation(
            services.read_sessionmaker,
            conversation_id=str(parsed[1]),
            owner_id=None if is_admin else viewer_id,
        )
        if found is None:
            raise Refusal(404, NOT_FOUND, code="NOT_FOUND")
        return found


async def charge(budgets: Budgets, key: str, cost: int) -> dict[str, str]:
    """Charge `cost` to `key`'s bucket; the RateLimit headers, or a 429 `Refusal`."""
    state: Charge = await budgets.charge(key, cost)
    headers = budgets.headers(state)
    if not state.allowed:
        error = OverBudget(state.retry_after)
        raise Refusal(
            429,
            error.message,
            code=error.code,
            headers={**headers, "Retry-After": str(state.retry_after)},
            retryAfter=state.retry_after,
        )
    return headers


def _conversation_head(row: Row[Any]) -> bytes:
    """The line of a conversation up to its messages' array, opened."""
    head = orjson.dumps(
        {
            "id": global_id("Conversation", row.id),
            "title": row.title,
            "createdAt": stamp(row.created_at),
            "updatedAt": stamp(row.updated_at),
            "archived": row.archived,
            "pinned": row.pinned,
            "tags": tag_list(row),
        }
    )
    return head[:-1] + b',"messages":['


CLOSE = b"]}\n"


def _revision(revision: Revision) -> dict[str, Any]:
    return {
        "revision": revision.revision,
        "content": revision.content,
        "createdAt": stamp(revision.created_at),
    }


def _message(row: Sequence[Any], batch: MessageBatch) -> bytes:
    """A message's JSON. The row is `db.export.MESSAGE_COLUMNS`, unpacked by position (the
    hot loop: 100,000 rows a few seconds)."""
    key, _, role, content, created_at, edited_at, _, model, parent, status, spent, made = row
    earlier = batch.revisions.get(key)
    return orjson.dumps(
        {
            "id": global_id("Message", key),
            "parentId": None if parent is None else global_id("Message", parent),
            "role": role,  # a StrEnum: orjson writes its value
            "content": content,
            "model": model,
            "createdAt": stamp(created_at),
            "editedAt": None if edited_at is None else stamp(edited_at),
            "revisions": [_revision(item) for item in earlier] if earlier else [],
            "status": status,
            "usage": None if spent is None else {"inputTokens": spent, "outputTokens": made},
        }
    )


async def ndjson(sessionmaker: Any, user_id: int) -> AsyncIterator[bytes]:
    """The export's lines, a chunk per batch of messages (see the module)."""
    async for conversations in conversation_batches(sessionmaker, user_id=user_id):
        ids = [row.id for row in conversations]
        following = iter(conversations)  # the conversations not opened yet, in order
        open_id: str | None = None
        async for batch in message_batches(sessionmaker, conversation_ids=ids):
            chunks: list[bytes] = []
            for row in batch.rows:
                if row.conversation_id != open_id:
                    if open_id is not None:
                        chunks.append(CLOSE)
                    # Those before it have no messages: whole lines of their own.
                    for conversation in following:
                        chunks.append(_conversation_head(conversation))
                        if conversation.id == row.conversation_id:
                            break
                        chunks.append(CLOSE)
                    open_id = row.conversation_id
                else:
                    chunks.append(b",")
                chunks.append(_message(row, batch))
            yield b"".join(chunks)
        rest = [CLOSE] if open_id is not None else []
        rest += [_conversation_head(conversation) + CLOSE for conversation in following]
        if rest:
            yield b"".join(rest)


ROLES = {"USER": "User", "ASSISTANT": "Assistant", "SYSTEM": "System"}


def _heading_text(text: str) -> str:
    return " ".join(text.split())


async def markdown(sessionmaker: Any, conversation: Row[Any]) -> AsyncIterator[bytes]:
    """One conversation as Markdown (see the module), a chunk per batch of messages."""
    title = _heading_text(conversation.title) or "Untitled"
    created, updated = stamp(conversation.created_at), stamp(conversation.updated_at)
    yield f"# {title}\n\nCreated {created} · updated {updated}\n".encode()
    batches = message_batches(sessionmaker, conversation_ids=[conversation.id], active_branch=True)
    async for batch in batches:
        chunks = []
        for row in batch.rows:
            heading = f"### {ROLES.get(str(row.role), str(row.role))} · {stamp(row.created_at)}"
            if row.edited_at is not None:
                heading += f" · edited {stamp(row.edited_at)}"
            chunks.append(f"\n---\n\n{heading}\n\n{row.content.rstrip()}\n")
        yield "".join(chunks).encode()
