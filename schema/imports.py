"""What `python server.py import` and `import-chatgpt` read, checked by the API's input rules
(`schema.validation`) before anything is stored; `db.imports` stores it.

- `chatql_lines`: chatql's own export (`GET /export`, see `transport.export`), one
  conversation a line, every field it writes kept but the ids: the conversation and its
  messages get new ids, the messages their order from the file and their tree from `id` and
  `parentId` (a message without `parentId` follows the one before it, as in files written
  before branches; null is a first message). The active branch ends at the newest message and
  goes on through the newest children (`selectBranch`'s rule): the export names no current
  leaf. Tags follow `updateConversation`'s rules (`schema.validation.clean_tags`), `model` and
  `usage` `startMessage`'s and `finishMessage`'s; fields an older export lacks (`archived`,
  `pinned`, `tags`, `model`, `status`, `usage`) take the defaults. A `STREAMING` message
  (exported while its answer was written) is stored `FAILED` with the text it had: no producer
  writes to the copy, and a stream that stops is FAILED (RULES.md, "Assistant").
- `chatgpt_conversations`: a ChatGPT data export's `conversations.json`, a list of
  conversations, each a `mapping` of nodes (`id`, `message`, `parent`, `children`) and a
  `current_node`. The whole tree is imported, every branch, and the path from the root to
  `current_node` is the active branch (chatql's branches, "assistant"); a skipped node's
  children follow its nearest kept ancestor.
  `author.role` user, assistant and system become USER, ASSISTANT and SYSTEM; `tool` messages
  (a plugin's or a browsing tool's output) are skipped, as are nodes without a message and
  messages with no text. Text is the string parts of `content.parts` (images and other
  non-string parts are left out) joined by blank lines, or `content.text` when there are no
  parts (`code`). `create_time` is epoch seconds; a message without one takes the time of the
  one before it on its path (or the conversation's), and a message is never earlier than the
  one before it, so the order stays the path's. A title over 200 characters is cut to 200, an
  empty or missing one is "Untitled".

A file that breaks a rule is a `BrokenFile` naming where: the line, or the conversation's
index and id and the node's id, and the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from db.formats import EARLIEST, LATEST, OUT_OF_RANGE, parse_stamp
from db.models import MessageRole, MessageStatus
from schema.config import Config
from schema.errors import BadUserInput
from schema.validation import (
    clean_tags,
    content_problem,
    model_problem,
    stored_content_problem,
    title_problem,
    tokens_problem,
    trimmed,
)

UNTITLED = "Untitled"
TITLE_MAX = 200
CHATGPT_ROLES = {
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
    "system": MessageRole.SYSTEM,
}
SKIPPED_ROLES = frozenset({"tool"})

# Why a file whose arrays and objects nest past the parser's recursion limit is refused.
TOO_DEEP = "nested too deeply"

# The longest content an export may hold (a streamed answer's limit by default).
STORED_MOST = Config.max_streamed_chars


class BrokenFile(Exception):
    """A file that cannot be imported: `where` it broke and why, in one line."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class ImportedRevision:
    revision: int
    content: str
    created_at: datetime


@dataclass(frozen=True)
class ImportedMessage:
    role: MessageRole
    content: str
    created_at: datetime
    edited_at: datetime | None = None
    # Earlier contents, oldest first; the message's revision is one more than the last.
    revisions: list[ImportedRevision] = field(default_factory=list)
    # The index of its parent in the conversation's messages (None: a first message).
    parent: int | None = None
    model: str | None = None
    status: MessageStatus = MessageStatus.COMPLETE
    usage: tuple[int, int] | None = None  # (input tokens, output tokens)


@dataclass(frozen=True)
class ImportedConversation:
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[ImportedMessage]
    # ChatGPT: the tree had branches (all of them are read).
    branched: bool = False
    # The index of the current leaf in `messages` (None: it has none).
    leaf: int | None = None
    archived: bool = False
    pinned: bool = False
    tags: list[str] = field(default_factory=list)


# chatql's own export ----------------------------------------------------------------------


def chatql_lines(lines: Iterable[str]) -> Iterator[ImportedConversation]:
    """The conversations of an export, one a line (blank lines are skipped), checked as they
    are read: a `BrokenFile` names the line (1 is the first) and the field."""
    import json

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise BrokenFile(where, f"not JSON ({exc})") from None
        except RecursionError:
            raise BrokenFile(where, f"not JSON ({TOO_DEEP})") from None
        yield _chatql_conversation(data, where)


