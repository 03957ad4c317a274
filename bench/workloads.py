"""The workloads of the benchmark (issues 7, 12 and 14), their anchors, and how answers compare.

Q1, a nested page as an admin: 50 users, their 10 latest conversations each, the last 20
messages of each. Q1+ (issue 12): Q1 that also selects `owner { username }` and `lastMessage
{ content }` on each conversation. Q2, one screen as the owner: one conversation and its last
50 messages with cursors and pageInfo. W1: `sendMessage` into the sender's own conversation.

Each read workload (`READS`) has four forms that return the same data:

- chatql's GraphQL document;
- PostGraphile 4's (issue 14): the same page sizes, orders and fields in PostGraphile's own
  shapes (`allUsers`, `conversationsByUserId`, `messagesByConversationId`, `userByUserId`,
  `totalCount`). PostGraphile runs as the database's owner with no JWT and no roles, so it
  does not check what chatql checks on every request: the token and the viewer's account
  (active, not deleted), the admin rule of `users` and the owner-or-admin rule of
  `conversation`, the document's depth/complexity limits and the request deadline;
- the **exact limit**: one SQL statement that makes PostgreSQL build chatql's very document
  (same keys, global ids, base64 keyset cursors, `to_char` timestamps), compared to chatql's
  answer as parsed JSON;
- the **lean limit**: the cheapest single statement we could write that returns the same data
  as one JSON document: arrays instead of objects, PostgreSQL's own JSON timestamps, raw ids,
  ids for cursors (so an edge's cursor is its node's id, and `startCursor`/`endCursor` are the
  first and last edge's), `hasPreviousPage` from a 51st row rather than a second scan.

`normalise(source, answer)` turns any of them into one plain form (timestamps parsed, global
ids decoded to keys, cursors replaced by the position of their edge) so that `bench/run.py`
can check that all four carry the same data before it measures any of them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Q1_FIELDS = "title createdAt messageCount"
Q1_MESSAGES = "messages(last: 20) { edges { node { role content createdAt } } }"

Q1 = f"""query Q1 {{
  users(first: 50) {{
    edges {{ node {{
      conversations(first: 10) {{
        edges {{ node {{
          {Q1_FIELDS}
          {Q1_MESSAGES}
        }} }}
      }}
    }} }}
  }}
}}"""

Q1_PLUS = f"""query Q1plus {{
  users(first: 50) {{
    edges {{ node {{
      conversations(first: 10) {{
        edges {{ node {{
          {Q1_FIELDS}
          owner {{ username }}
          lastMessage {{ content }}
          {Q1_MESSAGES}
        }} }}
      }}
    }} }}
  }}
}}"""

Q2 = """query Q2($id: ID!) {
  conversation(id: $id) {
    id title
    messages(last: 50) {
      edges { cursor node { id role content createdAt } }
      pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
    }
  }
}"""

W1 = """mutation W1($input: SendMessageInput!) {
  sendMessage(input: $input) { id role content createdAt }
}"""

# PostGraphile 4's forms. Its connections take `last` with an `orderBy` (it reverses the order
# in SQL, as chatql does); `orderBy` lists the primary key last, as chatql's keysets do.
_PG_MESSAGES = (
    "messages: messagesByConversationId(last: 20, orderBy: [CREATED_AT_ASC, ID_ASC]) "
    "{ edges { node { role content createdAt } } }"
)


def _postgraphile_q1(plus: bool) -> str:
    extra = (
        "userByUserId { username }\n"
        "          lastMessage: messagesByConversationId(last: 1, "
        "orderBy: [CREATED_AT_ASC, ID_ASC]) { nodes { content } }"
        if plus
        else ""
    )
    return f"""query Q1{"plus" if plus else ""} {{
  allUsers(first: 50, orderBy: [ID_ASC]) {{
    edges {{ node {{
      conversationsByUserId(first: 10, orderBy: [UPDATED_AT_DESC, ID_DESC]) {{
        edges {{ node {{
          title createdAt
          messageCount: messagesByConversationId {{ totalCount }}
          {extra}
          {_PG_MESSAGES}
        }} }}
      }}
    }} }}
  }}
}}"""


POSTGRAPHILE_Q1 = _postgraphile_q1(plus=False)
POSTGRAPHILE_Q1_PLUS = _postgraphile_q1(plus=True)
POSTGRAPHILE_Q2 = """query Q2($id: String!) {
  conversationById(id: $id) {
    id title
    messagesByConversationId(last: 50, orderBy: [CREATED_AT_ASC, ID_ASC]) {
      edges { cursor node { id role content createdAt } }
      pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
    }
  }
}"""

# ---- the exact limit: chatql's very document, built by PostgreSQL -------------------------

# Timestamps the way chatql prints them: UTC, always six digits of microseconds.
_STAMP = """to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
_B64 = "rtrim(translate(encode(convert_to({0}, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')"
_ID = "translate(encode(convert_to({0}, 'UTF8'), 'base64'), E'\\n', '')"


