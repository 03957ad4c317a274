"""Planned execution: a validated query run level by level instead of field by field.

graphql-core completes a result one field of one object at a time: a Q1 page is some 65,000
resolver calls, each with its own info object, awaitable checks and serialisation. Here the
query is walked once per nesting *level*: the fields of a level are collected once (with
graphql-core's own `collect_fields`, so aliases, fragments, variables and `@include`/`@skip`
mean exactly what they mean to it), every field becomes one column of values for all the
objects of the level (one loader call for the whole level), and the rows go straight into
the response dicts.

A message connection whose selection is plain message fields goes further: its edges come
from the database as finished JSON (`db.page_json`), spliced into the answer unparsed.
What the plan collects of a document is kept with it across requests (`Memo`).

The plan covers the query shapes that matter (users, conversation, me, and below them users,
conversations, messages, connections and pageInfo). It never reports an error itself: any
case where Strawberry would report one, and any field it does not know, raises `Miss`, and
the operation is run again, from the start, by Strawberry's own executor. A query has no side
effects, so running it twice is safe, and errors are Strawberry's by construction. Field
middleware (extensions that wrap resolvers) turns the plan off, since it would skip them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from inspect import isawaitable
from operator import attrgetter
from typing import Any, cast

import orjson
from graphql import (
    DirectiveNode,
    ExecutionResult,
    GraphQLField,
    GraphQLObjectType,
    Node,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    get_named_type,
    visit,
)
from graphql.execution.collect_fields import (
    FieldDetailsList,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import get_argument_values
from sqlalchemy import Row
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from db.formats import encode_cursor
from db.models import MessageRole
from db.page_json import JsonPage, Shape
from db.pagination import Page, PageRequest
from loaders import EVERYONE
from schema.caches import PerDocument
from schema.context import Context
from schema.pagination import CursorKind, page_request, row_keyset
from schema.permissions import may_see_private_fields
from schema.relay import decode_conversation_id, to_global_id
from schema.scalars import serialize_datetime
from schema.sync_types import revision_list

logger = logging.getLogger("chatql.plan")
PLAN_MISSED = "the plan does not cover this operation; Strawberry runs it"
LAST_ONE = PageRequest(last=1)
ROLE_NAMES: dict[Any, str] = {role: role.name for role in MessageRole}
Rows = Sequence[Row[Any]]
Column = list[Any]
Count = Callable[[], Awaitable[list[int]]]
# The message fields whose JSON a `Shape` can ask of the database, by GraphQL name.
JSON_MESSAGE_FIELDS = {
    "__typename": "typename",
    "id": "id",
    "role": "role",
    "content": "content",
    "clientId": "client_id",
    "createdAt": "created_at",
    "revision": "revision",
    "editedAt": "edited_at",
}


class Miss(Exception):
    """The plan does not cover this operation: Strawberry runs it instead."""


async def gather(*steps: Awaitable[Any]) -> list[Any]:
    """Like `asyncio.gather`, but every step has finished when it raises: nothing of a plan
    that missed may still be running (and holding a session) when Strawberry takes over."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class PlanExecutor(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, with queries tried on the plan first."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        middleware = self.middleware_manager
        if (
            self.operation.operation is not OperationType.QUERY
            or not isinstance(self.context_value, Context)
            or (middleware is not None and middleware.middlewares)
        ):
            return super().execute_operation(serially)
        return self._planned(serially)

    async def _planned(self, serially: bool | None) -> Any:
        try:
            data = await Walk(self).root()
        except Exception:
            # A Miss, or anything else: Strawberry runs the operation and reports it.
            logger.debug(PLAN_MISSED, exc_info=True)
            # From a clean slate, so that Strawberry's run is the one it would have made:
            # which errors it reports can depend on what is already cached.
            self.context_value.reset_loaders()
            result = super().execute_operation(serially)
            return await result if isawaitable(result) else result
        return ExecutionResult(data=data)


@dataclass
class Memo:
    """The selections the plan collected below each field, and the shapes of message pages.

    They follow from the document alone unless a directive reads a variable (`@include(if:
    $x)`): then they are found afresh for each request; else they are kept with the operation
    (as long as its document lives, see `PerDocument`) and found once.
    """

    fields: dict[tuple[str, tuple[int, ...]], GroupedFieldSet] = field(default_factory=dict)
    shapes: dict[tuple[int, ...], Shape | None] = field(default_factory=dict)
    varies: bool | None = None