def _chatql_conversation(data: Any, where: str) -> ImportedConversation:
    if not isinstance(data, dict):
        raise BrokenFile(where, "not a JSON object")
    title = trimmed(_string(data, "title", where))
    _check(title_problem(title), where, "title")
    archived, pinned = _flag(data, "archived", where), _flag(data, "pinned", where)
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise BrokenFile(where, "tags: must be a list of strings")
    try:
        tags = clean_tags(tags)
    except BadUserInput as problem:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in problem.fields.items())
        raise BrokenFile(where, reasons) from None
    items = data.get("messages")
    if not isinstance(items, list):
        raise BrokenFile(where, "messages: must be a list")
    messages = []
    named: dict[str, int] = {}
    for index, item in enumerate(items):
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str):
            if ident in named:
                raise BrokenFile(
                    where, f"messages.{index}.id: also the id of messages.{named[ident]}"
                )
            named[ident] = index
    for index, item in enumerate(items):
        at = f"messages.{index}"
        if not isinstance(item, dict):
            raise BrokenFile(where, f"{at}: not a JSON object")
        parent: int | None = index - 1 if index else None
        if "parentId" in item:
            given = item["parentId"]
            parent = named.get(given) if isinstance(given, str) else None
            if given is not None and parent in (None, index):
                raise BrokenFile(where, f"{at}.parentId: not the id of a message of this line")
        role = item.get("role")
        if role not in MessageRole.__members__:
            raise BrokenFile(where, f"{at}.role: must be USER, ASSISTANT or SYSTEM")
        content = _string(item, "content", where, at)
        # What the export writes: a streamed answer may be empty or longer than a sent one.
        _check(stored_content_problem(content, most=STORED_MOST), where, f"{at}.content")
        revisions = []
        for number, revision in enumerate(item.get("revisions") or []):
            past = f"{at}.revisions.{number}"
            if not isinstance(revision, dict) or not isinstance(revision.get("content"), str):
                raise BrokenFile(where, f"{past}: needs a content string")
            _check(content_problem(revision["content"]), where, f"{past}.content")
            revisions.append(
                ImportedRevision(
                    revision=number + 1,
                    content=revision["content"],
                    created_at=_stamp(revision, "createdAt", where, past),
                )
            )
        edited = item.get("editedAt")
        model = item.get("model")
        if model is not None and not isinstance(model, str):
            raise BrokenFile(where, f"{at}.model: must be a string or null")
        _check(model_problem(model), where, f"{at}.model")
        status = item.get("status", MessageStatus.COMPLETE.value)
        if status not in MessageStatus.__members__:
            raise BrokenFile(where, f"{at}.status: must be COMPLETE, FAILED or CANCELLED")
        messages.append(
            ImportedMessage(
                role=MessageRole(str(role)),
                content=content,
                created_at=_stamp(item, "createdAt", where, at),
                edited_at=None if edited is None else _stamp(item, "editedAt", where, at),
                revisions=revisions,
                parent=parent,
                model=model,
                status=(
                    MessageStatus.FAILED
                    if status == MessageStatus.STREAMING
                    else MessageStatus(status)
                ),
                usage=_usage(item.get("usage"), where, f"{at}.usage"),
            )
        )
    _check_tree(messages, where)
    return ImportedConversation(
        title=title,
        created_at=_stamp(data, "createdAt", where),
        updated_at=_stamp(data, "updatedAt", where),
        messages=messages,
        leaf=newest_leaf(messages),
        archived=archived,
        pinned=pinned,
        tags=tags,
    )


def _check_tree(messages: list[ImportedMessage], where: str) -> None:
    """A `BrokenFile` when the parents form a cycle."""
    done: set[int] = set()
    for start in range(len(messages)):
        path: set[int] = set()
        step: int | None = start
        while step is not None and step not in done:
            if step in path:
                raise BrokenFile(where, f"messages.{step}.parentId: the parents form a cycle")
            path.add(step)
            step = messages[step].parent
        done |= path


def newest_leaf(messages: list[ImportedMessage]) -> int | None:
    """The leaf reached from the newest message (by time, then place) through the newest
    child at each step; None without messages."""
    if not messages:
        return None
    children: dict[int, list[int]] = {}
    for index, message in enumerate(messages):
        if message.parent is not None:
            children.setdefault(message.parent, []).append(index)

    def newest(indexes: Iterable[int]) -> int:
        return max(indexes, key=lambda index: (messages[index].created_at, index))

    step = newest(range(len(messages)))
    while step in children:
        step = newest(children[step])
    return step


