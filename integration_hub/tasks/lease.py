"""The export lease: at most one export per integration at a time, across processes and hosts.

A row in ``hub_export_leases`` with a unique ``integration_id`` is the lock. The run that inserts
it holds it; a heartbeat thread keeps pushing ``expires_at`` forward while the run lives, so a run
that crashed (killed process, lost host) leaves a lease that simply expires, and the next run takes
it over with a conditional update. Both steps are single statements the database decides
atomically, on SQLite and PostgreSQL alike; nothing depends on Prefect or on one machine.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from integration_hub.db import hub_session
from integration_hub.models import ExportLease, utcnow

log = logging.getLogger(__name__)

LEASE_TTL_S = 120.0
"""How long a lease outlives its last heartbeat: a crashed run blocks others at most this long."""
HEARTBEAT_S = 30.0
LEASE_WAIT_S = 60.0
"""How long a second trigger waits for the running export before it is refused."""
POLL_S = 1.0
DISPLAY_ZONE = ZoneInfo("Europe/Oslo")


def owner_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


@dataclass(frozen=True)
class Holder:
    """Who holds an integration's lease: the hub run, its process and since when."""

    integration_id: int
    run_id: int
    owner: str
    acquired_at: datetime
    expires_at: datetime


class ExportBusy(RuntimeError):
    """Another export of the same integration is running; says which and since when."""

    def __init__(self, holder: Holder, what: str) -> None:
        started = holder.acquired_at.astimezone(DISPLAY_ZONE).strftime("%H:%M:%S")
        super().__init__(
            f"an export of {what} is already running (run {holder.run_id}, started {started}); "
            "try again when it has finished"
        )
        self.holder = holder


class LeaseLost(RuntimeError):
    """The lease expired and another run took it: this run must stop sending."""


def holder(integration_id: int) -> Holder | None:
    """The current holder, expired or not (None when nobody holds the lease)."""
    table = ExportLease.__table__
    with hub_session() as session:
        row = session.execute(
            select(table.c.run_id, table.c.owner, table.c.acquired_at, table.c.expires_at).where(
                table.c.integration_id == integration_id
            )
        ).first()
    if row is None:
        return None
    return Holder(integration_id, row.run_id, row.owner, row.acquired_at, row.expires_at)


def _try_acquire(integration_id: int, run_id: int, ttl_s: float) -> bool:
    """Insert the lease, or take over an expired one; True when this run now holds it."""
    table = ExportLease.__table__
    now = utcnow()
    values = {
        "run_id": run_id,
        "owner": owner_label(),
        "acquired_at": now,
        "heartbeat_at": now,
        "expires_at": now + timedelta(seconds=ttl_s),
    }
    try:
        with hub_session() as session:
            session.execute(insert(table).values(integration_id=integration_id, **values))
        return True
    except IntegrityError:
        pass
    with hub_session() as session:
        taken = session.execute(
            update(table)
            .where(table.c.integration_id == integration_id, table.c.expires_at < now)
            .values(**values)
        )
    if taken.rowcount == 1:
        log.warning("integration %s: took over an expired export lease", integration_id)
        return True
    return False


class Lease:
    """A held lease; renews itself in a daemon thread until :meth:`release`."""

    def __init__(self, integration_id: int, run_id: int, ttl_s: float, heartbeat_s: float) -> None:
        self.integration_id = integration_id
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(heartbeat_s,), name=f"lease-{integration_id}", daemon=True
        )
        self._thread.start()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                if not self.renew():
                    self.lost = True
                    log.error("integration %s: the export lease was lost", self.integration_id)
                    return
            except Exception:  # a database hiccup: try again at the next beat
                log.warning("integration %s: lease heartbeat failed", self.integration_id)

    def renew(self) -> bool:
        table = ExportLease.__table__
        now = utcnow()
        with hub_session() as session:
            result = session.execute(
                update(table)
                .where(table.c.integration_id == self.integration_id, table.c.run_id == self.run_id)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=self.ttl_s))
            )
        return result.rowcount == 1

    def check(self) -> None:
        """Raise :class:`LeaseLost` once another run took the lease over."""
        if self.lost:
            raise LeaseLost(
                f"run {self.run_id} lost its export lease (it stalled for over "
                f"{self.ttl_s:.0f} s and another run took over); it stops sending"
            )

    def release(self) -> None:
        self._stop.set()
        table = ExportLease.__table__
        with hub_session() as session:
            session.execute(
                delete(table).where(
                    table.c.integration_id == self.integration_id, table.c.run_id == self.run_id
                )
            )

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(
    integration_id: int,
    run_id: int,
    *,
    what: str,
    wait_s: float | None = None,
    ttl_s: float | None = None,
    heartbeat_s: float | None = None,
    poll_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease:
    """Hold the integration's export lease, waiting at most ``wait_s`` (default
    :data:`LEASE_WAIT_S`) for the running export.

    Raises :class:`ExportBusy` (naming ``what``, e.g. "Xledger for blindeforbundet") when the
    other export is still running after the wait.
    """
    wait_s = LEASE_WAIT_S if wait_s is None else wait_s
    ttl_s = LEASE_TTL_S if ttl_s is None else ttl_s
    heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    poll_s = POLL_S if poll_s is None else poll_s
    deadline = time.monotonic() + wait_s
    while True:
        if _try_acquire(integration_id, run_id, ttl_s):
            return Lease(integration_id, run_id, ttl_s, heartbeat_s)
        current = holder(integration_id)
        if current is None:  # released between our two statements: try again at once
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ExportBusy(current, what)
        sleep(min(poll_s, remaining))