MEMOS: PerDocument[OperationDefinitionNode, Memo] = PerDocument(lambda _: Memo())


class _ReadsVariables(Visitor):
    found = False

    def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
        if any(isinstance(argument.value, VariableNode) for argument in node.arguments or ()):
            self.found = True


def memo_for(executor: PlanExecutor) -> Memo:
    memo = MEMOS(executor.operation)
    if memo.varies is None:
        seen = _ReadsVariables()
        fragments = (details.definition for details in executor.fragments.values())
        nodes: list[Node] = [executor.operation, *fragments]
        for node in nodes:
            visit(node, seen)
        memo.varies = seen.found
    return Memo() if memo.varies else memo


class Walk:
    """One run of the plan over one request."""

    def __init__(self, executor: PlanExecutor) -> None:
        self.executor = executor
        self.schema = executor.schema
        context: Context = executor.context_value
        self.context = context
        self.loaders = context.loaders
        self.viewer = context.viewer
        self.memo = memo_for(executor)

    # ---- selections ----------------------------------------------------------------------

    def fields(self, parent: GraphQLObjectType, details: FieldDetailsList) -> GroupedFieldSet:
        """The fields selected below `details` on `parent` (see `Memo`)."""
        key = (parent.name, tuple(id(detail.node) for detail in details))
        found = self.memo.fields.get(key)
        if found is None:
            x = self.executor
            collected = collect_subfields(
                self.schema, x.fragments, x.variable_values, x.operation, parent, details
            )
            grouped = self._checked(collected.grouped_field_set, collected.new_defer_usages)
            found = self.memo.fields[key] = grouped
        return found

    def _checked(self, grouped: GroupedFieldSet, defers: Sequence[Any]) -> GroupedFieldSet:
        if defers:
            raise Miss
        for details in grouped.values():
            for detail in details:
                if detail.fragment_variable_values is not None:
                    raise Miss
        return grouped

    def arguments(self, field: GraphQLField, details: FieldDetailsList) -> dict[str, Any]:
        return get_argument_values(field, details[0].node, self.executor.variable_values)

    @staticmethod
    def child_type(parent: GraphQLObjectType, name: str) -> GraphQLObjectType:
        child = get_named_type(parent.fields[name].type)
        if not isinstance(child, GraphQLObjectType):
            raise Miss
        return child

    def selects(self, parent: GraphQLObjectType, details: FieldDetailsList, *path: str) -> bool:
        """Whether the selection below `details` reaches the fields named by `path`."""
        first, *rest = path
        for sub in self.fields(parent, details).values():
            name = sub[0].node.name.value
            if name == first and (
                not rest or self.selects(self.child_type(parent, name), sub, *rest)
            ):
                return True
        return False

    # ---- the root ------------------------------------------------------------------------

    async def root(self) -> dict[str, Any]:
        x = self.executor
        query = self.schema.query_type
        assert query is not None
        collected = collect_fields(
            self.schema, x.fragments, x.variable_values, query, x.operation, x.hide_suggestions
        )
        grouped = self._checked(collected.grouped_field_set, collected.new_defer_usages)

        async def one(details: FieldDetailsList) -> Any:
            name = details[0].node.name.value
            if name == "__typename":
                return query.name
            if name == "me":
                row = self.context.viewer_row
                if row is None:
                    return None
                return (await self.objects(self.child_type(query, name), details, [row]))[0]
            if self.viewer is None:
                raise Miss
            if name == "users":
                return await self.users(query, details)
            if name == "conversation":
                return await self.conversation(query, details)
            raise Miss

        values = await gather(*(one(details) for details in grouped.values()))
        return dict(zip(grouped, values, strict=True))

    async def conversation(self, query: GraphQLObjectType, details: FieldDetailsList) -> Any:
        """The root `conversation`. Its message pages load alongside it, not after: one round
        trip less. A page the database writes as JSON even brings the conversation's row
        along: one statement for both. Should it not be visible, the pages are never shown
        (Strawberry answers NOT_FOUND, with fresh loaders)."""
        key = decode_conversation_id(self.arguments(query.fields["conversation"], details)["id"])
        conversation = self.child_type(query, "conversation")
        pages, written = self.message_loaders(conversation, details)
        by_id = self.loaders.conversation_by_id
        row: Any
        if written:
            loaded = await gather(*(page.get(key) for page in pages))
            row = next((p.conversation for p in loaded if isinstance(p, JsonPage)), None)
            row = row or await by_id.get(key)
        else:
            row, *_ = await gather(by_id.get(key), *(page.get(key) for page in pages))
        if row is None:
            raise Miss
        return (await self.objects(conversation, details, [row]))[0]

    def message_loaders(
        self, conversation: GraphQLObjectType, details: FieldDetailsList
    ) -> tuple[list[Any], bool]:
        """The loaders of the message pages the selection asks of a conversation, and whether
        the database writes any of them as JSON."""
        loaders, written = [], False
        for sub in self.fields(conversation, details).values():
            if sub[0].node.name.value == "messages":
                request = self.page_request(
                    "message", self.arguments(conversation.fields["messages"], sub)
                )
                shape = self.message_shape(self.child_type(conversation, "messages"), sub)
                loaders.append(self.message_pages(request, shape))
                written = written or shape is not None
        return loaders, written

    def message_pages(self, request: PageRequest, shape: Shape | None) -> Any:
        """The loader of message pages: with JSON edges when the selection has a shape."""
        if shape is None:
            return self.loaders.messages_page_by_conversation(request)
        return self.loaders.message_json_pages_by_conversation((request, shape))

    def message_shape(
        self, connection: GraphQLObjectType, details: FieldDetailsList
    ) -> Shape | None:
        """The `Shape` of a message connection's edges, when everything below them is a plain
        message field (else None: the rows are assembled here)."""
        key = tuple(id(detail.node) for detail in details)
        shapes = self.memo.shapes
        if key not in shapes:
            shapes[key] = self._message_shape(connection, details)
        return shapes[key]

    def _message_shape(
        self, connection: GraphQLObjectType, details: FieldDetailsList
    ) -> Shape | None:
        edge: list[tuple[str, str]] | None = None
        node: list[tuple[str, str]] = []
        ends = False
        edge_type = self.child_type(connection, "edges")
        node_type = self.child_type(edge_type, "node")
        for sub in self.fields(connection, details).values():
            name = sub[0].node.name.value
            if name == "pageInfo":
                info = self.fields(self.child_type(connection, name), sub).values()
                ends = ends or any(
                    s[0].node.name.value in ("startCursor", "endCursor") for s in info
                )
            elif name == "edges":
                if edge is not None:
                    return None
                edge = []
                for key, parts in self.fields(edge_type, sub).items():
                    what = parts[0].node.name.value
                    if what == "node":
                        if node:
                            return None
                        for field, leaf in self.fields(node_type, parts).items():
                            plain = JSON_MESSAGE_FIELDS.get(leaf[0].node.name.value)
                            if plain is None:
                                return None
                            node.append((field, plain))
                    elif what == "__typename":
                        what = "typename"
                    edge.append((key, what))
        if not edge:
            return None
        return Shape(
            edge=tuple(edge),
            node=tuple(node),
            edge_type=edge_type.name,
            node_type=node_type.name,
            ends=ends,
        )

    async def users(self, query: GraphQLObjectType, details: FieldDetailsList) -> Any:
        args = self.arguments(query.fields["users"], details)
        request = self.page_request("user", args)
        needle = (args.get("search") or "").strip() or None
        if needle is not None and len(needle) > 100:
            raise Miss
        page = await self.loaders.users_page((request, needle)).get(EVERYONE)

        async def count() -> list[int]:
            return [await self.loaders.user_count_by_search.get(needle or "")]

        connection = self.child_type(query, "users")
        return (await self.connection(connection, details, [page], "user", count))[0]

    def page_request(self, kind: CursorKind, args: dict[str, Any]) -> PageRequest:
        return page_request(
            self.context.config,
            kind,
            first=args.get("first"),
            after=args.get("after"),
            last=args.get("last"),
            before=args.get("before"),
        )

    # ---- levels --------------------------------------------------------------------------

    @staticmethod
    def assemble(keys: list[str], columns: list[Column], size: int) -> list[dict[str, Any]]:
        """`size` result objects from one column per key."""
        if not keys:  # every field skipped
            return [{} for _ in range(size)]
        return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]

    async def objects(
        self, parent: GraphQLObjectType, details: FieldDetailsList, rows: Rows
    ) -> list[dict[str, Any]]:
        """The result objects of `rows`, all of type `parent`, one column per field."""
        if not rows:
            return []
        grouped = self.fields(parent, details)
        fill = OBJECT_FIELDS.get(parent.name)
        if fill is None:
            raise Miss

        async def column(sub: FieldDetailsList) -> Column:
            name = sub[0].node.name.value
            if name == "__typename":
                return [parent.name] * len(rows)
            handler = fill.get(name)
            if handler is None:
                raise Miss
            value = handler(self, parent, sub, rows)
            return await value if isawaitable(value) else value

        columns = await gather(*(column(sub) for sub in grouped.values()))
        return self.assemble(list(grouped), columns, len(rows))

    async def connection(
        self,
        parent: GraphQLObjectType,
        details: FieldDetailsList,
        pages: Sequence[Page],
        kind: CursorKind,
        count: Count,
    ) -> list[dict[str, Any]]:
        async def edges(edge: GraphQLObjectType, sub: FieldDetailsList) -> Column:
            return await self.edges(edge, sub, pages, kind)

        end = partial(row_page_end, kind)
        return await self.connection_of(parent, details, pages, count, edges, end)

    async def json_connection(
        self,
        parent: GraphQLObjectType,
        details: FieldDetailsList,
        pages: Sequence[JsonPage],
        count: Count,
    ) -> list[dict[str, Any]]:
        """A connection whose edges the database wrote (see `db.page_json`)."""

        async def edges(edge: GraphQLObjectType, sub: FieldDetailsList) -> Column:
            return [orjson.Fragment(page.edges) for page in pages]

        return await self.connection_of(parent, details, pages, count, edges, json_page_end)

    async def connection_of(
        self,
        parent: GraphQLObjectType,
        details: FieldDetailsList,
        pages: Sequence[Any],
        count: Count,
        edges: Callable[[GraphQLObjectType, FieldDetailsList], Awaitable[Column]],
        end: Callable[[Any, bool], str | None],
    ) -> list[dict[str, Any]]:
        """The connection objects of `pages`: `edges` makes their edges column, `end` gives
        a page's first or last cursor."""
        grouped = self.fields(parent, details)
        size = len(pages)

        async def column(sub: FieldDetailsList) -> Column:
            name = sub[0].node.name.value
            if name == "__typename":
                return [parent.name] * size
            if name == "totalCount":
                return await count()
            if name == "pageInfo":
                return self.page_infos(self.child_type(parent, name), sub, pages, end)
            if name == "edges":
                return await edges(self.child_type(parent, name), sub)
            raise Miss

        columns = await gather(*(column(sub) for sub in grouped.values()))
        return self.assemble(list(grouped), columns, size)

    async def edges(
        self,
        parent: GraphQLObjectType,
        details: FieldDetailsList,
        pages: Sequence[Page],
        kind: CursorKind,
    ) -> Column:
        rows = [row for page in pages for row in page.rows]
        grouped = self.fields(parent, details)

        async def column(sub: FieldDetailsList) -> Column:
            name = sub[0].node.name.value
            if name == "__typename":
                return [parent.name] * len(rows)
            if name == "cursor":
                return [encode_cursor(kind, row_keyset(kind, row)) for row in rows]
            if name == "node":
                return await self.objects(self.child_type(parent, name), sub, rows)
            raise Miss

        columns = await gather(*(column(sub) for sub in grouped.values()))
        flat = self.assemble(list(grouped), columns, len(rows))
        result, start = [], 0
        for page in pages:
            result.append(flat[start : start + len(page.rows)])
            start += len(page.rows)
        return result

    def page_infos(
        self,
        parent: GraphQLObjectType,
        details: FieldDetailsList,
        pages: Sequence[Any],
        end: Callable[[Any, bool], str | None],
    ) -> Column:
        """The `pageInfo` of each page; `end(page, start)` is the cursor of its first (start)
        or last edge."""
        grouped = self.fields(parent, details)
        values: dict[str, Callable[[Any], Any]] = {
            "__typename": lambda page: parent.name,
            "hasNextPage": lambda page: page.has_next,
            "hasPreviousPage": lambda page: page.has_previous,
            "startCursor": lambda page: end(page, True),
            "endCursor": lambda page: end(page, False),
        }
        getters = []
        for sub in grouped.values():
            getter = values.get(sub[0].node.name.value)
            if getter is None:
                raise Miss
            getters.append(getter)
        keys = list(grouped)
        return [dict(zip(keys, (get(page) for get in getters), strict=True)) for page in pages]