def _exact_q1(plus: bool) -> str:
    extra = (
        """'owner', json_build_object('username', u.username),
    'lastMessage', (SELECT json_build_object('content', l.content) FROM messages l
      WHERE l.conversation_id = c.id ORDER BY l.created_at DESC, l.id DESC LIMIT 1),"""
        if plus
        else ""
    )
    return f"""SELECT json_build_object('data', json_build_object('users', json_build_object(
  'edges', coalesce(json_agg(json_build_object('node', json_build_object(
    'conversations', cs.doc)) ORDER BY u.id), '[]'))))::text
FROM (SELECT id{", username" if plus else ""} FROM users ORDER BY id LIMIT 50) u
CROSS JOIN LATERAL (
  SELECT json_build_object('edges', coalesce(json_agg(json_build_object('node', json_build_object(
    'title', c.title,
    'createdAt', {_STAMP.format("c.created_at")},
    'messageCount', (SELECT count(*) FROM messages x WHERE x.conversation_id = c.id),
    {extra}
    'messages', json_build_object('edges', (
      SELECT coalesce(json_agg(json_build_object('node', json_build_object(
        'role', m.role, 'content', m.content, 'createdAt', {_STAMP.format("m.created_at")}))
        ORDER BY m.created_at, m.id), '[]')
      FROM (SELECT * FROM messages m WHERE m.conversation_id = c.id
            ORDER BY m.created_at DESC, m.id DESC LIMIT 20) m))))
    ORDER BY c.updated_at DESC, c.id DESC), '[]')) AS doc
  FROM (SELECT * FROM conversations c WHERE c.user_id = u.id
        ORDER BY c.updated_at DESC, c.id DESC LIMIT 10) c
) cs;
"""


LIMIT_Q1 = _exact_q1(plus=False)
LIMIT_Q1_PLUS = _exact_q1(plus=True)


def limit_q2(conversation_id: str, owner_id: int) -> str:
    keyset = '\'["m","\' || ' + _STAMP.format("m.created_at") + " || '\",' || m.id || ']'"
    cursor = _B64.format(keyset)
    return f"""SELECT json_build_object('data', json_build_object('conversation', (
  SELECT json_build_object(
    'id', {_ID.format("'Conversation:' || c.id")}, 'title', c.title,
    'messages', (
      SELECT json_build_object(
        'edges', coalesce(json_agg(json_build_object('cursor', p.cursor, 'node',
          json_build_object('id', {_ID.format("'Message:' || p.id")}, 'role', p.role,
            'content', p.content, 'createdAt', {_STAMP.format("p.created_at")}))
          ORDER BY p.created_at, p.id), '[]'),
        'pageInfo', json_build_object(
          'hasPreviousPage', EXISTS (SELECT 1 FROM messages x WHERE x.conversation_id = c.id
            ORDER BY x.created_at DESC, x.id DESC OFFSET 50 LIMIT 1),
          'hasNextPage', false,
          'startCursor', (array_agg(p.cursor ORDER BY p.created_at, p.id))[1],
          'endCursor', (array_agg(p.cursor ORDER BY p.created_at DESC, p.id DESC))[1]))
      FROM (SELECT m.*, {cursor} AS cursor FROM messages m WHERE m.conversation_id = c.id
            ORDER BY m.created_at DESC, m.id DESC LIMIT 50) p)
  )
  FROM conversations c WHERE c.id = '{conversation_id}' AND c.user_id = {owner_id})))::text;
"""


