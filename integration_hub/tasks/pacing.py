"""Pacing: calls to one target system stay within its rate limit across every concurrent run.

Why the hub database and not Prefect's global concurrency ``rate_limit``: the hub database is the
one thing every run shares in every way the hub runs (embedded ``integrations sync``, which starts
its own temporary Prefect server per process, ``integrations serve``, workers on many hosts), and
a limit kept there needs no Prefect at all, so the load engine, connection tests and plain-function
tests work the same. The adapters stay unaware: the load engine calls a ``before_request`` hook,
and :class:`Pacer` is what the export pipeline plugs in there.

How: one row per target (``hub_rate_limits``) holds the next free slot. Taking a slot is an
optimistic compare-and-set (read the slot, move it on by one interval only if nobody else did),
then sleeping until the slot's time. Slots are spaced ``period / requests`` apart, so no window of
``period`` seconds ever holds more than ``requests`` slots, whichever process or host took them.
Hosts are assumed to keep their clocks in sync (NTP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from integration_hub.adapters.base import RateLimit
from integration_hub.db import hub_session
from integration_hub.models import RateLimitSlot

MAX_TRIES = 100
"""Rate limits are each type's fact (:attr:`Adapter.rate_limit`). They are kept per target host,
shared by every organisation's runs: conservative where a target counts per tenant or token (as
Business Central does), right where it counts per caller address, and the only choice when a
target does not say."""


def target_key(type_key: str, base_url: object | None) -> str:
    """``xledger:www.xledger.net``: one limit per target host (no path, query or credentials)."""
    host = urlsplit(str(base_url)).netloc.rpartition("@")[2] if base_url else ""
    return f"{type_key}:{host or 'default'}"[:200]


def _now_us() -> int:
    return time.time_ns() // 1000


def take_slot(key: str, limit: RateLimit, *, clock: Callable[[], int] = _now_us) -> int:
    """Reserve the next free slot for ``key``; returns its time in microseconds since the epoch."""
    table = RateLimitSlot.__table__
    interval = limit.interval_us
    for _ in range(MAX_TRIES):
        now = clock()
        with hub_session() as session:
            current = session.execute(
                select(table.c.next_slot_us).where(table.c.key == key)
            ).scalar_one_or_none()
        if current is None:
            try:
                with hub_session() as session:
                    session.execute(insert(table).values(key=key, next_slot_us=now + interval))
                return now
            except IntegrityError:
                continue  # another run created it first
        slot = max(now, current)
        with hub_session() as session:
            moved = session.execute(
                update(table)
                .where(table.c.key == key, table.c.next_slot_us == current)
                .values(next_slot_us=slot + interval)
            )
        if moved.rowcount == 1:
            return slot
    raise RuntimeError(f"could not take a request slot for {key} (too much contention)")


class Pacer:
    """Waits for a slot before each request to one target; plug into ``load_lines``."""

    def __init__(
        self,
        key: str,
        limit: RateLimit,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], int] = _now_us,
    ) -> None:
        self.key = key
        self.limit = limit
        self._sleep = sleep
        self._clock = clock
        self.slots: list[int] = []

    def __call__(self) -> None:
        slot = take_slot(self.key, self.limit, clock=self._clock)
        self.slots.append(slot)
        wait_us = slot - self._clock()
        if wait_us > 0:
            self._sleep(wait_us / 1_000_000)
