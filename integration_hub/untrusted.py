"""Text and documents that come from outside the hub, made safe where the hub reads or shows them.

Four places where data the hub does not control meets something that interprets it:

- **YAML documents** (mapping files from the page and the CLI, setup files): an alias bomb of a
  few kilobytes expands to gigabytes once anything walks it, so :func:`load_yaml` refuses
  anchors and aliases outright (no mapping or setup file needs them), bounds the size before
  parsing and the nesting while parsing.
- **Terminals**: names and reasons from the volunteer app or a target can carry ESC/OSC
  sequences that clear the operator's screen or write their clipboard; :func:`safe_text`
  replaces every control character, and :func:`rich_text` also escapes rich's ``[markup]``.
- **Spreadsheets**: a CSV cell starting with ``=`` is a formula in Excel or LibreOffice;
  :func:`csv_text` neutralises it (OWASP's CSV injection guidance).
- **Markdown**: a chapter called ``[click](https://evil)`` must not become a link in a
  rendered report; :func:`markdown_text` escapes it.

One module so there is one answer to "how is outside text made safe here" for each of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_YAML_BYTES = 1024 * 1024
"""The largest YAML document read at all (setup files; mapping files have a smaller limit)."""
MAX_YAML_DEPTH = 64
"""Nesting deeper than this is refused: the documents the hub reads are a few levels deep, and
PyYAML composes nodes recursively, so ``[[[[...`` would otherwise end in a RecursionError."""

REPLACEMENT = "\ufffd"
"""What a control character becomes: visible, so an operator sees that something was there."""

_CONTROL = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
"""C0, DEL and C1 (0x9B is a one-byte CSI, as dangerous as ESC [)."""
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
"""Bidirectional overrides and isolates: they reorder what a terminal shows ("Trojan Source")."""
_LAYOUT = {ord("\t"), ord("\n"), ord("\r"), ord("\v"), ord("\f")}
"""Whitespace controls become a space: a multi-line message still reads, on one line."""
_TERMINAL_SAFE = {code: (" " if code in _LAYOUT else REPLACEMENT) for code in (*_CONTROL, *_BIDI)}

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Cells a spreadsheet may read as a formula (OWASP: CSV injection)."""
_MARKDOWN_SPECIAL = "\\`*_{}[]()<>#|~!&"
"""Characters that start emphasis, code, links, HTML, headings, tables or entities. App text is
never at the start of a line in the hub's markdown (line breaks are replaced first), so list
and numbered-list markers (``-``, ``+``, ``1.``) need no escaping."""
_MARKDOWN_ESCAPES = {ord(ch): "\\" + ch for ch in _MARKDOWN_SPECIAL}


class DocumentRefused(ValueError):
    """A document from outside that the hub will not read; the message says why, for people."""


# -- YAML --------------------------------------------------------------------------------------
class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors, aliases (so no merge keys either) and with bounded
    nesting. Refusing at the first anchor costs nothing; bounding the expanded size instead would
    still let a document be built and walked before it is found too big."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise DocumentRefused(
                f"YAML anchors and aliases (&name, *name) are not allowed "
                f"(line {event.start_mark.line + 1}); write each value out in full"
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise DocumentRefused(
                f"the document is nested more than {MAX_YAML_DEPTH} levels deep "
                f"(line {event.start_mark.line + 1})"
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(
    text: str | bytes, *, max_bytes: int = MAX_YAML_BYTES, what: str = "the document"
) -> Any:
    """Parse YAML from outside the hub: refused (:class:`DocumentRefused`) when larger than
    ``max_bytes``, when it uses anchors or aliases, when nested too deep, or when not YAML."""
    size = len(text.encode("utf-8")) if isinstance(text, str) else len(text)
    if size > max_bytes:
        raise DocumentRefused(f"{what} is larger than {max_bytes // 1024} KiB")
    try:
        return yaml.load(text, Loader=_PlainLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise DocumentRefused(f"not valid YAML: {exc}") from None


def read_text_file(path: Path, *, max_bytes: int) -> str:
    """A UTF-8 file's text, reading at most ``max_bytes + 1`` bytes (a file that grows, or
    ``/dev/zero``, is refused as too large rather than read whole)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise DocumentRefused(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise DocumentRefused(f"{path} is larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DocumentRefused(f"{path} is not UTF-8 text") from None


# -- terminals ---------------------------------------------------------------------------------
def safe_text(value: object) -> str:
    """``value`` as text a terminal shows literally: every C0/C1 control character, DEL and
    bidirectional override replaced (tabs and line breaks by a space, the rest by U+FFFD).
    ``None`` is empty."""
    if value is None:
        return ""
    return str(value).translate(_TERMINAL_SAFE)


def rich_text(value: object) -> str:
    """:func:`safe_text`, with rich's markup escaped: for outside text inside a string that
    rich renders as markup (``console.print``, table cells), where ``[/]`` would otherwise
    fail the whole print and ``[link=...]`` would make a link."""
    from rich.markup import escape

    return escape(safe_text(value))


# -- report files ------------------------------------------------------------------------------
def csv_text(value: object) -> str:
    """A text cell that no spreadsheet reads as a formula: a leading ``'`` when it starts with
    ``= + - @``, TAB or CR (OWASP). For text columns only: a number the hub computed is written
    as a number, because a ``'`` would turn a genuine negative value into text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def markdown_text(value: object) -> str:
    """Outside text for a markdown document: on one line (:func:`safe_text`) and with every
    character that could start markup backslash-escaped, so it renders as the same text."""
    return safe_text(value).translate(_MARKDOWN_ESCAPES)