# ---- the lean limit: the same data, as cheaply as we can write it -------------------------


def _lean_q1(plus: bool) -> str:
    # One array per conversation: [title, createdAt, messageCount, [[role, content,
    # createdAt], ...]] and, for Q1+, the owner's username and the last message's content.
    extra = ", u.username, p.last" if plus else ""
    last = (
        ", (array_agg(m.content ORDER BY m.created_at DESC, m.id DESC))[1] AS last" if plus else ""
    )
    return f"""SELECT coalesce(json_agg(cs.doc ORDER BY u.id), '[]')::text
FROM (SELECT id{", username" if plus else ""} FROM users ORDER BY id LIMIT 50) u
CROSS JOIN LATERAL (
  SELECT coalesce(json_agg(json_build_array(c.title, c.created_at,
    (SELECT count(*) FROM messages x WHERE x.conversation_id = c.id), p.page{extra})
    ORDER BY c.updated_at DESC, c.id DESC), '[]') AS doc
  FROM (SELECT id, title, created_at, updated_at FROM conversations WHERE user_id = u.id
        ORDER BY updated_at DESC, id DESC LIMIT 10) c
  CROSS JOIN LATERAL (
    SELECT coalesce(json_agg(json_build_array(m.role, m.content, m.created_at)
      ORDER BY m.created_at, m.id), '[]') AS page{last}
    FROM (SELECT id, role, content, created_at FROM messages WHERE conversation_id = c.id
          ORDER BY created_at DESC, id DESC LIMIT 20) m
  ) p
) cs;
"""


LEAN_Q1 = _lean_q1(plus=False)
LEAN_Q1_PLUS = _lean_q1(plus=True)


def lean_q2(conversation_id: str, owner_id: int) -> str:
    """[id, title, [[id, role, content, createdAt], ...], hasPreviousPage, hasNextPage]: the
    last 50 messages and whether a 51st exists, from one backward scan of 51 index entries."""
    return f"""SELECT json_build_array(c.id, c.title, p.edges, p.more, false)::text
FROM conversations c
CROSS JOIN LATERAL (
  SELECT coalesce(json_agg(json_build_array(m.id, m.role, m.content, m.created_at)
    ORDER BY m.created_at, m.id) FILTER (WHERE m.n <= 50), '[]') AS edges,
    count(*) > 50 AS more
  FROM (SELECT id, role, content, created_at,
               row_number() OVER (ORDER BY created_at DESC, id DESC) AS n
        FROM messages WHERE conversation_id = c.id
        ORDER BY created_at DESC, id DESC LIMIT 51) m
) p
WHERE c.id = '{conversation_id}' AND c.user_id = {owner_id};
"""


# ---- one plain form for every source ------------------------------------------------------

CHATQL, POSTGRAPHILE, EXACT, LEAN = "chatql", "postgraphile", "exact", "lean"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _key(global_id: str) -> str:
    """chatql's global id (base64 of `Type:key`) -> key."""
    return base64.b64decode(global_id).decode().split(":", 1)[1]


