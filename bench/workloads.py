"""The workloads of the benchmark (issue 7) and the hand-written SQL that is their limit.

Q1, a nested page as an admin: 50 users, their 10 latest conversations each, the last 20
messages of each. Q2, one screen as the owner: one conversation and its last 50 messages with
cursors and pageInfo. W1: `sendMessage` into the sender's own conversation. The limit of Q1
and Q2 is one SQL statement that makes PostgreSQL build the same JSON document.
"""

from __future__ import annotations

Q1 = """query Q1 {
  users(first: 50) {
    edges { node {
      conversations(first: 10) {
        edges { node {
          title createdAt messageCount
          messages(last: 20) { edges { node { role content createdAt } } }
        } }
      }
    } }
  }
}"""

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

# Timestamps the way chatql prints them: UTC, always six digits of microseconds.
_STAMP = """to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
_B64 = "rtrim(translate(encode(convert_to({0}, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')"
_ID = "translate(encode(convert_to({0}, 'UTF8'), 'base64'), E'\\n', '')"

LIMIT_Q1 = f"""SELECT json_build_object('data', json_build_object('users', json_build_object(
  'edges', coalesce(json_agg(json_build_object('node', json_build_object(
    'conversations', cs.doc)) ORDER BY u.id), '[]'))))::text
FROM (SELECT id FROM users ORDER BY id LIMIT 50) u
CROSS JOIN LATERAL (
  SELECT json_build_object('edges', coalesce(json_agg(json_build_object('node', json_build_object(
    'title', c.title,
    'createdAt', {_STAMP.format("c.created_at")},
    'messageCount', (SELECT count(*) FROM messages x WHERE x.conversation_id = c.id),
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