def row_page_end(kind: CursorKind, page: Page, start: bool) -> str | None:
    if not page.rows:
        return None
    return encode_cursor(kind, row_keyset(kind, page.rows[0 if start else -1]))


def json_page_end(page: JsonPage, start: bool) -> str | None:
    return page.start_cursor if start else page.end_cursor


# ---- the fields of each object type ----------------------------------------------------------

Handler = Callable[[Walk, GraphQLObjectType, FieldDetailsList, Rows], Column | Awaitable[Column]]


def plain(attribute: str) -> Handler:
    get = attrgetter(attribute)

    def column(walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows) -> Column:
        return list(map(get, rows))

    return column


def stamp(attribute: str) -> Handler:
    get = attrgetter(attribute)

    def column(walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows) -> Column:
        return list(map(serialize_datetime, map(get, rows)))

    return column


def nullable_stamp(attribute: str) -> Handler:
    get = attrgetter(attribute)

    def column(walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows) -> Column:
        return [None if value is None else serialize_datetime(value) for value in map(get, rows)]

    return column


def global_id(type_name: Any) -> Handler:
    def column(walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows) -> Column:
        return [to_global_id(type_name, row.id) for row in rows]

    return column


def user_email(walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows) -> Column:
    viewer = walk.viewer
    return [row.email if may_see_private_fields(viewer, row.id) else None for row in rows]


