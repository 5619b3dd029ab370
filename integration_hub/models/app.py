"""The volunteer app's tables, as the hub reads them.

The volunteer app owns this schema; the hub only extracts from it. The demo and the tests create
it through the ``app`` migration branch so the whole path runs on one machine.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import Column, Numeric
from sqlmodel import Field, SQLModel

from integration_hub.models.types import Money, UTCDateTime


class ClaimStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class ClaimCategory(StrEnum):
    MILEAGE = "mileage"
    TRAVEL = "travel"
    MEALS = "meals"
    MATERIALS = "materials"
    PARKING = "parking"
    TOLL = "toll"


class ActivityStatus(StrEnum):
    DRAFT = "draft"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Organisation(SQLModel, table=True):
    __tablename__ = "organisations"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, index=True, max_length=64)
    name: str = Field(max_length=200)
    org_number: str = Field(max_length=9, description="Norwegian organisasjonsnummer")


class Chapter(SQLModel, table=True):
    """A local branch (lokallag); its code is the ledger's department dimension."""

    __tablename__ = "chapters"

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(foreign_key="organisations.id", index=True)
    code: str = Field(max_length=20)
    name: str = Field(max_length=200)
    municipality_number: str = Field(max_length=4)


class Volunteer(SQLModel, table=True):
    __tablename__ = "volunteers"

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(foreign_key="organisations.id", index=True)
    chapter_id: int = Field(foreign_key="chapters.id")
    name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=200)
    employee_number: str | None = Field(default=None, max_length=40)
    supplier_number: str | None = Field(default=None, max_length=40)


class ExpenseClaim(SQLModel, table=True):
    __tablename__ = "expense_claims"

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(foreign_key="organisations.id", index=True)
    chapter_id: int = Field(foreign_key="chapters.id")
    volunteer_id: int = Field(foreign_key="volunteers.id")
    category: str = Field(max_length=30)
    amount_ore: int = Field(sa_type=Money, description="Claimed amount in øre; mileage: km x rate")
    distance_km: Decimal | None = Field(default=None, sa_column=Column(Numeric(9, 1)))
    rate_ore_per_km: int | None = None
    expense_date: date
    status: str = Field(default=ClaimStatus.SUBMITTED, max_length=20, index=True)
    approved_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(timezone=True), index=True)
    )
    description: str = Field(default="", max_length=500)
    version: int = Field(default=1, description="Bumped by the app on every change")


class Activity(SQLModel, table=True):
    __tablename__ = "activities"

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(foreign_key="organisations.id", index=True)
    chapter_id: int = Field(foreign_key="chapters.id")
    activity_type: str = Field(max_length=60)
    activity_date: date = Field(index=True)
    duration_minutes: int
    participants: int | None = None
    participants_under_26: int | None = None
    volunteer_count: int = 1
    municipality_number: str | None = Field(default=None, max_length=4)
    status: str = Field(default=ActivityStatus.COMPLETED, max_length=20)
    version: int = 1


APP_TABLES = frozenset(
    m.__tablename__ for m in (Organisation, Chapter, Volunteer, ExpenseClaim, Activity)
)
