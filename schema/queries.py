"""The Query root: its fields are definitions of `schema.fields` over a level of one object."""

from __future__ import annotations

import strawberry

from schema.resolvers import defined
from schema.search import SearchFields
from schema.types import Connection, Conversation, Node, User


@strawberry.type
class Query(SearchFields):  # searchMessages: schema/search.py
    node: Node | None = defined("Query.node")
    nodes: list[Node | None] = defined("Query.nodes")
    me: User | None = defined("Query.me")
    user: User | None = defined("Query.user")
    users: Connection[User] = defined("Query.users")
    conversation: Conversation | None = defined("Query.conversation")
