"""Relay global ids: base64 of "Type:key", opaque to clients.

An integer key outside what the id columns hold (`db.formats.is_key`) makes a malformed id,
like `User:abc`: BAD_USER_INPUT, never a query the driver would refuse.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Literal

from db.formats import global_id, is_key
from schema.errors import BadUserInput

TypeName = Literal["User", "Conversation", "Message"]
# No more digits than KEY_MAX has (ten): int() never reads a long string.
INTEGER = re.compile(r"[1-9][0-9]{0,9}")


def to_global_id(type_name: TypeName, key: int | str) -> str:
    return global_id(type_name, key)


def _split(global_id: str) -> tuple[str, str] | None:
    try:
        raw = base64.b64decode(global_id.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    type_name, sep, key = raw.partition(":")
    return (type_name, key) if sep else None


def parse_global_id(global_id: str) -> tuple[TypeName, int | str] | None:
    """(type, key) of a well-formed id of a known type, else None."""
    parts = _split(global_id)
    if parts is None:
        return None
    type_name, key = parts
    if type_name in ("User", "Message"):
        if not INTEGER.fullmatch(key) or not is_key(int(key)):
            return None
        return ("User" if type_name == "User" else "Message"), int(key)
    if type_name == "Conversation":
        try:
            return "Conversation", str(uuid.UUID(key))
        except ValueError:
            return None
    return None


def decode_id(global_id: str, expected: TypeName, *, field: str) -> int | str:
    """The key of an id argument that must name a `expected`; BAD_USER_INPUT otherwise."""
    parsed = parse_global_id(global_id)
    if parsed is None:
        raise BadUserInput.one(field, "not a valid id")
    type_name, key = parsed
    if type_name != expected:
        raise BadUserInput.one(field, f"not the id of a {expected}")
    return key


def decode_user_id(global_id: str, *, field: str = "id") -> int:
    key = decode_id(global_id, "User", field=field)
    assert isinstance(key, int)
    return key


def decode_conversation_id(global_id: str, *, field: str = "id") -> str:
    key = decode_id(global_id, "Conversation", field=field)
    assert isinstance(key, str)
    return key