def _owned(walk: Walk, rows: Rows) -> list[int]:
    """The users' ids, when the viewer may see their private fields (else Strawberry reports)."""
    if walk.viewer is None or not all(may_see_private_fields(walk.viewer, r.id) for r in rows):
        raise Miss
    return [row.id for row in rows]


async def user_conversations(
    walk: Walk, parent: GraphQLObjectType, details: FieldDetailsList, rows: Rows
) -> Column:
    ids = _owned(walk, rows)
    request = walk.page_request(
        "conversation", walk.arguments(parent.fields["conversations"], details)
    )
    connection = walk.child_type(parent, "conversations")
    loaders = walk.loaders
    # Message counts asked for below ride along with the page: one statement fewer.
    counted = walk.selects(connection, details, "edges", "node", "messageCount")
    family = (
        loaders.conversations_with_counts_page_by_user
        if counted
        else loaders.conversations_page_by_user
    )
    pages = await family(request).load_many(ids)

    async def count() -> list[int]:
        return list(await loaders.conversation_count_by_user.load_many(ids))

    return await walk.connection(connection, details, pages, "conversation", count)


async def user_conversation_count(
    walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows
) -> Column:
    return list(await walk.loaders.conversation_count_by_user.load_many(_owned(walk, rows)))


async def conversation_message_count(
    walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows
) -> Column:
    if rows and "message_count" in rows[0]._fields:
        return [int(row.message_count) for row in rows]
    ids = [row.id for row in rows]
    return list(await walk.loaders.message_count_by_conversation.load_many(ids))


