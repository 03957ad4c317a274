"""The one definition of every field: a batch resolver from a level's parent objects to a column.

A field is defined once, here, as a function `(level, args) -> column`: `level.rows` are the
parent objects of one nesting level (database rows; `ROOT` for the Query type; a `Paged` for a
connection), `args` the field's arguments by their Python names, and the column holds one value
per parent, in order. Both executors run these same functions:

- the planned executor (`schema.plan`) calls each definition once per level with all its rows;
- Strawberry (`schema.types`, `schema.queries`) calls them through `defined(...)` fields
  (`schema.resolvers`), one object at a time; the loaders inside batch the objects of a level.

What a column holds, by the field's GraphQL type:

- a scalar or enum field: Python values (`datetime`, `MessageRole`, ...); each executor
  serialises them by the field's type (DateTime through `schema.scalars`, enums by name);
- a relation: child rows, or None; for a field of an interface type (`Node`), `Of(type, row)`;
  for a list, a list of those;
- a connection: `Paged` (a page, its cursor kind and its count); its edges, cursors and
  `pageInfo` are defined once below (`Connection.*`, `Edge.*`, `PageInfo.*`);
- for any field, `Failed(error)` instead of a value: an error for that one object (FORBIDDEN,
  NOT_FOUND), reported at its path as Strawberry reports a resolver's error. An exception
  raised by a definition is an error for every object of the level.

Permissions live here and nowhere else: `User.email` is null unless the viewer is that user or
an admin; `User.conversations` and `conversationCount` are FORBIDDEN to anyone else; a missing
owner or conversation is NOT_FOUND.

Two hooks keep the planned executor's statement counts: `level.below` tells a definition what
the selection asks below it (`selects`: counts ride along with conversation pages; `shape`: a
message page whose edges the database writes as JSON, derived from the `json` names the
definitions declare), and a definition's `prefetch` starts its loads from its parents' keys
before their rows are read (a conversation's pages load alongside it). Strawberry's `below` is
`NOTHING_BELOW`: the plain loaders, the same answers.

The design follows Grafast (PostGraphile 5): a field is a plan over a whole level, not a
function of one object; the per-object resolver is derived from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from inspect import Parameter, iscoroutinefunction
from itertools import repeat
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import orjson
import strawberry

from db.branches import SiblingsKey, siblings_key
from db.conversations import DEFAULT_FILTER, ConversationFilter, tag_list
from db.folding import fold
from db.formats import encode_cursor
from db.page_json import JsonPage, Shape
from db.pagination import Page, PageRequest
from loaders import EVERYONE, Loaders, Viewer
from schema.config import Config
from schema.context import Context
from schema.errors import BadUserInput, Forbidden, NotFound, PublicError, Unauthenticated
from schema.inputs import ConversationFilter as ConversationFilterInput
from schema.pagination import CursorKind, page_request, row_keyset
from schema.permissions import may_see_private_fields
from schema.relay import decode_conversation_id, decode_user_id, parse_global_id, to_global_id
from schema.validation import raise_for, tag_problem, trimmed

Column = list[Any]
Args = dict[str, Any]
LAST_ONE = PageRequest(last=1)
REQUIRED = Parameter.empty  # an argument without a default


async def gather(*steps: Awaitable[Any]) -> list[Any]:
    """Like `asyncio.gather`, but every step has finished when it raises: nothing of a plan
    that missed may still be running (and holding a session) when Strawberry takes over."""
    if len(steps) == 1:  # nothing else runs: no task needed
        return [await steps[0]]
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def load_all(loader: Any, keys: Sequence[Any]) -> list[Any]:
    """`loader.load_many(keys)`, each key shielded as `BatchLoader.get` shields it (a future
    is shared by every field that asked for its key: graphql-core cancelling one of them must
    not cancel the others'), and without `load_many`'s `gather`: the values come with no
    more turns of the event loop than `get`'s, so the loads a level starts next still batch
    with those of its siblings (Strawberry's resolvers keep the timing, and the statement
    counts, they had before definitions)."""
    futures = [loader.load(key) for key in keys]
    try:
        return [await asyncio.shield(future) for future in futures]
    finally:
        for future in futures:  # one failed: the others' errors are seen, not warned about
            if future.done() and not future.cancelled():
                future.exception()


class Root:
    """The one object of a Query level."""

    def __repr__(self) -> str:
        return "ROOT"


ROOT = Root()


@dataclass(frozen=True)
class Failed:
    """An error for one object: its field is null, and `error` is reported at its path."""

    error: PublicError


class Of(NamedTuple):
    """A row of a field of an interface type, with the name of its concrete type."""

    type_name: str
    row: Any


@dataclass(frozen=True)
class Paged:
    """One connection: its page, the kind of its cursors, and how to count all its items
    (called only when `totalCount` is asked; concurrent calls batch in their loader)."""

    page: Page | JsonPage
    kind: CursorKind
    count: Callable[[], Awaitable[int]]  # starts the count's load when called


# One edge of a page of rows: the kind of its cursor, and the row (a plain tuple: a page of
# them is made in C).
EdgeRow = tuple[CursorKind, Any]


@dataclass(frozen=True)
class Prefetch:
    """Loads a definition started from its parents' keys. `brings_parents`: one of them puts
    the parents' own rows in their loader (so it is awaited before they are read)."""

    loads: list[Awaitable[Any]]
    brings_parents: bool = False


class Below(Protocol):
    """What the selection asks below one field (the planned executor knows; Strawberry
    answers `NOTHING_BELOW`)."""

    def selects(self, *path: str) -> bool:
        """Whether the selection reaches the fields named by `path` (GraphQL names)."""
        ...

    def shape(self) -> Shape | None:
        """The `Shape` of a connection's edges when every field below them has a `json` name
        (else None: the edges are built from rows)."""
        ...

    def prefetch(self, keys: Sequence[Any]) -> Prefetch:
        """Start the `prefetch` loads of the fields selected below, for the child keys."""
        ...


class _Nothing:
    def selects(self, *path: str) -> bool:
        return False

    def shape(self) -> Shape | None:
        return None

    def prefetch(self, keys: Sequence[Any]) -> Prefetch:
        return Prefetch([])


NOTHING_BELOW: Below = _Nothing()


@dataclass(frozen=True)
class Level:
    """The parent objects of one field at one nesting level, and the request."""

    rows: Sequence[Any]
    context: Context
    below: Below = NOTHING_BELOW

    @property
    def loaders(self) -> Loaders:
        return self.context.loaders

    @property
    def viewer(self) -> Viewer | None:
        return self.context.viewer

    @property
    def config(self) -> Config:
        return self.context.config


Resolve = Callable[[Level, Args], Column | Awaitable[Column]]
# (child keys, the request, the field's arguments, what is selected below it) -> loads started
Prefetcher = Callable[[Sequence[Any], Context, Args, Below], Prefetch]


@dataclass(frozen=True)
class Definition:
    """One field. `arguments`: Python name -> (annotation, default), as Strawberry reads
    them. `attribute`: a scalar field that is the rows' attribute of that name (both
    executors read it directly). `json`: what `db.page_json` writes for it (a
    `MessageField`, "cursor", "node", "edges", or "ends" for the page's end cursors)."""

    name: str
    resolve: Resolve
    description: str | None = None
    arguments: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    attribute: str | None = None
    json: str | None = None
    prefetch: Prefetcher | None = None

    @property
    def is_async(self) -> bool:
        return iscoroutinefunction(self.resolve)


DEFINITIONS: dict[str, Definition] = {}


def define(
    name: str,
    *,
    description: str | None = None,
    arguments: Mapping[str, tuple[Any, Any]] | None = None,
    json: str | None = None,
    prefetch: Prefetcher | None = None,
    attribute: str | None = None,
) -> Callable[[Resolve], Resolve]:
    """Register the decorated batch resolver as the definition of `name` ("Type.field")."""

    def register(resolve: Resolve) -> Resolve:
        if name in DEFINITIONS:
            raise ValueError(f"{name} is defined twice")
        DEFINITIONS[name] = Definition(
            name, resolve, description, arguments or {}, attribute, json, prefetch
        )
        return resolve

    return register


def plain(
    name: str, attribute: str, *, description: str | None = None, json: str | None = None
) -> None:
    """Define `name` as the rows' `attribute`."""
    get = attrgetter(attribute)

    def resolve(level: Level, args: Args) -> Column:
        return list(map(get, level.rows))

    define(name, description=description, json=json, attribute=attribute)(resolve)


def global_id(name: str, type_name: Any, *, json: str | None = None) -> None:
    """Define `name` as the Relay id of rows of `type_name`."""

    def resolve(level: Level, args: Args) -> Column:
        return [to_global_id(type_name, row.id) for row in level.rows]

    define(name, json=json)(resolve)


# ---- connections ---------------------------------------------------------------------------

PAGE_ARGUMENTS: dict[str, tuple[Any, Any]] = {
    "first": (int | None, None),
    "after": (str | None, None),
    "last": (int | None, None),
    "before": (str | None, None),
}


def request_of(config: Config, kind: CursorKind, args: Args) -> PageRequest:
    return page_request(
        config,
        kind,
        first=args.get("first"),
        after=args.get("after"),
        last=args.get("last"),
        before=args.get("before"),
    )


@define("Connection.edges", json="edges")
def connection_edges(level: Level, args: Args) -> Column:
    # Edges the database wrote are spliced into the answer as they are.
    return [
        orjson.Fragment(paged.page.edges)
        if isinstance(paged.page, JsonPage)
        else list(zip(repeat(paged.kind), paged.page.rows))
        for paged in level.rows
    ]


@define("Connection.pageInfo")
def connection_page_info(level: Level, args: Args) -> Column:
    return list(level.rows)


@define("Connection.totalCount")
async def connection_total_count(level: Level, args: Args) -> Column:
    return list(await gather(*(paged.count() for paged in level.rows)))


@define("Edge.cursor", json="cursor")
def edge_cursor(level: Level, args: Args) -> Column:
    return [encode_cursor(kind, row_keyset(kind, row)) for kind, row in level.rows]


@define("Edge.node", json="node")
def edge_node(level: Level, args: Args) -> Column:
    return [row for _, row in level.rows]


plain("PageInfo.hasNextPage", "page.has_next")
plain("PageInfo.hasPreviousPage", "page.has_previous")


def _end(paged: Paged, start: bool) -> str | None:
    page = paged.page
    if isinstance(page, JsonPage):
        return page.start_cursor if start else page.end_cursor
    if not page.rows:
        return None
    return encode_cursor(paged.kind, row_keyset(paged.kind, page.rows[0 if start else -1]))


@define("PageInfo.startCursor", json="ends")
def page_start_cursor(level: Level, args: Args) -> Column:
    return [_end(paged, True) for paged in level.rows]


@define("PageInfo.endCursor", json="ends")
def page_end_cursor(level: Level, args: Args) -> Column:
    return [_end(paged, False) for paged in level.rows]


def _counted(loader: Any, key: Any) -> Callable[[], Awaitable[int]]:
    """A count `loader` gives: asked for at once when called (no task in between), so the
    counts of one level load in one batch with their siblings' loads, in both executors."""
    return lambda: asyncio.shield(loader.load(key))  # shared: see `load_all`


def _known(count: int) -> Callable[[], Awaitable[int]]:
    def done() -> Awaitable[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(count)
        return future

    return done


def _paged(
    pages: Sequence[Page | JsonPage],
    kind: CursorKind,
    counts: Sequence[Callable[[], Awaitable[int]]],
) -> Column:
    return [Paged(page, kind, count) for page, count in zip(pages, counts, strict=True)]


# ---- User ----------------------------------------------------------------------------------

global_id("User.id", "User")
plain("User.username", "username")
plain("User.fullName", "full_name")
plain("User.isActive", "is_active")
plain("User.isAdmin", "is_admin")
plain("User.createdAt", "created_at")
plain("User.updatedAt", "updated_at", description=None)


@define("User.email", description="Null unless the viewer is this user or an admin.")
def user_email(level: Level, args: Args) -> Column:
    viewer = level.viewer
    return [row.email if may_see_private_fields(viewer, row.id) else None for row in level.rows]


def _owned(level: Level) -> tuple[list[int], Column]:
    """The ids of the users whose private fields the viewer may see, and a column with the
    error of each of the others (None where the user is the viewer's or they are an admin)."""
    viewer = level.viewer
    errors: Column = []
    ids = []
    for row in level.rows:
        if viewer is None:
            errors.append(Failed(Unauthenticated()))
        elif not may_see_private_fields(viewer, row.id):
            errors.append(Failed(Forbidden()))
        else:
            errors.append(None)
            ids.append(row.id)
    return ids, errors


def _merge(errors: Column, values: Sequence[Any]) -> Column:
    """`errors` with its Nones replaced, in order, by `values`."""
    found = iter(values)
    return [next(found) if error is None else error for error in errors]


FILTER_ARGUMENT: dict[str, tuple[Any, Any]] = {"filter": (ConversationFilterInput | None, None)}


def filter_of(value: Any) -> ConversationFilter:
    """The `filter` argument as the data layer takes it. The planned executor passes the
    input as graphql-core coerced it (a dict by GraphQL names, its defaults filled in),
    Strawberry as a `ConversationFilterInput`; omitted, it is the default list's."""
    if value is None:
        return DEFAULT_FILTER
    found: dict[str, Any] = (
        value
        if isinstance(value, dict)
        else {"archived": value.archived, "pinned": value.pinned, "tag": value.tag}
    )
    tag = found.get("tag")
    tag_key = None
    if tag is not None:  # a tag as `updateConversation` takes it (RULES.md, "Organize")
        tag = trimmed(tag)
        raise_for({"filter.tag": tag_problem(tag)})
        tag_key = fold(tag)
    return ConversationFilter(found.get("archived", False), found.get("pinned"), tag_key)


@define(
    "User.conversations",
    description="Owner or admin only. Most recently updated first; archived ones are left "
    "out unless the filter asks for them.",
    arguments={**PAGE_ARGUMENTS, **FILTER_ARGUMENT},
)
async def user_conversations(level: Level, args: Args) -> Column:
    ids, errors = _owned(level)
    if not ids:
        return errors
    try:
        request = request_of(level.config, "conversation", args)
        wanted = filter_of(args.get("filter"))
    except PublicError as error:
        return _merge(errors, [Failed(error)] * len(ids))
    loaders = level.loaders
    # Message counts asked for below ride along with the page: one statement fewer.
    counted = level.below.selects("edges", "node", "messageCount")
    family = (
        loaders.conversations_with_counts_page_by_user
        if counted
        else loaders.conversations_page_by_user
    )
    pages = await load_all(family((request, wanted)), ids)
    counter = _counter(level.loaders, wanted)
    counts = [_counted(counter, key) for key in ids]
    return _merge(errors, _paged(pages, "conversation", counts))


def _counter(loaders: Loaders, wanted: ConversationFilter) -> Any:
    """The loader of a user's conversation count under `wanted`."""
    if wanted == DEFAULT_FILTER:
        return loaders.conversation_count_by_user
    return loaders.conversation_count_by_user_filtered(wanted)


@define(
    "User.conversationCount",
    description="Owner or admin only; the conversations the filter takes (by default, the "
    "ones not archived).",
    arguments=FILTER_ARGUMENT,
)
async def user_conversation_count(level: Level, args: Args) -> Column:
    ids, errors = _owned(level)
    if not ids:
        return errors
    try:
        wanted = filter_of(args.get("filter"))
    except PublicError as error:
        return _merge(errors, [Failed(error)] * len(ids))
    return _merge(errors, await load_all(_counter(level.loaders, wanted), ids))


@define(
    "User.tags",
    description="Every tag on the user's conversations, sorted case-insensitively (one "
    "spelling per tag); owner or admin only.",
)
async def user_tags(level: Level, args: Args) -> Column:
    ids, errors = _owned(level)
    if not ids:
        return errors
    return _merge(errors, await load_all(level.loaders.tags_by_user, ids))


# ---- Conversation --------------------------------------------------------------------------

global_id("Conversation.id", "Conversation")
plain("Conversation.title", "title")
plain("Conversation.createdAt", "created_at")
plain(
    "Conversation.updatedAt",
    "updated_at",
    description="Bumped when a message is added or the title changes.",
)


plain("Conversation.archived", "archived")
plain("Conversation.pinned", "pinned")


@define(
    "Conversation.tags",
    description="Sorted case-insensitively, case-insensitive unique, as the owner wrote them.",
)
def conversation_tags(level: Level, args: Args) -> Column:
    return [tag_list(row) for row in level.rows]


@define(
    "Conversation.lastReadMessage",
    description="Set by markConversationRead; null before (or once that message is deleted).",
)
async def conversation_last_read_message(level: Level, args: Args) -> Column:
    return await _messages_named(level, [row.last_read_message_id for row in level.rows])


@define(
    "Conversation.unreadCount",
    description="Messages after lastReadMessage that the owner did not write (role not "
    "USER); all of them before the first mark. One statement for a whole level.",
)
async def conversation_unread_count(level: Level, args: Args) -> Column:
    ids = [row.id for row in level.rows]
    return list(await load_all(level.loaders.unread_count_by_conversation, ids))


@define(
    "Conversation.currentLeaf",
    description="The newest message of the active branch; null when there is none.",
)
async def conversation_current_leaf(level: Level, args: Args) -> Column:
    leaves = [row.current_leaf_id for row in level.rows if row.current_leaf_id is not None]
    found = await load_all(level.loaders.message_by_id, leaves) if leaves else []
    by_id = dict(zip(leaves, found, strict=True))
    return [by_id.get(row.current_leaf_id) for row in level.rows]


@define("Conversation.owner")
async def conversation_owner(level: Level, args: Args) -> Column:
    found = await load_all(level.loaders.user_by_id, [row.user_id for row in level.rows])
    return [row if row is not None else Failed(NotFound()) for row in found]


def _message_counts(level: Level) -> list[Callable[[], Awaitable[int]]]:
    """The message count of each conversation: come along with its row, or to load."""
    rows = level.rows
    if "message_count" in rows[0]._fields:
        return [_known(int(row.message_count)) for row in rows]
    loader = level.loaders.message_count_by_conversation
    return [_counted(loader, row.id) for row in rows]


def _message_pages(context: Context, args: Args, below: Below) -> tuple[Any, bool]:
    """The loader of the message pages `args` ask for, and whether its pages are written as
    JSON (when the selection below has a `Shape`)."""
    request = request_of(context.config, "message", args)
    shape = below.shape()
    if shape is None:
        return context.loaders.messages_page_by_conversation(request), False
    return context.loaders.message_json_pages_by_conversation((request, shape)), True


def _prefetch_messages(keys: Sequence[Any], context: Context, args: Args, below: Below) -> Prefetch:
    """The pages, loaded from the conversations' ids; a page the database wrote brings its
    conversation's row, which `conversation_by_id` keeps (both are scoped to the viewer)."""
    try:
        loader, written = _message_pages(context, args, below)
    except PublicError:
        return Prefetch([])  # the field reports it, if its conversation is found
    ids = list(keys)

    async def load() -> None:
        pages = await load_all(loader, ids)
        for key, page in zip(ids, pages, strict=True):
            row = page.conversation if isinstance(page, JsonPage) else None
            if row is not None:
                # The same columns as the loader's own rows: the plan reads them alike.
                context.loaders.conversation_by_id.prime(key, row)  # type: ignore[arg-type]

    return Prefetch([load()], brings_parents=written)


@define(
    "Conversation.messages",
    description="Oldest first: `last: N` is the newest N, and `before:` scrolls back.",
    arguments=PAGE_ARGUMENTS,
    prefetch=_prefetch_messages,
)
async def conversation_messages(level: Level, args: Args) -> Column:
    loader, _ = _message_pages(level.context, args, level.below)
    pages = await load_all(loader, [row.id for row in level.rows])
    counts = _message_counts(level)
    return _paged(pages, "message", counts)


@define("Conversation.messageCount")
async def conversation_message_count(level: Level, args: Args) -> Column:
    rows = level.rows
    if "message_count" in rows[0]._fields:
        return [int(row.message_count) for row in rows]
    ids = [row.id for row in rows]
    return list(await load_all(level.loaders.message_count_by_conversation, ids))


@define("Conversation.lastMessage")
async def conversation_last_message(level: Level, args: Args) -> Column:
    ids = [row.id for row in level.rows]
    pages = await load_all(level.loaders.messages_page_by_conversation(LAST_ONE), ids)
    return [page.rows[-1] if page.rows else None for page in pages]


# ---- Message -------------------------------------------------------------------------------

global_id("Message.id", "Message", json="id")
plain("Message.role", "role", json="role")
plain("Message.content", "content", json="content")
plain(
    "Message.clientId",
    "client_id",
    description="The sender's idempotency key, if one was given.",
    json="client_id",
)
plain("Message.createdAt", "created_at", json="created_at")


plain(
    "Message.revision",
    "revision",
    description="1 until edited, then one more per edit.",
    json="revision",
)
plain("Message.editedAt", "edited_at", description="Null until edited.", json="edited_at")
plain(
    "Message.status",
    "status",
    description="COMPLETE unless written by startMessage (RULES.md, Assistant).",
    json="status",
)
plain("Message.model", "model", description="The model that wrote it, when given.", json="model")


class UsageRow(NamedTuple):
    """A message's token usage, as `TokenUsage`'s definitions read it."""

    input_tokens: int
    output_tokens: int


@define("Message.usage", description="When finishMessage gave it.")
def message_usage(level: Level, args: Args) -> Column:
    return [
        None if row.input_tokens is None else UsageRow(row.input_tokens, row.output_tokens)
        for row in level.rows
    ]


plain("TokenUsage.inputTokens", "input_tokens")
plain("TokenUsage.outputTokens", "output_tokens")


class RevisionRow(NamedTuple):
    """One revision of a message, as `MessageRevision`'s definitions read it."""

    revision: int
    content: str
    created_at: datetime


def revision_list(message: Any, stored: Sequence[Any]) -> list[RevisionRow]:
    """Every revision of `message` (a row of `messages`), oldest first: its `stored` earlier
    ones (rows of `message_revisions`), then its current content, written at `editedAt` (or
    `createdAt` for a message never edited)."""
    earlier = [
        RevisionRow(row.revision, row.content, row.created_at)
        for row in stored
        if row.revision < message.revision
    ]
    current = RevisionRow(
        message.revision, message.content, message.edited_at or message.created_at
    )
    return [*earlier, current]


@define("Message.revisions", description="Oldest first, the current one last.")
async def message_revisions(level: Level, args: Args) -> Column:
    """A message never edited needs no statement; the edited messages of a level are loaded
    together, with one (`Loaders.revisions_by_message`)."""
    rows = level.rows
    edited = [row.id for row in rows if row.revision > 1]
    loaded = await load_all(level.loaders.revisions_by_message, edited) if edited else []
    stored = dict(zip(edited, loaded, strict=True))
    return [revision_list(row, stored.get(row.id, ())) for row in rows]


plain("MessageRevision.revision", "revision", description="1 is the content as first written.")
plain("MessageRevision.content", "content")
plain("MessageRevision.createdAt", "created_at", description="When this revision was written.")


@define(
    "Message.parent",
    description="The message before it on its branch; null for a first message.",
)
async def message_parent(level: Level, args: Args) -> Column:
    return await _messages_named(level, [row.parent_id for row in level.rows])


async def _messages_named(level: Level, ids: list[int | None]) -> Column:
    """The messages a level's rows name by id (None where a row names none, or the message
    is gone), through the request's `message_by_id` loader: one statement for the level."""
    named = [key for key in ids if key is not None]
    found = await load_all(level.loaders.message_by_id, named) if named else []
    by_id = dict(zip(named, found, strict=True))
    return [None if key is None else by_id.get(key) for key in ids]


@define(
    "Message.siblings",
    description="The messages with the same parent, itself included, oldest first; one "
    "statement for a whole level.",
)
async def message_siblings(level: Level, args: Args) -> Column:
    return list(await load_all(level.loaders.siblings_by_parent, _sibling_keys(level)))


@define("Message.siblingIndex", description="Its position among its siblings, from 0.")
async def message_sibling_index(level: Level, args: Args) -> Column:
    groups = await load_all(level.loaders.siblings_by_parent, _sibling_keys(level))
    return [
        next((index for index, sibling in enumerate(group) if sibling.id == row.id), 0)
        for row, group in zip(level.rows, groups, strict=True)
    ]


def _sibling_keys(level: Level) -> list[SiblingsKey]:
    return [siblings_key(row) for row in level.rows]


@define("Message.conversation")
async def message_conversation(level: Level, args: Args) -> Column:
    ids = [row.conversation_id for row in level.rows]
    found = await load_all(level.loaders.conversation_by_id, ids)
    return [row if row is not None else Failed(NotFound()) for row in found]


# ---- Query: a level of one object, ROOT ----------------------------------------------------


def _signed_in(level: Level) -> Failed | None:
    return Failed(Unauthenticated()) if level.viewer is None else None


async def _node(loaders: Loaders, global_id: str, field: str) -> Of | None:
    parsed = parse_global_id(global_id)
    if parsed is None:
        raise BadUserInput.one(field, "not a valid id")
    type_name, key = parsed
    row: Any
    if type_name == "Conversation":
        row = await loaders.conversation_by_id.get(str(key))
    else:
        assert isinstance(key, int)
        by_id = loaders.user_by_id if type_name == "User" else loaders.message_by_id
        row = await by_id.get(key)
    return Of(type_name, row) if row is not None else None


@define(
    "Query.node",
    description="Any object by its global id; null when it is not visible.",
    arguments={"id": (strawberry.ID, REQUIRED)},
)
async def query_node(level: Level, args: Args) -> Column:
    failed = _signed_in(level)
    if failed is not None:
        return [failed]
    return [await _node(level.loaders, args["id"], "id")]


@define("Query.nodes", arguments={"ids": (list[strawberry.ID], REQUIRED)})
async def query_nodes(level: Level, args: Args) -> Column:
    failed = _signed_in(level)
    if failed is not None:
        return [failed]
    ids: list[str] = args["ids"]
    limit = level.config.max_page_size
    if len(ids) > limit:
        raise BadUserInput.one("ids", f"at most {limit} ids at once")
    for index, global_id in enumerate(ids):
        if parse_global_id(global_id) is None:
            raise BadUserInput.one(f"ids.{index}", "not a valid id")
    return [list(await gather(*(_node(level.loaders, i, "ids") for i in ids)))]


@define("Query.me", description="The logged-in user; null when not logged in.")
def query_me(level: Level, args: Args) -> Column:
    return [level.context.viewer_row]


@define(
    "Query.user",
    description="Exactly one of `id` and `username`.",
    arguments={"id": (strawberry.ID | None, None), "username": (str | None, None)},
)
async def query_user(level: Level, args: Args) -> Column:
    failed = _signed_in(level)
    if failed is not None:
        return [failed]
    user_id, username = args.get("id"), args.get("username")
    if (user_id is None) == (username is None):
        reason = "give exactly one of id and username"
        raise BadUserInput({"id": reason, "username": reason}, reason)
    loaders = level.loaders
    if user_id is not None:
        return [await loaders.user_by_id.get(decode_user_id(user_id))]
    assert isinstance(username, str)
    return [await loaders.user_by_username.get(username)]


@define(
    "Query.users",
    description="Users by id; `search` matches username or full name.",
    arguments={**PAGE_ARGUMENTS, "search": (str | None, None)},
)
async def query_users(level: Level, args: Args) -> Column:
    failed = _signed_in(level)
    if failed is not None:
        return [failed]
    request = request_of(level.config, "user", args)
    needle = (args.get("search") or "").strip() or None
    if needle is not None and len(needle) > 100:
        raise BadUserInput.one("search", "at most 100 characters")
    loaders = level.loaders
    page = await loaders.users_page((request, needle)).get(EVERYONE)
    return [Paged(page, "user", _counted(loaders.user_count_by_search, needle or ""))]


@define(
    "Query.conversation",
    description="NOT_FOUND for conversations of others.",
    arguments={"id": (strawberry.ID, REQUIRED)},
)
async def query_conversation(level: Level, args: Args) -> Column:
    """Its message pages load alongside it, not after: one round trip less. A page the
    database writes as JSON even brings the conversation's row along (the loader keeps it):
    one statement for both."""
    failed = _signed_in(level)
    if failed is not None:
        return [failed]
    key = decode_conversation_id(args["id"])
    prefetch = level.below.prefetch([key])
    by_id = level.loaders.conversation_by_id
    if prefetch.brings_parents:
        await gather(*prefetch.loads)
        row = await by_id.get(key)
    else:
        row, *_ = await gather(by_id.get(key), *prefetch.loads)
    return [row if row is not None else Failed(NotFound())]
