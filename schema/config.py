"""What the GraphQL layer needs to know of the settings, handed over by `server.py`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    secret_key: str
    token_ttl: int = 604_800
    default_page_size: int = 20
    max_page_size: int = 100
    max_import_messages: int = 1000
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65_536
    argon2_parallelism: int = 4
    login_failures_per_name: int = 10
    login_failures_per_address: int = 100
    login_failure_window: int = 900