async def conversation_messages(
    walk: Walk, parent: GraphQLObjectType, details: FieldDetailsList, rows: Rows
) -> Column:
    ids = [row.id for row in rows]
    request = walk.page_request("message", walk.arguments(parent.fields["messages"], details))
    loaders = walk.loaders
    connection = walk.child_type(parent, "messages")
    shape = walk.message_shape(connection, details)
    pages = await walk.message_pages(request, shape).load_many(ids)

    async def count() -> list[int]:
        if "message_count" in rows[0]._fields:
            return [int(row.message_count) for row in rows]
        return list(await loaders.message_count_by_conversation.load_many(ids))

    if shape is not None:
        return await walk.json_connection(connection, details, pages, count)
    return await walk.connection(connection, details, pages, "message", count)


async def conversation_last_message(
    walk: Walk, parent: GraphQLObjectType, details: FieldDetailsList, rows: Rows
) -> Column:
    ids = [row.id for row in rows]
    pages = await walk.loaders.messages_page_by_conversation(LAST_ONE).load_many(ids)
    last = [page.rows[-1] if page.rows else None for page in pages]
    found = [row for row in last if row is not None]
    objects = iter(await walk.objects(walk.child_type(parent, "lastMessage"), details, found))
    return [next(objects) if row is not None else None for row in last]