def _q1(source: str, answer: Any) -> Any:
    """[[ (title, createdAt, messageCount, [(role, content, createdAt)], owner, last) per
    conversation ] per user]; owner and last are None when the workload does not select them."""
    if source == LEAN:
        return [
            [
                (
                    c[0],
                    _at(c[1]),
                    c[2],
                    [(m[0], m[1], _at(m[2])) for m in c[3]],
                    c[4] if len(c) > 4 else None,
                    c[5] if len(c) > 4 else None,
                )
                for c in user
            ]
            for user in answer
        ]
    if source == POSTGRAPHILE:
        users = answer["data"]["allUsers"]["edges"]
        conversations = "conversationsByUserId"

        def count(n: Any) -> Any:
            return n["messageCount"]["totalCount"]

        def owner(n: Any) -> Any:
            return n["userByUserId"]["username"] if "userByUserId" in n else None

        def last(n: Any) -> Any:
            if "lastMessage" not in n:
                return None
            nodes = n["lastMessage"]["nodes"]
            return nodes[0]["content"] if nodes else None

    else:  # chatql's answer and the exact limit's document have one shape
        users = answer["data"]["users"]["edges"]
        conversations = "conversations"

        def count(n: Any) -> Any:
            return n["messageCount"]

        def owner(n: Any) -> Any:
            return n["owner"]["username"] if "owner" in n else None

        def last(n: Any) -> Any:
            return (n.get("lastMessage") or {}).get("content")

    return [
        [
            (
                c["node"]["title"],
                _at(c["node"]["createdAt"]),
                count(c["node"]),
                [
                    (m["node"]["role"], m["node"]["content"], _at(m["node"]["createdAt"]))
                    for m in c["node"]["messages"]["edges"]
                ],
                owner(c["node"]),
                last(c["node"]),
            )
            for c in u["node"][conversations]["edges"]
        ]
        for u in users
    ]


def _q2(source: str, answer: Any) -> Any:
    """(key, title, [(key, role, content, createdAt)], hasPreviousPage, hasNextPage, start,
    end): start and end are the positions of the edges whose cursors pageInfo names."""
    if source == LEAN:
        key, title, edges, before, after = answer
        nodes = [(str(m[0]), m[1], m[2], _at(m[3])) for m in edges]
        ends = (0, len(nodes) - 1) if nodes else (None, None)
        return (key, title, nodes, before, after, *ends)
    conversation = answer["data"]["conversationById" if source == POSTGRAPHILE else "conversation"]
    page = conversation["messagesByConversationId" if source == POSTGRAPHILE else "messages"]
    ident: Callable[[Any], str] = str if source == POSTGRAPHILE else _key
    cursors = [edge["cursor"] for edge in page["edges"]]
    if len(set(cursors)) != len(cursors):
        raise ValueError(f"{source}: two edges share a cursor")
    info = page["pageInfo"]

    def position(cursor: str | None) -> int | None:
        return None if cursor is None else cursors.index(cursor)

    return (
        ident(conversation["id"]),
        conversation["title"],
        [
            (
                ident(e["node"]["id"]),
                e["node"]["role"],
                e["node"]["content"],
                _at(e["node"]["createdAt"]),
            )
            for e in page["edges"]
        ],
        info["hasPreviousPage"],
        info["hasNextPage"],
        position(info["startCursor"]),
        position(info["endCursor"]),
    )


@dataclass(frozen=True)
class Read:
    """A read workload in its four forms. `exact_sql` and `lean_sql` take (conversation key,
    owner id) and ignore them where the workload has no variables."""

    name: str
    chatql: str
    postgraphile: str
    exact_sql: Callable[[str, int], str]
    lean_sql: Callable[[str, int], str]
    normalise: Callable[[str, Any], Any]
    as_admin: bool  # chatql: the admin's token (Q1) or the conversation owner's (Q2)
    has_id: bool  # takes the conversation as `$id`


READS = [
    Read(
        "Q1", Q1, POSTGRAPHILE_Q1, lambda _c, _o: LIMIT_Q1, lambda _c, _o: LEAN_Q1, _q1, True, False
    ),
    Read(
        "Q1+",
        Q1_PLUS,
        POSTGRAPHILE_Q1_PLUS,
        lambda _c, _o: LIMIT_Q1_PLUS,
        lambda _c, _o: LEAN_Q1_PLUS,
        _q1,
        True,
        False,
    ),
    Read("Q2", Q2, POSTGRAPHILE_Q2, limit_q2, lean_q2, _q2, False, True),
]
