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


@lru_cache(maxsize=1)
def _patterns() -> list[tuple[re.Pattern[str], str]]:
    patterns = []
    for english, bokmal in catalogue().items():
        if "{" not in english:
            continue
        regex, named = "", set()
        for i, part in enumerate(_PLACEHOLDER.split(english)):
            if i % 2 == 0:
                regex += re.escape(part)
            else:  # a placeholder used twice must match the same text both times
                regex += f"(?P={part})" if part in named else f"(?P<{part}>.+?)"
                named.add(part)
        patterns.append((re.compile(f"^{regex}$", re.DOTALL), bokmal))
    return patterns


def translate(text: str, language: str, **params: object) -> str:
    """``text`` in ``language``, with ``params`` filled in."""
    if language != "nb":
        return text.format(**params) if params else text
    bokmal = catalogue().get(text)
    if bokmal is not None:
        return bokmal.format(**params) if params else bokmal
    for pattern, template in _patterns():
        found = pattern.match(text)
        if found:
            return template.format(**found.groupdict())
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
