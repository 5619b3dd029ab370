"""Masks for pages and the CLI, mask detection for forms, and redaction of free text.

These never touch the key ring: showing that a secret is set needs only the stored hint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import SecretStr

BULLET = "\u2022"
REDACTED = "[REDACTED]"
HINT_MIN_LENGTH = 12
"""Secrets shorter than this get no hint: four characters of an 8-character password is half."""
HINT_LENGTH = 4
MIN_REDACT_LENGTH = 4
"""Shorter values are not redacted: replacing every "ab" in a text hides nothing and garbles all."""

_MASK_RE = re.compile(rf"{BULLET}+.{{0,{HINT_LENGTH}}}", re.DOTALL)


def hint_for(plaintext: str) -> str:
    """The last 4 characters, kept beside the ciphertext for the mask; empty for short secrets."""
    return plaintext[-HINT_LENGTH:] if len(plaintext) >= HINT_MIN_LENGTH else ""


def mask(hint: str) -> str:
    """``••••••3f9a`` (6 bullets + hint), or 8 bullets when there is no hint."""
    return BULLET * 6 + hint if hint else BULLET * 8


def is_mask(value: str) -> bool:
    """True for what a form posts back unchanged: bullets, then at most 4 other characters.

    Callers skip such values so that saving a form never overwrites a secret with its mask.
    """
    return bool(_MASK_RE.fullmatch(value.strip()))


def redact(text: str, secrets: Iterable[str | SecretStr | None]) -> str:
    """Replace every occurrence of each secret (4 characters or longer) with ``[REDACTED]``.

    Longer secrets go first, so a secret containing another one is not left half visible.
    """
    values = {
        s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets if s is not None
    }
    for value in sorted((v for v in values if len(v) >= MIN_REDACT_LENGTH), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
