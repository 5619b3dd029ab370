"""The hub's own tables: configuration, the vault's ciphertexts, runs, outcomes and the ledger.

Organisations are referenced by the volunteer app's id; the app database may be another server,
so there are no foreign keys across the two.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from integration_hub.models.types import Money, UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(index: bool = False, now: bool = False) -> Any:
    """A timezone-aware timestamp column; ``now`` fills it at insert time."""
    column = Column(UTCDateTime(timezone=True), index=index, nullable=not now)
    if now:
        return Field(default_factory=utcnow, sa_column=column)
    return Field(default=None, sa_column=column)


class IntegrationStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished, some records failed or wait to be confirmed
    FAILED = "failed"  # the run itself could not finish
    INTERRUPTED = "interrupted"  # killed mid-way; marked by the next run of its integration


class RunFailure(StrEnum):
    """Why a run did not finish, for people and for the health monitor (``SyncRun.failure``):
    "the target was unreachable" asks for patience, "the target refused" for an admin."""

    UNREACHABLE = "unreachable"  # connect errors, 5xx, throttling, past the run-level retry time
    REFUSED = "refused"  # the target stopped the run: credentials, credits, a definitive refusal
    CONFIGURATION = "configuration"  # the hub's side: settings, credentials, mapping, schema
    BUSY = "busy"  # another export of the integration held it; nothing was done
    CANCELLED = "cancelled"  # a person stopped it (Ctrl-C, cancel in Prefect)
    UNEXPECTED = "unexpected"  # a bug: the reason names it for the operators


class OutcomeStatus(StrEnum):
    EXPORTED = "exported"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING = "waiting"  # sent, the answer was lost: looked up after the settle time


class LedgerState(StrEnum):
    PENDING = "pending"  # about to be sent: outcome unknown until confirmed
    EXPORTED = "exported"
    REFUSED = "refused"  # held by the target, whose import refused it: looked up before resending


class FeatureFlag(SQLModel, table=True):
    """Which integration types an organisation is offered (``integration.<type key>``)."""

    __tablename__ = "hub_feature_flags"
    __table_args__ = (UniqueConstraint("organisation_id", "flag"),)

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(index=True)
    flag: str = Field(max_length=80)
    enabled: bool = True


class Integration(SQLModel, table=True):
    """An organisation's integration of one type.

    One row per organisation has the reserved type ``_alerts``: the organisation's alert channel,
    whose webhook URL is a credential of that row, so the vault encrypts, masks, audits and
    rotates it like any other secret. It is not an adapter type; listings of integrations skip it.
    """

    __tablename__ = "hub_integrations"
    __table_args__ = (UniqueConstraint("organisation_id", "type_key"),)

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(index=True)
    type_key: str = Field(max_length=40)
    status: str = Field(default=IntegrationStatus.DRAFT, max_length=20)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    last_test_status: str | None = Field(default=None, max_length=40)
    last_test_detail: str | None = Field(default=None, max_length=500)
    last_test_at: datetime | None = _ts()
    setup_step: str | None = Field(
        default=None, max_length=20, description="The setup wizard's resume point; None when done"
    )
    created_at: datetime = _ts(now=True)
    updated_at: datetime = _ts(now=True)


class Credential(SQLModel, table=True):
    """One encrypted secret field; see :mod:`integration_hub.vault` for the format."""

    __tablename__ = "hub_credentials"
    __table_args__ = (UniqueConstraint("integration_id", "field"),)

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(index=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", index=True)
    field: str = Field(max_length=60)
    key_version: int
    nonce: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    hint: str = Field(default="", max_length=4, description="Last characters, for the mask")
    endpoint: str | None = Field(
        default=None,
        max_length=500,
        description="The endpoints the secret was entered for (also in the associated data); "
        "unset on rows stored before secrets were bound to endpoints",
    )
    updated_at: datetime = _ts(now=True)


class FieldMapping(SQLModel, table=True):
    """A version of an integration's mapping document (fields, value maps, text template)."""

    __tablename__ = "hub_field_mappings"
    __table_args__ = (UniqueConstraint("integration_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", index=True)
    version: int
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    acknowledged_warnings: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    created_by: str = Field(default="system", max_length=120)
    created_at: datetime = _ts(now=True)


class SyncSchedule(SQLModel, table=True):
    __tablename__ = "hub_sync_schedules"

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", unique=True)
    cron: str = Field(max_length=120)
    timezone: str = Field(default="Europe/Oslo", max_length=64)
    enabled: bool = True
    updated_at: datetime = _ts(now=True)


class Exclusion(SQLModel, table=True):
    """A data category the organisation opted out of (e.g. ``category:parking``)."""

    __tablename__ = "hub_exclusions"
    __table_args__ = (UniqueConstraint("integration_id", "category"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", index=True)
    category: str = Field(max_length=80)
    created_at: datetime = _ts(now=True)


class SyncRun(SQLModel, table=True):
    __tablename__ = "hub_sync_runs"

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", index=True)
    organisation_id: int = Field(index=True)
    flow_run_id: str | None = Field(default=None, max_length=64)
    trigger: str = Field(default="manual", max_length=20)
    window_start: date | None = None
    window_end: date | None = None
    dry_run: bool = False
    status: str = Field(default=RunStatus.RUNNING, max_length=20)
    extracted: int = 0
    exported: int = 0
    failed: int = 0
    skipped: int = 0
    waiting: int = 0
    exported_amount_ore: int = Field(default=0, sa_type=Money)
    failed_amount_ore: int = Field(default=0, sa_type=Money)
    requests_sent: int = 0
    mapping_version: int | None = None
    retry_of_run_id: int | None = Field(
        default=None, description="The run whose failures it re-sent"
    )
    error: str | None = Field(default=None, max_length=2000)
    failure: str | None = Field(
        default=None, max_length=20, description="Why the run did not finish (RunFailure)"
    )
    started_at: datetime = _ts(index=True, now=True)
    finished_at: datetime | None = _ts()


class RecordOutcome(SQLModel, table=True):
    __tablename__ = "hub_record_outcomes"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="hub_sync_runs.id", index=True)
    integration_id: int = Field(index=True)
    record_type: str = Field(max_length=40)
    record_id: int = Field(index=True)
    record_version: int
    status: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=1000)
    target_reference: str | None = Field(default=None, max_length=200)
    idempotency_key: str | None = Field(default=None, max_length=80)
    attempt: int = 1
    amount_ore: int | None = Field(default=None, sa_type=Money)
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts(now=True)


class IgnoredRecord(SQLModel, table=True):
    """A record version an admin chose not to export, with why: a claim that can never go
    through (a test claim, one settled by hand) would otherwise fail every night and keep its
    integration "failing" for ever. Later runs skip it with the reason; a new version of the
    record (corrected in the app) is not ignored. Deleting the row (un-ignoring) is audited."""

    __tablename__ = "hub_ignored_records"
    __table_args__ = (
        UniqueConstraint("integration_id", "record_type", "record_id", "record_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", index=True)
    record_type: str = Field(max_length=40)
    record_id: int
    record_version: int
    note: str = Field(max_length=500)
    ignored_by: str = Field(max_length=120)
    run_id: int | None = Field(default=None, description="The run whose failure it was")
    created_at: datetime = _ts(now=True)


class ExportLedger(SQLModel, table=True):
    """What has been sent, keyed so that nothing is ever posted twice.

    A row is written as ``pending`` before the request leaves and becomes ``exported`` once the
    target confirms; a pending row left by a crash is reconciled at the target before re-sending.
    """

    __tablename__ = "hub_export_ledger"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=80)
    organisation_id: int = Field(index=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", index=True)
    record_type: str = Field(max_length=40)
    record_id: int
    record_version: int
    state: str = Field(default=LedgerState.PENDING, max_length=20)
    run_id: int | None = None
    target_reference: str | None = Field(default=None, max_length=200)
    amount_ore: int = Field(default=0, sa_type=Money)
    created_at: datetime = _ts(now=True)
    confirmed_at: datetime | None = _ts()
    confirmed_run_id: int | None = Field(
        default=None, description="The run that confirmed it, and so holds its exported outcome"
    )
    settle_after: datetime | None = _ts()
    """A pending row is looked up at the target only from this moment (its request's answer
    was lost, and a commit can land late); unset means at once."""


class ExportLease(SQLModel, table=True):
    """At most one export per integration at a time, across processes and hosts.

    The unique ``integration_id`` is the lock; the holder renews ``expires_at`` while it runs, so a
    crashed holder's lease simply expires and the next run takes it over.
    """

    __tablename__ = "hub_export_leases"

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="hub_integrations.id", unique=True)
    run_id: int
    owner: str = Field(max_length=200, description="host:pid of the holder, for people")
    acquired_at: datetime = _ts(now=True)
    heartbeat_at: datetime = _ts(now=True)
    expires_at: datetime = _ts(now=True)


class RateLimitSlot(SQLModel, table=True):
    """The next free request slot per target (e.g. ``xledger:www.xledger.net``).

    Every run, in any process or host, takes its slots from this row, so calls to one target stay
    within its rate limit however many runs are going. Microseconds since the epoch, to compare
    exactly on every database.
    """

    __tablename__ = "hub_rate_limits"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=200)
    next_slot_us: int = Field(default=0, sa_type=BigInteger)


