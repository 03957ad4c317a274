"""Settings: every `CHATQL_*` variable (and `DATABASE_URL`), read by pydantic-settings.

A setting the GraphQL layer also knows takes its default from `schema.config.Config`, so each
default is written once; `Settings.schema_config` hands those over by name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ops.logs import log_config
from schema.config import Config
from schema.trusted import Mode

DATABASE_DRIVERS = {"sqlite+aiosqlite", "postgresql+asyncpg"}
DATABASE_URL_FORMS = "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST/NAME"
DATA_DIR = Path("data")
# Config fields whose setting has another name: `CHATQL_DEBUG` turns the suggestions on.
RENAMED = {"suggestions": "debug"}


class Settings(BaseSettings):
    """Every setting, read from `CHATQL_*` variables (and `DATABASE_URL`)."""

    model_config = SettingsConfigDict(env_prefix="CHATQL_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DATA_DIR / 'chatql.db'}",
        validation_alias="DATABASE_URL",
    )
    secret_key: str | None = None
    token_ttl: int = Config.token_ttl
    default_page_size: int = Config.default_page_size
    max_page_size: int = Config.max_page_size
    max_import_messages: int = Config.max_import_messages
    # Hardening (issue 5): limits, introspection, suggestions, CORS, persisted queries.
    max_query_depth: int = Config.max_query_depth
    max_aliases: int = Config.max_aliases
    max_tokens: int = Config.max_tokens
    max_query_cost: int = Config.max_query_cost
    max_body_bytes: int = 1_048_576
    introspection: bool = Config.introspection
    debug: bool = Config.suggestions
    cors_origins: Annotated[list[str], NoDecode] = []
    persisted_query_cache_size: int = 1000
    # The shared table of persisted queries: document size, rows, and how long each is kept.
    persisted_query_max_bytes: int = 16_384
    persisted_query_max_rows: int = 5_000
    persisted_query_ttl: int = 2_592_000

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        # A comma-separated list, or JSON.
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
        return value

    argon2_time_cost: int = Config.argon2_time_cost
    argon2_memory_cost: int = Config.argon2_memory_cost
    argon2_parallelism: int = Config.argon2_parallelism
    argon2_memory_budget: int = Config.argon2_memory_budget
    argon2_max_waiting: int = Config.argon2_max_waiting
    login_failures_per_name: int = Config.login_failures_per_name
    login_failures_per_address: int = Config.login_failures_per_address
    logins_per_address: int = Config.logins_per_address
    signups_per_address: int = Config.signups_per_address
    login_failure_window: int = Config.login_failure_window
    # Seconds the change feed keeps a change (issue 13); 0 keeps every change.
    change_retention: int = Field(default=Config.change_retention, ge=0)
    # Streamed answers (issue 15): the most characters a streamed message holds, and the
    # seconds a stream may stay silent before it is marked FAILED.
    max_streamed_chars: int = Field(default=Config.max_streamed_chars, ge=1)
    stream_timeout: float = Field(default=Config.stream_timeout, gt=0)
    trust_proxy: bool = False
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # A ping before every checkout costs a round trip per session; without it a connection
    # the database dropped fails one request, and the pool then replaces its connections.
    db_pre_ping: bool = False
    log_level: str = "INFO"
    # Events a subscriber may fall behind by before its subscription is ended.
    subscription_queue_size: int = 1000
    # WebSockets: seconds to wait for `connection_init` (both protocols close with 4408), and
    # operations one connection may have open at once (RATE_LIMITED beyond).
    ws_init_timeout: float = 10.0
    ws_max_operations: int = 100
    # Server-Sent Events: seconds between the comment lines that keep a quiet stream open.
    sse_heartbeat: float = Field(default=15.0, gt=0)
    # How often the subscriptions of deactivated users are looked for and ended.
    subscription_recheck_seconds: float = 30.0
    # On SIGTERM, how long in-flight requests may take to finish.
    shutdown_timeout: int = 30
    # auto: JSON lines unless stdout is a terminal.
    log_format: Literal["auto", "json", "text"] = "auto"
    ready_timeout: float = 2.0
    # Faults (issue 11): seconds a statement, a wait for a pooled connection and a whole HTTP
    # request may take before the client is answered SERVICE_UNAVAILABLE (503); 0: no limit.
    db_statement_timeout: float = 10.0
    db_pool_timeout: float = 5.0
    request_timeout: float = 30.0
    # Read by `create-admin` alone; unset, it asks twice at a terminal (and refuses elsewhere).
    admin_password: str | None = None
    # For operators (issue 18): trusted documents (off, audit, enforce; `trust` loads them)
    # and cost budgets per viewer (0: off).
    trusted_documents: Mode = Mode.OFF
    trusted_documents_admin_bypass: bool = False
    cost_budget_per_minute: float = Field(default=0, ge=0)
    cost_burst: float = Field(default=0, ge=0)
    cost_mutation_minimum: int = Field(default=10, ge=0)

    def log_config(self, *, stderr: bool = False) -> dict[str, Any]:
        """Logs on stdout when serving; other commands keep stdout for their output."""
        stream = sys.stderr if stderr else sys.stdout
        as_json = self.log_format == "json" or (self.log_format == "auto" and not stream.isatty())
        return log_config(level=self.log_level, json=as_json, stderr=stderr)

    # Performance (see bench/README.md). Each can be turned off to compare.
    query_plan: bool = True
    document_cache: int = 256
    gc_threshold: int = 700

    # Resource bounds and operators' access (issue 11).
    # Seconds a client has to send a whole request head (transport/http_protocol.py).
    header_timeout: float = Field(default=10.0, gt=0)
    # Open connections and WebSockets per process above which requests are answered 503.
    max_connections: int | None = Field(default=None, ge=1)
    # When set, /metrics answers only `Authorization: Bearer <token>`.
    metrics_token: str | None = Field(default=None, min_length=1)

    # Tracing (issue 18, `app/tracing.py`; the `tracing` extra): on when either is set. The
    # exporter reads the endpoint and the other `OTEL_*` variables itself.
    tracing: bool = False
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )

    @model_validator(mode="after")
    def _mutation_minimum_fits(self) -> Settings:
        if budgets_on(self) and self.cost_mutation_minimum > self.cost_burst:
            raise ValueError(
                f"CHATQL_COST_MUTATION_MINIMUM ({self.cost_mutation_minimum}) is more than "
                f"CHATQL_COST_BURST ({self.cost_burst:g}): no mutation could ever be paid"
            )
        return self

    def tracing_on(self) -> bool:
        return self.tracing or bool(self.otel_exporter_otlp_endpoint)

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        try:
            driver = make_url(value).drivername
        except ArgumentError:
            raise ValueError(f"not a database URL; {DATABASE_URL_FORMS}") from None
        if driver not in DATABASE_DRIVERS:
            raise ValueError(f"{driver!r} is not supported; {DATABASE_URL_FORMS}")
        return value

    def resolved_secret_key(self) -> str:
        """The configured key, else one generated once and kept in the data folder."""
        if self.secret_key:
            return self.secret_key
        path = DATA_DIR / "secret_key"
        if not path.exists():
            # Written aside, then linked into place: a racing process sees the whole key or none.
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".secret_key.{os.getpid()}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return path.read_text().strip()

    def schema_config(self) -> Config:
        """The schema's `Config`: each of its fields from the setting of the same name (or
        the one in `RENAMED`), the secret key resolved."""
        values = {
            field.name: getattr(self, RENAMED.get(field.name, field.name))
            for field in dataclasses.fields(Config)
        }
        if budgets_on(self):
            # An operation dearer than a full bucket could never be paid (schema.budgets).
            values["max_query_cost"] = min(self.max_query_cost, int(self.cost_burst))
        return Config(**{**values, "secret_key": self.resolved_secret_key()})


def budgets_on(settings: Settings) -> bool:
    return bool(settings.cost_budget_per_minute and settings.cost_burst)