def _flag(data: dict[str, Any], key: str, where: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise BrokenFile(where, f"{key}: must be true or false")
    return value


def _usage(value: Any, where: str, at: str) -> tuple[int, int] | None:
    """A message's `usage`: null, or both token counts as `finishMessage` takes them."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BrokenFile(where, f"{at}: must be an object or null")
    counts = []
    for key in ("inputTokens", "outputTokens"):
        count = value.get(key)
        if isinstance(count, bool) or not isinstance(count, int):
            raise BrokenFile(where, f"{at}.{key}: must be an integer")
        _check(tokens_problem(count), where, f"{at}.{key}")
        counts.append(count)
    return counts[0], counts[1]


def _string(data: dict[str, Any], key: str, where: str, at: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise BrokenFile(where, f"{at + '.' if at else ''}{key}: must be a string")
    return value


def _stamp(data: dict[str, Any], key: str, where: str, at: str = "") -> datetime:
    name = f"{at + '.' if at else ''}{key}"
    value = data.get(key)
    if not isinstance(value, str):
        raise BrokenFile(where, f"{name}: must be an ISO 8601 date and time")
    try:
        return parse_stamp(value)
    except ValueError as exc:
        raise BrokenFile(where, f"{name}: {exc}") from None


def _check(problem: str | None, where: str, name: str) -> None:
    if problem is not None:
        raise BrokenFile(where, f"{name}: {problem}")


# ChatGPT's conversations.json -------------------------------------------------------------


def chatgpt_conversations(data: Any, *, now: datetime) -> Iterator[ImportedConversation]:
    """The conversations of a parsed `conversations.json`, in the file's order (see the
    module); `now` stands for a conversation with no time at all."""
    if not isinstance(data, list):
        raise BrokenFile("the file", "must be a JSON list of conversations")
    for index, item in enumerate(data):
        ident = item.get("id") or item.get("conversation_id") if isinstance(item, dict) else None
        where = f"conversation {index}" + (f" (id {ident!r})" if isinstance(ident, str) else "")
        if not isinstance(item, dict):
            raise BrokenFile(where, "not a JSON object")
        yield _chatgpt_conversation(item, where, now)


def _chatgpt_conversation(item: dict[str, Any], where: str, now: datetime) -> ImportedConversation:
    mapping = item.get("mapping")
    if not isinstance(mapping, dict):
        raise BrokenFile(where, "mapping: must be an object of nodes")
    title = item.get("title")
    if title is not None and not isinstance(title, str):
        raise BrokenFile(where, "title: must be a string or null")
    title = trimmed(" ".join((title or "").split())[:TITLE_MAX]) or UNTITLED
    _check(title_problem(title), where, "title")
    started = _epoch(item.get("create_time"), where, "create_time")
    ended = _epoch(item.get("update_time"), where, "update_time")
    path = _current_path(mapping, item.get("current_node"), where)
    # Every node, parents first; each kept message with its nearest kept ancestor.
    found: list[tuple[str, ImportedMessage, str | None]] = []
    nearest: dict[str, str | None] = {}  # a node's nearest kept ancestor, itself included
    moments: dict[str, datetime | None] = {}  # the time of that one (or the conversation's)
    for node_id in _tree_order(mapping, where):
        parent = mapping[node_id].get("parent")
        above = nearest[parent] if parent is not None else None
        previous = moments[parent] if parent is not None else started
        nearest[node_id], moments[node_id] = above, previous
        read = _chatgpt_message(mapping[node_id], f"{where}, node {node_id!r}", previous)
        if read is None:
            continue
        role, text, moment = read
        found.append((node_id, ImportedMessage(role, text, moment or now), above))
        nearest[node_id], moments[node_id] = node_id, moment
    # In time order (a stable sort: a parent stays before its children at the same time).
    found.sort(key=lambda entry: entry[1].created_at)
    place = {node_id: index for index, (node_id, _, _) in enumerate(found)}
    messages = [
        replace(message, parent=None if above is None else place[above])
        for _, message, above in found
    ]
    current = nearest[path[-1]] if path else None
    leaf = place[current] if current is not None else newest_leaf(messages)
    created = started or (messages[0].created_at if messages else None) or ended or now
    updated = ended or (messages[-1].created_at if messages else None) or created
    branched = any(len(node.get("children") or []) > 1 for node in mapping.values())
    return ImportedConversation(
        title=title,
        created_at=created,
        updated_at=max(created, updated),
        messages=messages,
        branched=branched,
        leaf=leaf,
    )


def _chatgpt_message(
    node: dict[str, Any], at: str, previous: datetime | None
) -> tuple[MessageRole, str, datetime | None] | None:
    """A node's message as (role, text, time), None when it is skipped."""
    message = node.get("message")
    if message is None:
        return None
    if not isinstance(message, dict):
        raise BrokenFile(at, "message: must be an object or null")
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    if role in SKIPPED_ROLES:
        return None
    if role not in CHATGPT_ROLES:
        raise BrokenFile(
            at, f"message.author.role: {role!r} is not user, assistant, system or tool"
        )
    text = _text(message.get("content"), at)
    if not text.strip():
        return None
    _check(content_problem(text), at, "message.content")
    moment = _epoch(message.get("create_time"), at, "message.create_time")
    moment = max(filter(None, (moment, previous))) if moment or previous else None
    return CHATGPT_ROLES[role], text, moment


