"""The ORM models. Relationships are declared both ways and never load lazily."""

from __future__ import annotations

import enum
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_conversation_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite keeps no zone, so values are stored as naive UTC and given their zone back on the
    way out; PostgreSQL stores `timestamptz`. Either way Python only ever sees aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give them a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        # asyncpg already returns `timestamptz` as aware UTC datetimes: no per-value Python
        # call on PostgreSQL (a Q1 page reads 10,500 of them).
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.__class__ is datetime and value.tzinfo is UTC:
            return value  # what asyncpg gives: already aware UTC (the common case, made cheap)
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MessageRole(enum.StrEnum):
    USER = "USER"
    ASSISTANT = "ASSISTANT"
    SYSTEM = "SYSTEM"


class MessageStatus(enum.StrEnum):
    COMPLETE = "COMPLETE"
    STREAMING = "STREAMING"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Base(DeclarativeBase):
    pass


def new_account_key() -> str:
    return secrets.token_urlsafe(16)


class User(Base):
    """An account. `username`, `email` and `full_name` are kept as given; each has its caseless
    key (`db.folding.fold`) beside it, which uniqueness and lookups compare. `account_key` is
    random and fixed for the account's life: tokens carry it, so a token names this account and
    no later one, whatever id that one is given."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(100))
    full_name: Mapped[str | None] = mapped_column(String(100))
    username_key: Mapped[str] = mapped_column(Text)
    email_key: Mapped[str] = mapped_column(Text)
    full_name_key: Mapped[str | None] = mapped_column(Text)
    account_key: Mapped[str] = mapped_column(String(32), default=new_account_key)
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    conversations: Mapped[list[Conversation]] = relationship(
        back_populates="owner", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        Index("uq_users_username_key", username_key, unique=True),
        Index("uq_users_email_key", email_key, unique=True),
        # Ids reach clients and tokens: SQLite must never hand out a deleted row's id again.
        {"sqlite_autoincrement": True},
    )


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_conversation_id)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The JSON array of the tags as written, sorted (`conversation_tags` has them by key too).
    tags: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # The read mark (migration 0009): the message and its `created_at`, kept by value.
    last_read_message_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The newest message of the active branch (migration 0011, `db.branches`); null when the
    # conversation has none. No foreign key: the writes that delete messages move it.
    current_leaf_id: Mapped[int | None] = mapped_column(Integer, nullable=True)

    owner: Mapped[User] = relationship(back_populates="conversations", lazy="raise")
    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        Index(
            "ix_conversations_user_updated",
            user_id,
            updated_at.desc(),
            id.desc(),
        ),
    )


class ConversationTag(Base):
    """One tag of a conversation, with its caseless key (`db.folding.fold`): the tag filter
    and `User.tags` read these; the conversation's `tags` column has the same set."""

    __tablename__ = "conversation_tags"

    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    tag_key: Mapped[str] = mapped_column(Text)
    tag: Mapped[str] = mapped_column(String(50))

    __table_args__ = (
        PrimaryKeyConstraint("conversation_id", "tag_key"),
        Index("ix_conversation_tags_key", tag_key, conversation_id),
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[MessageRole] = mapped_column(
        Enum(MessageRole, name="message_role", native_enum=False, length=16)
    )
    content: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # 1 as first written, one more per edit; the earlier contents are `MessageRevision` rows.
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Streaming (issue 15, `db.streams`): COMPLETE unless written by startMessage.
    # Defaults are the database's alone: writes that name none of these columns (imports,
    # tests writing the rows of an older schema) stay valid.
    status: Mapped[str] = mapped_column(String(16), server_default="COMPLETE")
    model: Mapped[str | None] = mapped_column(String(100), nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The last append's seq and the characters appended so far; the time of the last append.
    stream_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    stream_length: Mapped[int] = mapped_column(Integer, server_default="0")
    stream_touched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Branches (issue 15, `db.branches`): the message before it on its branch (null for a
    # first message; no foreign key: deleting a message hands its children its own parent),
    # and whether it is on the conversation's active branch.
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_branch: Mapped[bool] = mapped_column(Boolean, server_default=true())

    conversation: Mapped[Conversation] = relationship(back_populates="messages", lazy="raise")

    __table_args__ = (
        Index("ix_messages_conversation_created", conversation_id, created_at, id),
        # The active branch's pages, counts and last message (a page costs O(page)).
        Index(
            "ix_messages_branch",
            conversation_id,
            created_at,
            id,
            postgresql_where=text("on_branch"),
            sqlite_where=text("on_branch = 1"),
        ),
        # Children and siblings (first messages: parent_id IS NULL within the conversation).
        Index("ix_messages_parent", conversation_id, parent_id),
        Index(
            "ix_messages_streaming",
            id,
            postgresql_where=text("status = 'STREAMING'"),
            sqlite_where=text("status = 'STREAMING'"),
        ),
        UniqueConstraint("conversation_id", "client_id", name="uq_messages_conversation_client"),
        {"sqlite_autoincrement": True},
    )


class MessageChunk(Base):
    """One append of a streamed message: `delta` is the text append `seq` (1, 2, ...) added.
    Rows are only ever inserted; the message's content while it streams is their
    concatenation in `seq` order (`db.streams`)."""

    __tablename__ = "message_chunks"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    delta: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (PrimaryKeyConstraint(message_id, seq),)


class LoginFailure(Base):
    """One login or sign-up attempt, counted per login key and per client address over a
    window (see `schema.login_limits`). `kind` is `failure` (a login whose password has not
    proven right, or was wrong), `login` (one that succeeded) or `signup`; the table kept
    failures alone before sign-ups and successful logins were limited too."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(100))
    client_address: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16), default="failure", server_default="failure")

    __table_args__ = (
        Index("ix_login_failures_login_at", login, failed_at),
        Index("ix_login_failures_address_at", client_address, failed_at),
        # Every attempt prunes what has left the window.
        Index("ix_login_failures_at", failed_at),
    )


class PersistedQuery(Base):
    """An automatic persisted query, shared by every process on one database."""

    __tablename__ = "persisted_queries"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    query: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageRevision(Base):
    """An earlier content of an edited message: revision `revision` as it was written at
    `created_at` (the current content stays on the message itself). Gone with the message."""

    __tablename__ = "message_revisions"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (PrimaryKeyConstraint(message_id, revision),)


class Feed(Base):
    """The head of one user's change feed (see `db.changes`): `head` is the position of the
    last change written, `pruned_through` the last position retention has removed (every
    change at or before it may be gone)."""

    __tablename__ = "feeds"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    head: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Change(Base):
    """One change in a user's feed, at `position` (1, 2, ... per user, in commit order).
    `conversation_id`/`message_id` are not foreign keys: a change outlives what it names."""

    __tablename__ = "changes"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[str] = mapped_column(String(36))
    message_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        PrimaryKeyConstraint(user_id, position),
        # Retention deletes by age.
        Index("ix_changes_at", at),
    )


class TrustedManifest(Base):
    """A named set of trusted documents (issue 18), loaded by `python server.py trust`; a
    release adds its manifest and retires an older one. `loaded_at` changes on every load, so
    the manifests' names and times are the version each process polls (`schema.trusted`)."""

    __tablename__ = "trusted_manifests"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrustedDocument(Base):
    """One operation of a manifest: `document_id` as the manifest names it (Apollo's sha256,
    or the id Relay wrote), `sha256` of its text (what APQ-style requests send)."""

    __tablename__ = "trusted_documents"

    manifest: Mapped[str] = mapped_column(
        String(100), ForeignKey("trusted_manifests.name", ondelete="CASCADE"), primary_key=True
    )
    document_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(Text)
    operation_name: Mapped[str | None] = mapped_column(String(200), nullable=True)


class CostBudget(Base):
    """The shared token bucket of one budget key (`user:<id>`, `address:<ip>`): `tokens` as
    of `updated` (seconds since the epoch), and `spent`, everything every process has spent
    of it. Each process reconciles its own spending into it (`schema.budgets`)."""

    __tablename__ = "cost_budgets"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)
    spent: Mapped[float] = mapped_column(Float)
