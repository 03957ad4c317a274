"""What the GraphQL layer needs to know of the settings, handed over by `app.settings`.

Each default here is the default of the `CHATQL_*` setting of the same name too: `Settings`
takes it from this class, and `Settings.schema_config` fills every field by name.
"""

from __future__ import annotations

from dataclasses import dataclass


def config_of(context: object) -> Config:
    """The context's config; for code run without our context (a test executing the schema
    directly), the defaults of every setting but the secret, which nothing there needs."""
    config = getattr(context, "config", None)
    return config if isinstance(config, Config) else Config(secret_key="")


@dataclass(frozen=True)
class Config:
    secret_key: str
    token_ttl: int = 604_800
    default_page_size: int = 20
    max_page_size: int = 100
    max_import_messages: int = 1000
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_query_cost: int = 50_000
    introspection: bool = True
    # "Did you mean ...?" in error messages: helpful in development, a map of the schema otherwise.
    suggestions: bool = False
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65_536
    argon2_parallelism: int = 4
    # KiB for hashes running at once, per process (over it, hashes wait their turn), like the
    # memory cost: 256 MiB lets 4 hashes of 64 MiB run at once.
    argon2_memory_budget: int = 262_144
    argon2_max_waiting: int = 32
    login_failures_per_name: int = 10
    login_failures_per_address: int = 100
    logins_per_address: int = 300
    signups_per_address: int = 50
    login_failure_window: int = 900
    # Seconds the change feed keeps a change; 0 keeps every change.
    change_retention: int = 2_592_000
    # Streamed answers (issue 15): characters a streamed message may hold, and seconds a
    # stream may go without an append before the sweep marks it FAILED.
    max_streamed_chars: int = 200_000
    stream_timeout: float = 300.0
