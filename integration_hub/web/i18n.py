"""Norwegian bokmål (the default) and English.

Templates and pages write English source text, ``_("Sign in")``; each screen's
``translations/<screen>.yaml`` maps that text to bokmål. Messages from the services (errors,
mapping warnings) go through the same catalogue: an entry with ``{placeholders}`` also matches
a message of that shape, so "Xledger has no account 9999" finds "{target} has no account {code}".
A test checks that every text the templates use has a bokmål entry.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

LANGUAGES = {"nb": "Norsk (bokmål)", "en": "English"}
DEFAULT_LANGUAGE = "nb"
CATALOGUE_DIR = Path(__file__).parent / "translations"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@lru_cache(maxsize=1)
def catalogue() -> dict[str, str]:
    """English -> bokmål from every ``translations/*.yaml`` (a duplicate key is an error)."""
    merged: dict[str, str] = {}
    for path in sorted(CATALOGUE_DIR.glob("*.yaml")):
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for english, bokmal in entries.items():
            if english in merged and merged[english] != bokmal:
                raise ValueError(f"{path.name}: {english!r} is translated differently elsewhere")
            merged[str(english)] = str(bokmal)
    return merged


MAX_MESSAGE_CHARS = 1000
"""Longer messages are cut (with an ellipsis) before they are translated or shown: a message
can come from a target, and no sentence a person reads on a page needs more."""


class _Shape:
    """A catalogue entry with ``{placeholders}`` as the shape of messages it translates.

    Matched with ``str.find``, not a regular expression: a pattern with several lazy groups
    backtracks polynomially on text an attacker can shape (a 64 KB message took 12.8 s). Each
    literal part is found at its leftmost place after at least one character of the placeholder
    before it, which is where a lazy regex would find it too, and the whole match is linear. A
    placeholder used twice must capture the same text both times.
    """

    def __init__(self, english: str) -> None:
        parts = _PLACEHOLDER.split(english)
        self.literals: list[str] = parts[0::2]  # one more than there are placeholders
        self.names: list[str] = parts[1::2]

    def match(self, text: str) -> dict[str, str] | None:
        first, *middle, last = self.literals
        end = len(text) - len(last)
        if not (text.startswith(first) and text.endswith(last)) or end < len(first):
            return None
        starts, position = [], len(first)
        for literal in middle:
            found = text.find(literal, position + 1, end - 1)
            if found < 0:
                return None
            starts.append((position, found))
            position = found + len(literal)
        if position >= end:
            return None
        starts.append((position, end))
        captured: dict[str, str] = {}
        for name, (start, stop) in zip(self.names, starts, strict=True):
            value = text[start:stop]
            if captured.setdefault(name, value) != value:
                return None
        return captured


@lru_cache(maxsize=1)
def _patterns() -> list[tuple[_Shape, str]]:
    return [(_Shape(english), bokmal) for english, bokmal in catalogue().items() if "{" in english]


def bounded(text: str) -> str:
    """``text`` cut to :data:`MAX_MESSAGE_CHARS` with an ellipsis."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 1] + "…"


def translate(text: str, language: str, **params: object) -> str:
    """``text`` in ``language``, with ``params`` filled in; a message longer than
    :data:`MAX_MESSAGE_CHARS` is cut first."""
    text = bounded(text)
    if language != "nb":
        return text.format(**params) if params else text
    bokmal = catalogue().get(text)
    if bokmal is not None:
        return bokmal.format(**params) if params else bokmal
    for shape, template in _patterns():
        found = shape.match(text)
        if found is not None:
            return template.format(**found)
    return text.format(**params) if params else text


def pick_language(requested: str | None, accept_language: str | None) -> str:
    """The first of the explicit choice and the browser's Accept-Language that we speak."""
    if requested in LANGUAGES:
        return requested
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag[:2] in ("nb", "no", "nn"):
            return "nb"
        if tag[:2] == "en":
            return "en"
    return DEFAULT_LANGUAGE
