"""Input rules of the contract. Each check returns a reason, or None when the value is fine."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime

from db.conversations import sorted_tags
from db.folding import fold
from schema.errors import BadUserInput

HAS_NUL = "must not contain NUL characters (U+0000)"
NOT_UNICODE = "must be valid Unicode text"
SURROGATE = re.compile("[\ud800-\udfff]")
USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,50}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


# Characters that show nothing, besides whitespace and the format characters (category Cf:
# U+200B-U+200D, U+2060-U+2064, U+FEFF, ...): the Hangul fillers.
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")
# Format characters that direct right-to-left text (marks, embeddings, overrides, isolates):
# kept at the ends, where they set how the text around them reads, but nothing on their own.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shows_nothing(character: str) -> bool:
    return (
        character.isspace()
        or character in _FILLERS
        or (unicodedata.category(character) == "Cf" and character not in _BIDI)
    )


def trimmed(value: str) -> str:
    """`value` without what shows nothing at either end: whitespace (Unicode's, as
    `str.strip`), format characters (Cf: zero-width spaces and joiners, the BOM, ...) but the
    ones that direct right-to-left text, and Hangul fillers. A value of nothing else, those
    direction marks included, is "" (blank). Inner characters are kept (a ZWJ inside an emoji
    sequence). The one trimming rule of every text input that is trimmed (titles, tags and
    the tag filter, full names, emails, logins), so "blank after trimming" means the same
    everywhere and, done here in Python, on both databases."""
    if value.isascii():
        return value.strip()
    start, end = 0, len(value)
    while start < end and _shows_nothing(value[start]):
        start += 1
    while end > start and _shows_nothing(value[end - 1]):
        end -= 1
    if start < end and value[start] in _BIDI:
        rest = value[start:end]
        if all(c in _BIDI or _shows_nothing(c) for c in rest):
            return ""
    return value[start:end]


def text_problem(value: str) -> str | None:
    """Why no database can keep the text, if none can: a NUL (PostgreSQL refuses it), or a
    lone surrogate (UTF-8 has none; JSON allows "\\ud800", and Python keeps it as it is)."""
    if "\x00" in value:
        return HAS_NUL
    if not value.isascii() and SURROGATE.search(value):
        return NOT_UNICODE
    return None


def _text(value: str, *, low: int, high: int) -> str | None:
    problem = text_problem(value)
    if problem:
        return problem
    if not low <= len(value) <= high:
        return f"must be {low}-{high} characters" if low else f"must be at most {high} characters"
    return None


def username_problem(value: str) -> str | None:
    if not USERNAME.fullmatch(value):
        return "must be 3-50 letters, digits, '_', '.' or '-'"
    return None


def email_problem(value: str) -> str | None:
    problem = _text(value, low=3, high=100)
    if problem:
        return problem
    return None if EMAIL.fullmatch(value) else "must be a valid email address"


def password_problem(value: str) -> str | None:
    return _text(value, low=8, high=128)


def full_name_problem(value: str) -> str | None:
    return _text(value, low=0, high=100)


def title_problem(value: str) -> str | None:
    return _text(value, low=1, high=200)


def tag_problem(value: str) -> str | None:
    """A tag, already trimmed (RULES.md, "Organize")."""
    return _text(value, low=1, high=50)


MAX_TAGS = 20


def clean_tags(tags: Sequence[str]) -> list[str]:
    """The set `tags` gives: each `trimmed` (1-50 characters; a bad one is field `tags.N`), at
    most 20, one per caseless key (`db.folding.fold`, the first spelling given kept), sorted
    case-insensitively. Every problem is reported at once (BAD_USER_INPUT). What
    `updateConversation` and `python server.py import` store."""
    if len(tags) > MAX_TAGS:
        raise BadUserInput.one("tags", f"at most {MAX_TAGS} tags")
    cleaned = [trimmed(tag) for tag in tags]
    raise_for({f"tags.{index}": tag_problem(tag) for index, tag in enumerate(cleaned)})
    kept: dict[str, str] = {}
    for tag in cleaned:
        kept.setdefault(fold(tag), tag)
    return sorted_tags(list(kept.values()))


def content_problem(value: str) -> str | None:
    return _text(value, low=1, high=32_000)


def stored_content_problem(value: str, *, most: int) -> str | None:
    """A message's content as chatql may hold it, and so export it: a streamed answer may be
    empty (started, never appended to) or as long as `most` (`CHATQL_MAX_STREAMED_CHARS`)."""
    return _text(value, low=0, high=max(most, 32_000))


def client_id_problem(value: str) -> str | None:
    return _text(value, low=1, high=64)


def model_problem(value: str | None) -> str | None:
    """The model that wrote a message: at most 100 chars (issue 15)."""
    return None if value is None else _text(value, low=1, high=100)


MAX_TOKENS = 100_000_000


def tokens_problem(value: int) -> str | None:
    return None if 0 <= value <= MAX_TOKENS else f"must be 0-{MAX_TOKENS:,}"


def created_at_problem(value: datetime | None, *, now: datetime) -> str | None:
    """An imported message's time: not after the import (one dated later would stay the
    conversation's last message whatever is written after it)."""
    if value is not None and value > now:
        return "must not be in the future"
    return None


def login_problem(value: str) -> str | None:
    # A username is at most 50 characters and an email at most 100: longer matches nobody.
    return _text(value, low=1, high=100)


def login_password_problem(value: str) -> str | None:
    return _text(value, low=1, high=128)


def raise_for(problems: Mapping[str, str | None]) -> None:
    """Raise one BAD_USER_INPUT naming every bad field at once."""
    found = {name: reason for name, reason in problems.items() if reason}
    if found:
        summary = "; ".join(f"{name}: {reason}" for name, reason in found.items())
        raise BadUserInput(found, f"Invalid input: {summary}")
