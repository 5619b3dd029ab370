"""The API's request and response models. Responses never carry a secret: secret fields appear
only as masks; requests that may hold one hide their input from validation errors."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from integration_hub.mappings.spec import MappingDocument

FieldName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
FieldValue = Annotated[str, StringConstraints(max_length=4096)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64)]


# -- organisations and integrations ------------------------------------------------------------
class RunOut(BaseModel):
    run_id: int
    integration_id: int
    trigger: str
    status: str
    dry_run: bool
    window: list[str | None] = Field(description="The claims' date window [from, to]")
    extracted: int
    exported: int
    failed: int
    skipped: int
    waiting: int = Field(
        default=0, description="Sent, but the target's answer was lost: confirmed by a later run"
    )
    exported_amount_ore: int
    failed_amount_ore: int
    requests_sent: int
    duration_s: float | None
    error: str | None
    flow_run_id: str | None
    retry_of_run_id: int | None
    started_at: datetime | None
    finished_at: datetime | None
    link: str | None = Field(
        description="The Prefect UI page of the flow run, when known; for operators only (the "
        "Prefect UI has no sign-in and shows every organisation's runs)"
    )


class CardOut(BaseModel):
    type: str
    target: str
    status: str = Field(description="not_set_up, setting_up, draft, active, paused or failing")
    setup_step: str | None
    last_run: RunOut | None
    next_run: datetime | None
    problems: list[str]
    failures_total: int = 0


class DashboardOut(BaseModel):
    organisation: str
    organisation_name: str
    integrations: list[CardOut]


class ConnectionTestSummary(BaseModel):
    status: str
    detail: str | None
    at: datetime | None


class IntegrationOut(BaseModel):
    id: int
    organisation: str
    type: str
    target: str
    status: str = Field(description="draft, active or paused")
    setup_step: str | None = Field(description="Where an unfinished setup continues")
    resume_step: str
    steps: list[str]
    settings: dict[str, Any] = Field(description="Settings that are not secret")
    last_connection_test: ConnectionTestSummary | None
    updated_at: datetime | None


class CredentialFieldOut(BaseModel):
    name: str
    secret: bool = Field(description="Write-only: the value is a mask, never the secret")
    value: str
    set: bool
    required: bool


class CredentialFormOut(BaseModel):
    fields: list[CredentialFieldOut]


class CredentialsIn(BaseModel):
    """New values by field name. A blank secret, or its mask sent back, keeps the stored one."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid")

    values: dict[FieldName, FieldValue] = Field(max_length=32)


class ConnectionTestOut(BaseModel):
    ok: bool = Field(description="True when the target accepted the credentials")
    status: str = Field(
        description="ok, bad_credentials, unreachable, timed_out, throttled or unexpected_response"
    )
    detail: str = Field(description="A reason a person understands")
    elapsed_ms: int = Field(ge=0)
    warnings: list[str] = Field(
        default_factory=list,
        description="Where the target's own schema differs from what the hub sends, with what "
        "to do (shown before saving; exports stop while an error among them remains)",
    )


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "paused"]


class ChoiceOut(BaseModel):
    """A company or journal to pick instead of pasting its GUID (Business Central)."""

    id: str = Field(description="Save it as company_id or journal_id")
    name: str
    code: str = Field(description="A journal's code; empty for a company")
    note: str = Field(description="Why the hub cannot use it as it is; empty when it can")


# -- mapping -----------------------------------------------------------------------------------
class ReferenceCodeOut(BaseModel):
    code: str
    name: str
    postable: bool
    note: str


class MappingOut(BaseModel):
    version: int | None = Field(description="The saved version; null while only the template")
    document: MappingDocument


class ProblemOut(BaseModel):
    severity: Literal["error", "warning"]
    field: str
    message: str


class MappingCheckOut(BaseModel):
    problems: list[ProblemOut]
    errors: bool = Field(description="True when saving would be refused")
    warnings: list[str] = Field(description="What saving needs accept_warnings for")


class MappingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: dict[str, Any] = Field(description="The mapping document (target, fields, ...)")
    accept_warnings: bool = Field(
        default=False, description="Save even though the check found warnings"
    )


class MappingSavedOut(BaseModel):
    version: int
    problems: list[ProblemOut]
    unchanged: bool = Field(
        default=False,
        description="True when the document equals the saved version: nothing was saved, "
        "and version is that saved version",
    )


# -- schedule and exclusions -------------------------------------------------------------------
class ScheduleIn(BaseModel):
    """Daily at a time, or a cron expression (neither: keep the stored one), in a time zone."""

    model_config = ConfigDict(extra="forbid")

    daily: str | None = Field(
        default=None, pattern=r"^\d{1,2}:\d{2}$", examples=["02:00"], max_length=5
    )
    cron: str | None = Field(default=None, min_length=1, max_length=120, examples=["0 2 * * *"])
    timezone: str | None = Field(
        default=None, min_length=1, max_length=64, examples=["Europe/Oslo"]
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleIn:
        if self.daily is not None and self.cron is not None:
            raise ValueError("give either daily or cron, not both")
        return self


class ScheduleOut(BaseModel):
    configured: bool
    cron: str | None
    timezone: str
    enabled: bool
    description: str | None
    next_runs: list[datetime] = Field(description="The next three runs, in the schedule's zone")
    not_pushed: str | None = Field(
        default=None, description="Why Prefect does not hold the change yet (serve pushes it)"
    )


class ExclusionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selected: list[Category] = Field(max_length=64)


class ExclusionsOut(BaseModel):
    choices: list[str]
    selected: list[str]


# -- health and runs ---------------------------------------------------------------------------
class FailureOut(BaseModel):
    record: str
    record_id: int
    record_version: int
    category: str | None
    amount_ore: int | None
    amount: str | None
    volunteer: str | None
    reason: str | None
    attempt: int


class ScheduleSummary(BaseModel):
    cron: str
    timezone: str
    enabled: bool
    next_run: datetime | None


class RunningOut(BaseModel):
    run_id: int | None
    owner: str | None
    started_at: datetime | None


class HealthOut(BaseModel):
    organisation: str
    organisation_name: str
    integration_id: int
    type: str
    target: str
    status: str
    healthy: bool
    problems: list[str]
    last_run: RunOut | None
    failures: list[FailureOut]
    failures_total: int
    retry_run_id: int | None = Field(description="POST /runs/{id}/retry re-sends its failures")
    last_connection_test: ConnectionTestSummary | None
    schedule: ScheduleSummary | None
    running: RunningOut | None
    waiting: int = Field(
        default=0, description="Records sent whose answer was lost, waiting to be confirmed"
    )


class DayCountOut(BaseModel):
    day: date = Field(description="A day in Oslo time")
    exported: int
    failed: int


class RetryOut(BaseModel):
    run_id: int
    retry_of_run_id: int | None
    status: str
    exported: int
    failed: int
    skipped: int
