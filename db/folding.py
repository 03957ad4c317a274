"""Caseless keys: one Unicode case folding, computed in Python, for both databases.

SQLite's `lower()`, `LIKE` and `NOCASE` fold ASCII alone, PostgreSQL's follow the database's
locale, and neither knows full case folding (`ß` and `ss`). So the data layer never asks a
database to fold: every text compared caselessly (usernames, emails, full names) is stored next
to its key, `fold(text)`, and queries compare keys with plain equality or substring
containment, which mean the same on every database.
"""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """The caseless key of `text`: NFKC, then full Unicode case folding (`str.casefold`).

    Texts that differ only in case (`É`/`é`, `ß`/`SS`), in canonical composition (`é` and
    `e` + U+0301) or in compatibility forms (full-width letters, the ligature U+FB01 for `fi`)
    have the same key; a text contains a needle caselessly when `fold(needle)` is a substring
    of `fold(text)`. NFKC comes first, as in Unicode's caseless matching (The Unicode Standard,
    3.13, D145-D146), so that canonically equivalent texts fold alike; compatibility forms fold
    too, so that look-alike spellings of one name cannot register twice (PRECIS does the same
    for usernames, RFC 8265).
    """
    return unicodedata.normalize("NFKC", text).casefold()
