"""A search hit's snippet: the best passage of a message, with the matched words as ranges.

Computed in Python from the query's words, the same on both databases (each database's own
highlighter marks text with strings that a message may itself contain, and the two disagree
on what a word is). A word of the message is highlighted when its Snowball English stem (the
stemmer PostgreSQL's 'english' configuration uses) equals a query word's, after lowercasing:
"Running" is highlighted for "runs". Offsets and lengths count characters (Unicode code
points, Python's `str` indices), as the contract's `TextRange` says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

SNIPPET_LENGTH = 200
ELLIPSIS = "…"
_WORD = re.compile(r"[^\W_]+")
# Text kept before the first highlighted word, so that it is read in its sentence.
_LEAD = 40


@dataclass(frozen=True)
class Snippet:
    text: str
    highlights: list[tuple[int, int]]  # (start, length) in characters of `text`


@lru_cache(maxsize=4096)
def stem(word: str) -> str:
    return str(_STEMMER.stemWord(word.lower()))


_STEMMER = snowballstemmer.stemmer("english")


def snippet(content: str, words: Iterable[str]) -> Snippet:
    """At most SNIPPET_LENGTH characters of `content` around the densest run of matched words,
    with "…" where it was cut; the whole message when it is short enough."""
    stems, candidates = _matcher(tuple(words))
    spans = [(m.start(), m.end()) for m in candidates.finditer(content) if stem(m.group()) in stems]
    if len(content) <= SNIPPET_LENGTH:
        return Snippet(content, [(start, end - start) for start, end in spans])
    start = _best_start(content, spans)
    room = SNIPPET_LENGTH - (len(ELLIPSIS) if start > 0 else 0)
    end = min(len(content), start + room)
    if end < len(content):
        end -= len(ELLIPSIS)
        cut = content.rfind(" ", start + room // 2, end)
        end = cut if cut > 0 else end
    prefix = ELLIPSIS if start > 0 else ""
    body = content[start:end]
    text = prefix + body + (ELLIPSIS if end < len(content) else "")
    shift = len(prefix) - start
    highlights = [(s + shift, e - s) for s, e in spans if s >= start and e <= end]
    return Snippet(text, highlights)


@lru_cache(maxsize=1024)
def _matcher(words: tuple[str, ...]) -> tuple[frozenset[str], re.Pattern[str]]:
    """The query words' stems, and a pattern for the words of a message that may have one of
    them: those that begin with a stem's first letter (any case). Stemming keeps a word's first
    letter, so only these are stemmed (a few of a message's words, not all of them)."""
    stems = frozenset(stem(word) for word in words)
    firsts = "".join(sorted({re.escape(found[0]) for found in stems if found}))
    if not firsts:
        return stems, re.compile(r"(?!)")
    return stems, re.compile(rf"(?<![^\W_])[{firsts}][^\W_]*", re.IGNORECASE)


def _best_start(content: str, spans: list[tuple[int, int]]) -> int:
    """Where the window holding the most matched words begins (a little before the first of
    them, at a word's start)."""
    if not spans:
        return 0
    best, best_count = spans[0][0], 0
    window = SNIPPET_LENGTH - 2 * len(ELLIPSIS) - _LEAD
    last = 0  # sliding window: spans[index:last] end within `window` of spans[index]
    for index, (first, _) in enumerate(spans):
        last = max(last, index)
        while last < len(spans) and spans[last][1] <= first + window:
            last += 1
        if last - index > best_count:
            best, best_count = first, last - index
    if best <= _LEAD:
        return 0
    space = content.find(" ", best - _LEAD, best)
    return space + 1 if space >= 0 else best - _LEAD
