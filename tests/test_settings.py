"""Settings and the schema's Config: each default is stated once, and every field is handed over."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.settings import RENAMED, Settings
from schema.config import Config


def test_the_defaults_of_the_settings_are_the_configs() -> None:
    assert Settings(secret_key="key").schema_config() == Config(secret_key="key")


def test_every_config_field_comes_from_the_setting_of_its_name() -> None:
    changed: dict[str, Any] = {
        field.name: (not field.default if isinstance(field.default, bool) else 7)
        for field in dataclasses.fields(Config)
        if field.name != "secret_key"
    }
    renamed: dict[str, Any] = {RENAMED.get(name, name): value for name, value in changed.items()}
    settings = Settings(secret_key="key", **renamed)
    assert settings.schema_config() == Config(secret_key="key", **changed)
