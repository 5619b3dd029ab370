"""Bufdir (tilskuddsrapportering): a STAND-IN API client until Bufdir offers an endpoint.

Bufdir publishes no API: grant reports go through its portal, so the primary delivery is a
report file an admin uploads there (:mod:`integration_hub.tasks.activities`). This client speaks
an Altinn-3-style instance API, run against :mod:`integration_hub.sandbox.bufdir` only:

1. a Maskinporten-style token (``POST {base_url}/maskinporten/token``, client credentials; the
   real Maskinporten wants a JWT grant signed with a business certificate or key, which the
   ``client_secret`` stands in for),
2. ``POST {base_url}/{app}/instances`` with ``instanceOwner.organisationNumber``,
3. ``POST .../instances/{party}/{guid}/data?dataType=...`` for the CSV and the summary,
4. ``PUT .../instances/{party}/{guid}/process/next`` to submit, and
   ``GET .../instances/{party}/{guid}`` for the status.

An aggregated report is not records: this is a :class:`ReportAdapter` (no ``load``, ``lookup`` or
codes to map), and the Bufdir flow calls :meth:`BufdirAdapter.submit_report`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr, field_validator

from integration_hub.adapters.base import (
    ConnectionResult,
    ConnectionStatus,
    IntegrationConfig,
    ReportAdapter,
    RunAbort,
    TransientError,
    endpoint_setting,
    secret,
    setting,
)
from integration_hub.adapters.endpoints import EndpointUrl
from integration_hub.adapters.registry import register

DEFAULT_APP = "bufdir/tilskudd-aktivitetsrapport"
EXCLUDE_DRAFT = "draft"
EXCLUDE_NO_PARTICIPANTS = "no_participants"
TYPE_PREFIX = "type:"
KNOWN_ACTIVITY_TYPES = ("møte", "kurs", "tur", "likepersonsarbeid")
"""The activity types the volunteer app offers; each can be excluded as ``type:<type>``."""
EXCLUSION_CHOICES = (
    EXCLUDE_DRAFT,
    EXCLUDE_NO_PARTICIPANTS,
    *(f"{TYPE_PREFIX}{t}" for t in KNOWN_ACTIVITY_TYPES),
)
"""Kept here, not in the tasks module, so listing choices never imports pandas."""
SCOPE = "altinn:instances.write"


class BufdirConfig(IntegrationConfig):
    base_url: EndpointUrl = endpoint_setting("https://bufdir.apps.altinn.no")
    """A stand-in: Bufdir publishes no API, so no host is the service's own
    (``BufdirAdapter.vendor_hosts`` is empty) and only an operator can allow one."""
    app: str = setting(
        DEFAULT_APP,
        label="Altinn app",
        help="The app that receives the reports, written as org/app.",
    )
    client_id: str = setting(label="Client id", help="The application (client) id you were given.")
    client_secret: SecretStr = secret(
        label="Client secret", help="The secret that belongs to the client id."
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        parts = value.strip().strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError("app must look like <org>/<app>")
        return "/".join(parts)


class BufdirDeliveryError(TransientError):
    """The submission could not be completed after the retries; says at which step."""


@dataclass(frozen=True)
class Submission:
    instance_id: str  # "<party id>/<instance guid>"
    status: str  # the process state the API reported after submitting
    requests: int


@register
class BufdirAdapter(ReportAdapter):
    key = "bufdir"
    display_name = "Bufdir (tilskuddsrapportering)"
    config_model = BufdirConfig
    record_type = "activity"
    runs_on_schedule = False  # one report per closed period: `integrations report`
    exclusion_choices: ClassVar[tuple[str, ...]] = EXCLUSION_CHOICES

    max_attempts: ClassVar[int] = 4
    backoff_s: ClassVar[tuple[float, ...]] = (0.2, 0.5, 1.0)
    max_retry_after_s: ClassVar[float] = 5.0

    def __init__(
        self,
        config: IntegrationConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(config, transport=transport)
        self._sleep = sleep
        self._access_token: str | None = None

    @property
    def cfg(self) -> BufdirConfig:
        assert isinstance(self.config, BufdirConfig)
        return self.config

    @property
    def app_url(self) -> str:
        return f"{self.cfg.base_url}/{self.cfg.app}"

    # -- token ------------------------------------------------------------------------------
    def _token_response(self, timeout: float | None = None) -> httpx.Response:
        self.requests_sent += 1
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return self.http.post(
            f"{self.cfg.base_url}/maskinporten/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.cfg.client_id,
                "client_secret": self.cfg.client_secret.get_secret_value(),
                "scope": SCOPE,
            },
            **kwargs,
        )

    def _token(self) -> str:
        if self._access_token is None:
            response = self._with_retries("get a token", self._token_response)
            self._access_token = str(response.json()["access_token"])
        return self._access_token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token()}"}

    # -- requests with retries ---------------------------------------------------------------
    def _with_retries(self, step: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        """5xx, 429 and dropped connections are retried (``max_attempts``); 401/403 stop the
        run; any other 4xx is reported with the API's problem detail."""
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            delay = self.backoff_s[min(attempt - 1, len(self.backoff_s) - 1)]
            try:
                response = send()
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code in (401, 403):
                    raise RunAbort(
                        f"{self.display_name} refused to {step} (HTTP {response.status_code}): "
                        "check the client id and secret"
                    )
                if response.status_code == 429:
                    last = "HTTP 429 (throttled)"
                    delay = self._retry_after(response, delay)
                elif response.status_code >= 500:
                    last = f"HTTP {response.status_code}"
                else:
                    raise RunAbort(
                        f"{self.display_name} refused to {step} (HTTP {response.status_code}): "
                        f"{self.redact(_problem(response))}"
                    )
            if attempt < self.max_attempts:
                self._sleep(delay)
        raise BufdirDeliveryError(
            f"could not {step} at {self.display_name} after {self.max_attempts} attempts "
            f"(last: {last}); try again later"
        )

    def _retry_after(self, response: httpx.Response, default: float) -> float:
        try:
            return min(float(response.headers.get("Retry-After", default)), self.max_retry_after_s)
        except ValueError:
            return default

    # -- the instance API --------------------------------------------------------------------
    def create_instance(self, org_number: str) -> str:
        body = {"instanceOwner": {"organisationNumber": org_number}}

        def send() -> httpx.Response:
            self.requests_sent += 1
            return self.http.post(f"{self.app_url}/instances", json=body, headers=self._headers())

        return str(self._with_retries("create an instance", send).json()["id"])

    def upload_data(
        self, instance_id: str, data_type: str, content: bytes, content_type: str
    ) -> str:
        def send() -> httpx.Response:
            self.requests_sent += 1
            return self.http.post(
                f"{self.app_url}/instances/{instance_id}/data",
                params={"dataType": data_type},
                content=content,
                headers={**self._headers(), "Content-Type": content_type},
            )

        return str(self._with_retries(f"upload {data_type}", send).json()["id"])

    def submit(self, instance_id: str) -> str:
        def send() -> httpx.Response:
            self.requests_sent += 1
            return self.http.put(
                f"{self.app_url}/instances/{instance_id}/process/next", headers=self._headers()
            )

        return _process_state(self._with_retries("submit the instance", send).json())

    def instance_status(self, instance_id: str) -> str:
        def send() -> httpx.Response:
            self.requests_sent += 1
            return self.http.get(f"{self.app_url}/instances/{instance_id}", headers=self._headers())

        return _process_state(self._with_retries("read the instance", send).json())

    def submit_report(self, org_number: str, csv_bytes: bytes, summary: str) -> Submission:
        """Create an instance, upload the CSV and the summary, submit; one call per report."""
        before = self.requests_sent
        instance_id = self.create_instance(org_number)
        self.upload_data(instance_id, "aktivitetsrapport", csv_bytes, "text/csv; charset=utf-8")
        self.upload_data(
            instance_id, "sammendrag", summary.encode("utf-8"), "text/markdown; charset=utf-8"
        )
        status = self.submit(instance_id)
        return Submission(instance_id, status, self.requests_sent - before)

    # -- the adapter protocol ----------------------------------------------------------------
    def probe(self, deadline_s: float) -> ConnectionResult:
        response = self._token_response(timeout=deadline_s)
        if response.status_code in (400, 401, 403):
            return ConnectionResult(
                ConnectionStatus.BAD_CREDENTIALS,
                f"{self.display_name} refused the client id or secret",
            )
        if response.status_code == 429:
            return ConnectionResult(ConnectionStatus.THROTTLED, f"{self.display_name} is busy")
        if response.status_code != 200:
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                f"{self.display_name} answered HTTP {response.status_code} to the token request",
            )
        token = str(response.json().get("access_token", ""))
        self.requests_sent += 1
        meta = self.http.get(
            f"{self.app_url}/api/v1/applicationmetadata",
            headers={"Authorization": f"Bearer {token}"},
            timeout=deadline_s,
        )
        if meta.status_code == 200:
            return ConnectionResult(ConnectionStatus.OK, f"connected to {self.cfg.app}")
        if meta.status_code in (401, 403):
            return ConnectionResult(
                ConnectionStatus.BAD_CREDENTIALS, f"the token may not use {self.cfg.app}"
            )
        if meta.status_code == 404:
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE, f"no application {self.cfg.app}"
            )
        if meta.status_code == 429:
            return ConnectionResult(ConnectionStatus.THROTTLED, f"{self.display_name} is busy")
        return ConnectionResult(
            ConnectionStatus.UNEXPECTED_RESPONSE,
            f"{self.display_name} answered HTTP {meta.status_code}",
        )


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:300]


def _process_state(instance: dict[str, Any]) -> str:
    process = instance.get("process") or {}
    if process.get("ended"):
        return "submitted"
    task = process.get("currentTask") or {}
    return str(task.get("elementId") or "unknown")
