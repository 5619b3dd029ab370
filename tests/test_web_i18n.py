"""Bokmål is the interface's default language: every text the pages show must have it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from integration_hub.web import i18n

WEB = Path(i18n.__file__).parent
# _("text") or _('text') in templates, and translate("text", ...) / _("text") in page modules.
LITERAL = re.compile(r"""(?:\b_|\btranslate)\(\s*(?P<q>["'])(?P<text>(?:(?!(?P=q)).)+)(?P=q)""")


def _texts() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in [*WEB.glob("templates/*.html"), *WEB.glob("pages/*.py")]:
        for match in LITERAL.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group("text"), path.name)
    return found


def test_every_text_on_the_pages_has_a_bokmal_translation() -> None:
    catalogue = i18n.catalogue()
    missing = sorted(
        f"{where}: {text}" for text, where in _texts().items() if text not in catalogue
    )
    assert not missing, "no bokmål for:\n" + "\n".join(missing)


def test_translations_keep_every_placeholder() -> None:
    placeholder = re.compile(r"\{(\w+)\}")
    wrong = [
        english
        for english, bokmal in i18n.catalogue().items()
        if set(placeholder.findall(english)) != set(placeholder.findall(bokmal))
    ]
    assert not wrong


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("the e-mail address or the password is wrong", "e-postadressen eller passordet er feil"),
        ("the last run has 3 failed record(s)", "siste kjøring har 3 feilede poster"),
        ("Integrations for {name}", "Integrasjoner for HLF"),
    ],
)
def test_service_messages_translate_by_their_shape(message: str, expected: str) -> None:
    assert i18n.translate(message, "nb", name="HLF") == expected
    assert i18n.translate(message, "en", name="HLF") == message.format(name="HLF")


def test_language_follows_the_choice_then_the_browser() -> None:
    assert i18n.pick_language("en", "nb-NO,nb;q=0.9") == "en"
    assert i18n.pick_language(None, "en-GB,en;q=0.8") == "en"
    assert i18n.pick_language(None, "nn-NO") == "nb"
    assert i18n.pick_language("fr", None) == "nb"


def test_a_placeholder_used_twice_matches_the_same_text() -> None:
    i18n.catalogue.cache_clear()
    i18n._patterns.cache_clear()
    i18n.catalogue()["{a} and {a} again {b}"] = "{a} og {a} igjen {b}"
    try:
        assert i18n.translate("x and x again y", "nb") == "x og x igjen y"
        assert i18n.translate("x and z again y", "nb") == "x and z again y"
    finally:
        i18n.catalogue.cache_clear()
        i18n._patterns.cache_clear()
