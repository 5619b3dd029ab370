"""What a sign-in password must be (NIST SP 800-63B, section 5.1.1.2, "memorized secrets").

Length is what makes a password hard to guess, so the rules are a minimum and a maximum length
and a refusal of what guessers try first: the most common passwords, the person's own e-mail
address, and a key held down or run along the keyboard. There are deliberately no rules about
mixing character classes and no forced expiry: NIST found that they make people pick
predictable variations ("Sommer2024!") instead of stronger passwords.

``common_passwords.txt`` (next to this module) was written for this project from well-known
patterns, not downloaded: the classic top passwords of published breach lists, keyboard walks,
common English and Norwegian words with digits, years and "!", Norwegian places, clubs, months
and this hub's own names. It is not exhaustive; :func:`password_problems` also refuses a listed
word with digits or symbols added at the end or simple letter-for-symbol swaps.
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache
from pathlib import Path

MIN_LENGTH = 12
MAX_LENGTH = 256
"""Long enough for a passphrase; the bound keeps hashing a pasted novel off the table."""
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")
_TRAILING_PADDING = re.compile(r"[\d\W_]+$")
_LEET = str.maketrans("@431!0$57", "aaeiioost")
_RUNS = re.compile(r"(.)\1+")
_MIN_NAME_PART = 4
"""A shorter local part ("ola", "it") is too common a fragment to refuse wherever it appears."""


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The vendored list, lower case (read once per process)."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def password_problems(password: str, email: str) -> list[str]:
    """Every reason ``password`` may not be used by the person signing in as ``email``.

    Empty when it is fine. Each reason is a sentence the CLI and the pages show as it is (and
    translate), so a person can fix all of them in one round.
    """
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"the password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"the password may have at most {MAX_LENGTH} characters")
    lowered = password.casefold()
    if _is_common(lowered):
        problems.append(
            "the password is one of the most common passwords; choose a longer phrase of your own"
        )
    if _contains_email(lowered, email.strip().casefold()):
        problems.append("the password must not contain your e-mail address or its name part")
    if _only_repeats_or_runs(lowered):
        problems.append("the password is only a repeated or sequential run of characters")
    return problems


def _is_common(lowered: str) -> bool:
    """Listed as it is, with digits or symbols appended, or with symbols for letters."""
    base = _TRAILING_PADDING.sub("", lowered)
    candidates = {lowered, base, lowered.translate(_LEET), base.translate(_LEET)}
    candidates |= {candidate.replace(" ", "") for candidate in candidates}
    return not candidates.isdisjoint(common_passwords())


def _contains_email(lowered: str, email: str) -> bool:
    if not email:
        return False
    local = email.split("@", 1)[0]
    return email in lowered or (len(local) >= _MIN_NAME_PART and local in lowered)


def _only_repeats_or_runs(lowered: str) -> bool:
    """One character held down, a short group repeated ("abcabc..."), or one run along the
    alphabet or the digits in either direction ("123456789012", "zyxw...", "112233...")."""
    if not lowered:
        return False
    for size in range(1, len(lowered) // 2 + 1):
        if len(lowered) % size == 0 and lowered[:size] * (len(lowered) // size) == lowered:
            return True
    collapsed = _RUNS.sub(r"\1", lowered)
    steps = {_step(a, b) for a, b in itertools.pairwise(collapsed)}
    return len(collapsed) >= 2 and steps in ({1}, {-1})


def _step(a: str, b: str) -> int | None:
    """+1 or -1 between neighbours on the alphabet or the digits (9 -> 0 wraps), else None."""
    if a.isdigit() and b.isdigit():
        difference = (int(b) - int(a)) % 10
        return {1: 1, 9: -1}.get(difference)
    difference = ord(b) - ord(a)
    return difference if difference in (1, -1) and a.isalpha() and b.isalpha() else None