class AuditEntry(SQLModel, table=True):
    """Who changed what and when. Never holds a secret value."""

    __tablename__ = "hub_audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True, now=True)
    actor: str = Field(max_length=120)
    organisation_id: int | None = Field(default=None, index=True)
    integration_id: int | None = None
    action: str = Field(max_length=80)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class UserRole(StrEnum):
    ADMIN = "admin"  # manages one organisation's integrations
    OPERATOR = "operator"  # reads every organisation's and may retry runs


class User(SQLModel, table=True):
    """Someone who signs in to the web app. The password is only ever stored as an Argon2 hash."""

    __tablename__ = "hub_users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=254)
    display_name: str = Field(default="", max_length=120)
    password_hash: str = Field(max_length=200)
    role: str = Field(default=UserRole.ADMIN, max_length=20)
    organisation_id: int | None = Field(default=None, index=True)
    disabled: bool = False
    created_at: datetime = _ts(now=True)


class WebSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "hub_web_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, max_length=64)
    user_id: int = Field(foreign_key="hub_users.id", index=True)
    csrf_token: str = Field(max_length=64)
    language: str = Field(default="nb", max_length=5)
    created_at: datetime = _ts(now=True)
    expires_at: datetime = _ts(now=True)


class SignInThrottle(SQLModel, table=True):
    """Sign-in attempts per counter, to slow down guessing: ``key`` is ``pair:<client> <email>``,
    ``account:<email>`` or ``client:<client>`` (see ``services.accounts.THROTTLE_RULES``)."""

    __tablename__ = "hub_sign_in_throttle"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=300)
    failures: int = 0
    window_started_at: datetime = _ts(now=True)
    locked_until: datetime | None = _ts()


HUB_TABLES = frozenset(
    m.__tablename__
    for m in (
        FeatureFlag,
        Integration,
        Credential,
        FieldMapping,
        SyncSchedule,
        Exclusion,
        SyncRun,
        RecordOutcome,
        IgnoredRecord,
        ExportLedger,
        ExportLease,
        RateLimitSlot,
        AuditEntry,
        User,
        WebSession,
        SignInThrottle,
    )
)
