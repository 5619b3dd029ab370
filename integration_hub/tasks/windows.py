"""Backfill windows: a date range cut into calendar chunks (months, ISO weeks or days).

Chunks follow the calendar, not the start date, so the same range always gives the same chunks
and a restarted backfill recognises the ones it already finished by their window.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal, get_args

Chunk = Literal["month", "week", "day"]
CHUNKS: tuple[str, ...] = get_args(Chunk)
MAX_CHUNKS = 5000


def _chunk_end(start: date, chunk: str) -> date:
    if chunk == "day":
        return start
    if chunk == "week":
        return start + timedelta(days=6 - start.weekday())
    first_of_next = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return first_of_next - timedelta(days=1)


def chunk_windows(start: date, end: date, chunk: str = "month") -> list[tuple[date, date]]:
    """[(first day, last day)] covering ``start``..``end`` inclusive, cut at calendar edges."""
    if chunk not in CHUNKS:
        raise ValueError(f"chunk must be one of {', '.join(CHUNKS)}, not {chunk!r}")
    if start > end:
        raise ValueError(f"the range starts ({start}) after it ends ({end})")
    windows = []
    cursor = start
    while cursor <= end:
        last = min(_chunk_end(cursor, chunk), end)
        windows.append((cursor, last))
        if len(windows) > MAX_CHUNKS:
            raise ValueError(f"more than {MAX_CHUNKS} chunks; choose a larger chunk")
        cursor = last + timedelta(days=1)
    return windows