async def conversation_owner(
    walk: Walk, parent: GraphQLObjectType, details: FieldDetailsList, rows: Rows
) -> Column:
    found = await walk.loaders.user_by_id.load_many([row.user_id for row in rows])
    owners = [row for row in found if row is not None]
    if len(owners) != len(found):
        raise Miss
    return await walk.objects(walk.child_type(parent, "owner"), details, owners)


def message_role(walk: Walk, parent: GraphQLObjectType, d: FieldDetailsList, rows: Rows) -> Column:
    return [ROLE_NAMES[row.role] for row in rows]


async def message_conversation(
    walk: Walk, parent: GraphQLObjectType, details: FieldDetailsList, rows: Rows
) -> Column:
    ids = [row.conversation_id for row in rows]
    found = await walk.loaders.conversation_by_id.load_many(ids)
    conversations = [row for row in found if row is not None]
    if len(conversations) != len(found):
        raise Miss
    return await walk.objects(walk.child_type(parent, "conversation"), details, conversations)


async def message_revisions(
    walk: Walk, parent: GraphQLObjectType, details: FieldDetailsList, rows: Rows
) -> Column:
    """Each message's revisions (`schema.sync_types.revision_list`); the stored ones of the
    edited messages of the level with one loader call, none for a level never edited."""
    edited = [row.id for row in rows if row.revision > 1]
    loaded = await walk.loaders.revisions_by_message.load_many(edited) if edited else []
    stored = dict(zip(edited, loaded, strict=True))
    lists = [revision_list(row, stored.get(row.id, ())) for row in rows]
    flat = [revision for revisions in lists for revision in revisions]
    # Not rows, but objects with the attributes the MessageRevision handlers read.
    revision_type = walk.child_type(parent, "revisions")
    objects = iter(await walk.objects(revision_type, details, cast(Rows, flat)))
    return [[next(objects) for _ in revisions] for revisions in lists]


OBJECT_FIELDS: dict[str, dict[str, Handler]] = {
    "User": {
        "id": global_id("User"),
        "username": plain("username"),
        "fullName": plain("full_name"),
        "email": user_email,
        "isActive": plain("is_active"),
        "isAdmin": plain("is_admin"),
        "createdAt": stamp("created_at"),
        "updatedAt": stamp("updated_at"),
        "conversations": user_conversations,
        "conversationCount": user_conversation_count,
    },
    "Conversation": {
        "id": global_id("Conversation"),
        "title": plain("title"),
        "createdAt": stamp("created_at"),
        "updatedAt": stamp("updated_at"),
        "messageCount": conversation_message_count,
        "messages": conversation_messages,
        "lastMessage": conversation_last_message,
        "owner": conversation_owner,
    },
    "Message": {
        "id": global_id("Message"),
        "role": message_role,
        "content": plain("content"),
        "clientId": plain("client_id"),
        "createdAt": stamp("created_at"),
        "revision": plain("revision"),
        "editedAt": nullable_stamp("edited_at"),
        "status": plain("status"),
        "model": plain("model"),
        "revisions": message_revisions,
        "conversation": message_conversation,
    },
    "MessageRevision": {
        "revision": plain("revision"),
        "content": plain("content"),
        "createdAt": stamp("created_at"),
    },
}
