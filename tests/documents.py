"""Random GraphQL documents over the real schema, for differential tests.

Each document is a valid-looking query (it may still fail validation or execution: bad page
sizes, bad cursors, others' data) built from the fields the planned executor covers, with
what changes how a query runs: aliases, inline and named fragments, variables, `@include` and
`@skip`, `__typename`, and repeated fields that must merge.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

USER_SCALARS = ["id", "username", "fullName", "email", "isActive", "isAdmin", "createdAt"]
CONVERSATION_SCALARS = ["id", "title", "createdAt", "updatedAt", "messageCount"]
MESSAGE_SCALARS = ["id", "role", "content", "clientId", "createdAt"]
PAGE_INFO = ["hasNextPage", "hasPreviousPage", "startCursor", "endCursor", "__typename"]
SIZES: list[int | None] = [None, None, None, 1, 1, 2, 2, 3, 3, 5, 5, 0, 101]


@dataclass
class Document:
    rng: random.Random
    cursors: dict[str, list[str]]
    conversation_ids: list[str]
    variables: dict[str, Any] = field(default_factory=dict)
    declarations: list[str] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)
    counter: int = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def variable(self, graphql_type: str, value: Any) -> str:
        name = self.fresh("v")
        self.declarations.append(f"${name}: {graphql_type}")
        self.variables[name] = value
        return f"${name}"

    # ---- arguments ------------------------------------------------------------------------

    def page_arguments(self, kind: str) -> str:
        rng = self.rng
        parts = []
        size = rng.choice(SIZES)
        if size is not None:
            name = rng.choice(["first", "last"])
            value = self.variable("Int", size) if rng.random() < 0.3 else str(size)
            parts.append(f"{name}: {value}")
            if rng.random() < 0.03:
                parts.append(f"{'last' if name == 'first' else 'first'}: 2")
        for bound in ("after", "before"):
            if rng.random() < 0.2 and self.cursors[kind]:
                # Now and then a cursor of another connection, or none at all.
                wrong = [c for k, cs in self.cursors.items() if k != kind for c in cs[:1]]
                bad = [*wrong, "bm90LWEtY3Vyc29y"] if rng.random() < 0.1 else []
                cursor = rng.choice(bad or self.cursors[kind])
                value = self.variable("String", cursor) if rng.random() < 0.5 else f'"{cursor}"'
                parts.append(f"{bound}: {value}")
        return f"({', '.join(parts)})" if parts else ""

    # ---- selections -----------------------------------------------------------------------

    def wrap(self, type_name: str, text: str) -> str:
        """A field as it is, aliased, under a directive, or inside a fragment."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.08:
            return f"... on {type_name} {{ {text} }}"
        if roll < 0.14:
            name = self.fresh("F")
            self.fragments.append(f"fragment {name} on {type_name} {{ {text} }}")
            return f"...{name}"
        if roll < 0.2:
            keep = rng.random() < 0.5
            flag = self.variable("Boolean!", keep) if rng.random() < 0.5 else str(keep).lower()
            directive = f"@{rng.choice(['include', 'skip'])}(if: {flag})"
            head, brace, rest = text.partition(" {")
            return f"{head} {directive}{brace}{rest}"
        return text

    def aliased(self, text: str) -> str:
        if text.split(" ", 1)[0].endswith(":") or self.rng.random() >= 0.25:
            return text
        return f"{self.fresh('a')}: {text}"

    def pick(self, names: list[str], low: int = 1) -> list[str]:
        count = self.rng.randint(low, len(names))
        chosen = self.rng.sample(names, count)
        if self.rng.random() < 0.1:
            chosen.append(self.rng.choice(names))  # the same field twice: they merge
        return chosen

    def selection(self, type_name: str, items: list[str]) -> str:
        if self.rng.random() < 0.15:
            items.append("__typename")
        return " ".join(self.wrap(type_name, self.aliased(item)) for item in items)

    def connection(self, node_type: str, node: Callable[[], str]) -> str:
        rng = self.rng
        items = []
        if rng.random() < 0.9:
            cursor = "cursor " if rng.random() < 0.4 else ""
            items.append(f"edges {{ {cursor}node {{ {node()} }} }}")
        if rng.random() < 0.5:
            items.append(f"pageInfo {{ {' '.join(self.pick(PAGE_INFO))} }}")
        if rng.random() < 0.3 or not items:
            items.append("totalCount")
        return self.selection(f"{node_type}Connection", items)

    def user(self, depth: int) -> str:
        items = self.pick(USER_SCALARS)
        if depth > 0 and self.rng.random() < 0.7:
            arguments = self.page_arguments("Conversation")
            body = self.connection("Conversation", lambda: self.conversation(depth - 1))
            items.append(f"conversations{arguments} {{ {body} }}")
        if self.rng.random() < 0.2:
            items.append("conversationCount")
        return self.selection("User", items)

    def conversation(self, depth: int) -> str:
        items = self.pick(CONVERSATION_SCALARS)
        rng = self.rng
        if depth > 0 and rng.random() < 0.7:
            arguments = self.page_arguments("Message")
            body = self.connection("Message", lambda: self.message(depth - 1))
            items.append(f"messages{arguments} {{ {body} }}")
        if depth > 0 and rng.random() < 0.2:
            items.append(f"lastMessage {{ {self.message(0)} }}")
        if depth > 0 and rng.random() < 0.15:
            items.append(f"owner {{ {self.user(0)} }}")
        return self.selection("Conversation", items)

    def message(self, depth: int) -> str:
        items = self.pick(MESSAGE_SCALARS)
        if depth > 0 and self.rng.random() < 0.15:
            items.append(f"conversation {{ {self.conversation(0)} }}")
        return self.selection("Message", items)

    def root(self) -> str:
        rng = self.rng
        items = []
        for index in range(rng.randint(1, 2)):
            kind = rng.choice(["users", "users", "conversation", "conversation", "me"])
            alias = f"{self.fresh('r')}: " if index else ""
            if kind == "users":
                search = ""
                if rng.random() < 0.15:
                    search = f', search: "{rng.choice(["user", "ADA", "zz", " "])}"'
                arguments = self.page_arguments("User")
                if search:
                    arguments = f"({arguments[1:-1]}{search})" if arguments else f"({search[2:]})"
                body = self.connection("User", lambda: self.user(2))
                items.append(f"{alias}users{arguments} {{ {body} }}")
            elif kind == "conversation":
                # Now and then a malformed id, or a well-formed one of nothing.
                nothing = ["Q29udmVyc2F0aW9uOm5vcGU=", gid("00000000-0000-4000-8000-000000000000")]
                target = rng.choice(nothing if rng.random() < 0.1 else self.conversation_ids)
                value = self.variable("ID!", target) if rng.random() < 0.5 else f'"{target}"'
                items.append(f"{alias}conversation(id: {value}) {{ {self.conversation(2)} }}")
            else:
                items.append(f"{alias}me {{ {self.user(2)} }}")
        return self.selection("Query", items)


def gid(key: str) -> str:
    return base64.b64encode(f"Conversation:{key}".encode()).decode()


def random_document(
    seed: int, *, cursors: dict[str, list[str]], conversation_ids: list[str]
) -> tuple[str, dict[str, Any]]:
    """A query and its variables, the same for the same seed."""
    document = Document(random.Random(seed), cursors, conversation_ids)
    body = document.root()
    header = f"query Q({', '.join(document.declarations)})" if document.declarations else "query Q"
    text = "\n".join([f"{header} {{ {body} }}", *document.fragments])
    return text, document.variables