def _tree_order(mapping: dict[str, Any], where: str) -> list[str]:
    """Every node id, each after its parent (children in the mapping's order). A parent that
    is not a node, or parents in a cycle, are a `BrokenFile`."""
    children: dict[str | None, list[str]] = {}
    for node_id, node in mapping.items():
        parent = node.get("parent")
        if parent is not None and (not isinstance(parent, str) or parent not in mapping):
            raise BrokenFile(
                f"{where}, node {node_id!r}", f"parent: {parent!r} is not a node of the mapping"
            )
        children.setdefault(parent, []).append(node_id)
    order: list[str] = []
    waiting = list(reversed(children.get(None, [])))
    while waiting:
        node_id = waiting.pop()
        order.append(node_id)
        waiting += reversed(children.get(node_id, []))
    if len(order) < len(mapping):
        stuck = next(node_id for node_id in mapping if node_id not in set(order))
        raise BrokenFile(f"{where}, node {stuck!r}", "parent: the parents form a cycle")
    return order


def _current_path(mapping: dict[str, Any], current: Any, where: str) -> list[str]:
    """The node ids from the root to `current`, through each node's `parent`. Without a
    `current_node`, the path ends at the last leaf reached by following last children. Nodes
    that are not objects, `children` that are not a list of node ids (strings), and children
    that lead back to a node already passed, are a `BrokenFile`."""
    for node_id, node in mapping.items():
        if not isinstance(node, dict):
            raise BrokenFile(f"{where}, node {node_id!r}", "not a JSON object")
        children = node.get("children")
        if children is not None and not (
            isinstance(children, list) and all(isinstance(child, str) for child in children)
        ):
            raise BrokenFile(f"{where}, node {node_id!r}", "children: must be a list of node ids")
    if current is None:
        roots = [key for key, node in mapping.items() if node.get("parent") is None]
        if not roots:
            return []
        current = roots[0]
        passed = {current}
        while True:
            children = mapping[current].get("children") or []
            if not children or children[-1] not in mapping:
                break
            if children[-1] in passed:
                raise BrokenFile(
                    f"{where}, node {current!r}", "children: the children form a cycle"
                )
            current = children[-1]
            passed.add(current)
    if not isinstance(current, str) or current not in mapping:
        raise BrokenFile(where, f"current_node: {current!r} is not a node of the mapping")
    path: list[str] = []
    seen: set[str] = set()
    step: Any = current
    while step is not None:
        if not isinstance(step, str) or step not in mapping:
            raise BrokenFile(
                f"{where}, node {path[-1]!r}", f"parent: {step!r} is not a node of the mapping"
            )
        if step in seen:
            raise BrokenFile(f"{where}, node {step!r}", "parent: the parents form a cycle")
        seen.add(step)
        path.append(step)
        step = mapping[step].get("parent")
    path.reverse()
    return path


def _text(content: Any, at: str) -> str:
    if content is None:
        return ""
    if not isinstance(content, dict):
        raise BrokenFile(at, "message.content: must be an object")
    parts = content.get("parts")
    if parts is None:
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if not isinstance(parts, list):
        raise BrokenFile(at, "message.content.parts: must be a list")
    return "\n\n".join(part for part in parts if isinstance(part, str) and part.strip())


def _epoch(value: Any, where: str, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BrokenFile(where, f"{name}: must be epoch seconds or null")
    try:
        moment = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise BrokenFile(where, f"{name}: {OUT_OF_RANGE}") from None
    if not EARLIEST <= moment <= LATEST:
        raise BrokenFile(where, f"{name}: {OUT_OF_RANGE}")
    return moment
