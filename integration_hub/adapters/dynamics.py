"""Microsoft Dynamics 365 Business Central (API v2.0): OAuth2 client credentials, OData, $batch.

Each expense claim becomes two journal lines in one general journal: the expense G/L account
(debit) and the employee or vendor (or a configured balancing G/L account) credit. Both carry
``externalDocumentNumber`` = the idempotency key, the claim's ``documentNumber`` and its
``postingDate``. Lines go in through JSON ``$batch`` requests of at most 100 operations, sent
with ``Isolation: snapshot`` so one batch is one transaction: a failing line rolls the whole
batch back, the claim it belongs to is rejected with Business Central's reason, and the rest are
sent again without it. (``atomicityGroup`` is not documented for Business Central; snapshot
isolation is.) So half a claim is never left in the journal.

Reconciliation, from the specs: the ``journalLines`` page only shows lines whose account type is
G/L Account..Bank Account, so an employee line cannot be read back; the G/L (expense) side can.
Once the journal is posted the lines are gone and only ``generalLedgerEntries`` remain, which
carry no external document number. That is why a claim's ``documentNumber`` defaults to the
first 20 characters of its idempotency key (see :func:`document_number_for`): a posted claim is
then found by ``documentNumber``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr, field_validator, model_validator

from integration_hub.adapters.base import (
    Adapter,
    Answer,
    BatchResult,
    ConnectionResult,
    ConnectionStatus,
    IntegrationConfig,
    OutcomeUnknown,
    RecordResult,
    RecordStatus,
    ReferenceCode,
    RunAbort,
    TargetField,
    TransientError,
    classify_status,
    classify_transport_error,
)
from integration_hub.adapters.endpoints import EndpointUrl
from integration_hub.adapters.registry import register
from integration_hub.money import to_decimal
from integration_hub.vault.masking import redact

if TYPE_CHECKING:
    import pandas as pd

API_SCOPE = "https://api.businesscentral.dynamics.com/.default"
MAX_BATCH_OPERATIONS = 100
LOOKUP_CHUNK = 20
"""Keys per ``$filter`` (``… eq '…' or …``): 20 keeps the URL under ~2,000 characters."""
DOCUMENT_NUMBER_MAX = 20
EXTERNAL_DOCUMENT_NUMBER_MAX = 35
DESCRIPTION_MAX = 100
TOKEN_MARGIN_S = 60.0
"""A cached token is renewed this long before it expires (at most a tenth of its lifetime)."""

ACCOUNT_TYPES = {"gl": "G/L Account", "employee": "Employee", "vendor": "Vendor"}

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,254}$")
_ENVIRONMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,29}$")
_AADSTS = re.compile(r"AADSTS(\d+)")
_CORRELATION = re.compile(r"\s*CorrelationId:\s*[0-9a-fA-F-]+\.?\s*$")

RECORD_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Employee does not exist", re.I),
        "add the volunteer as an employee in Business Central, or correct the employee number "
        "in the volunteer app, then retry",
    ),
    (
        re.compile(r"Vendor does not exist", re.I),
        "add the volunteer as a vendor in Business Central, or correct the supplier number in "
        "the volunteer app, then retry",
    ),
    (
        re.compile(r"Blocked must be equal", re.I),
        "the account is blocked in Business Central; unblock it or choose another account in "
        "the field mapping, then retry",
    ),
    (
        re.compile(r"Direct Posting must be equal", re.I),
        "the account does not allow direct posting; choose another account in the field "
        "mapping, then retry",
    ),
    (
        re.compile(r"Account Type must be equal to 'Posting'", re.I),
        "the account is a heading or total, not a posting account; fix the field mapping, "
        "then retry",
    ),
    (
        re.compile(r"does not match to an Account|G/L Account does not exist", re.I),
        "the account does not exist in Business Central; fix the field mapping, then retry",
    ),
)


def _check_guid(value: str) -> str:
    value = value.strip()
    if not _GUID.fullmatch(value):
        raise ValueError("expected a GUID such as 2f7c9a1e-0000-4000-8000-000000000000")
    return value.lower()


def document_number_for(key: str) -> str:
    """The default ``documentNumber`` of a claim: its idempotency key cut to Business Central's
    20 characters, in capitals (a Code field). The hub's keys are ``IH`` + 30 hex digits, so 18
    hex digits (72 bits) remain: unique in practice, and findable in posted G/L entries."""
    return key[:DOCUMENT_NUMBER_MAX].upper()


class DynamicsConfig(IntegrationConfig):
    """One Business Central company reached by an Entra ID app registration (client
    credentials). ``base_url``/``token_url`` are overridable so tests and the demo point both
    at the sandbox."""

    tenant_id: str
    client_id: str
    client_secret: SecretStr
    environment: str = "production"
    company_id: str
    journal_id: str | None = None
    """The general journal (batch) the lines go into, by id; or give ``journal_code``."""
    journal_code: str | None = None
    balancing_account_number: str | None = None
    """When set, every claim is credited to this G/L account instead of the employee or vendor
    the mapping names (for companies that keep no volunteers as employees or vendors)."""
    base_url: EndpointUrl = "https://api.businesscentral.dynamics.com"
    token_url: EndpointUrl = "https://login.microsoftonline.com"

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        value = value.strip()
        if not _TENANT.fullmatch(value):
            raise ValueError("a tenant id is a GUID or a domain such as contoso.onmicrosoft.com")
        return value

    @field_validator("client_id", "company_id")
    @classmethod
    def _guid(cls, value: str) -> str:
        return _check_guid(value)

    @field_validator("journal_id")
    @classmethod
    def _journal_guid(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _check_guid(value)

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        value = value.strip()
        if not _ENVIRONMENT.fullmatch(value):
            raise ValueError("an environment name has letters, digits, - and _ (at most 30)")
        return value

    @field_validator("journal_code", "balancing_account_number")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().upper()  # Business Central Code fields are upper case
        if len(value) > 20:
            raise ValueError("at most 20 characters")
        return value

    @model_validator(mode="after")
    def _one_journal(self) -> DynamicsConfig:
        if self.journal_id is None and self.journal_code is None:
            raise ValueError("give journal_id or journal_code")
        if self.journal_code is not None and len(self.journal_code) > 10:
            raise ValueError("a journal code has at most 10 characters")
        return self


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


_TOKEN_LOCK = threading.Lock()
_TOKENS: dict[str, _Token] = {}
"""Access tokens by a hash of (token URL, tenant, client, secret): shared by the adapters of
one process (each task builds its own adapter), memory only, never logged."""


def clear_token_cache() -> None:
    with _TOKEN_LOCK:
        _TOKENS.clear()


class _TokenRefused(Exception):
    """The token endpoint answered but gave no token; ``detail`` is safe to show."""

    def __init__(self, status: ConnectionStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@register
class DynamicsAdapter(Adapter):
    key = "dynamics"
    display_name = "Microsoft Dynamics 365 Business Central"
    config_model = DynamicsConfig
    record_type = "expense_claim"
    default_mapping = "dynamics_expense_claims.yaml"
    max_lines_per_request = MAX_BATCH_OPERATIONS
    text_max_length = DESCRIPTION_MAX
    vendor_hosts = ("api.businesscentral.dynamics.com", "login.microsoftonline.com")
    """Microsoft's API and Entra ID token hosts (``../shared/specs/dynamics-bc/``)."""
    target_fields = (
        TargetField(
            "expense_account",
            "Expense G/L account (debit)",
            reference=True,
            help="Usually chosen per expense category through a value map",
        ),
        TargetField(
            "payable_account_type",
            "Credit to (employee, vendor or gl)",
            help="employee: the claim is owed to the volunteer as an employee (the default); "
            "vendor: as a vendor; gl: to the G/L account in payable_account",
        ),
        TargetField(
            "counterparty",
            "Employee or vendor number",
            help="The volunteer's number in Business Central; it is the credit line's account "
            "when crediting an employee or vendor",
        ),
        TargetField(
            "payable_account",
            "Payable G/L account (credit)",
            required=False,
            reference=True,
            help="Only when crediting a G/L account (payable_account_type gl)",
        ),
        TargetField("posting_date", "Posting date"),
        TargetField(
            "document_number",
            "Document number",
            required=False,
            help="At most 20 characters. Leave unmapped (recommended): the hub then uses the "
            "first 20 characters of the claim's idempotency key, which lets it find the claim "
            "even after the journal has been posted",
        ),
        TargetField("text", "Line description (at most 100 characters)"),
    )

    config: DynamicsConfig

    def __init__(
        self, config: IntegrationConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(config, transport=transport)
        self.token_requests = 0
        """Requests to the token endpoint: Entra ID, not Business Central, so not metered in
        ``requests_sent``."""
        self._journal_id: str | None = self.config.journal_id
        self._last_token: str | None = None

    # -- addresses ------------------------------------------------------------------------
    @property
    def api_root(self) -> str:
        base = str(self.config.base_url).rstrip("/")
        tenant = quote(self.config.tenant_id, safe="")
        environment = quote(self.config.environment, safe="")
        return f"{base}/v2.0/{tenant}/{environment}/api/v2.0"

    @property
    def company_path(self) -> str:
        return f"companies({self.config.company_id})"

    @property
    def company_url(self) -> str:
        return f"{self.api_root}/{self.company_path}"

    @property
    def token_endpoint(self) -> str:
        base = str(self.config.token_url).rstrip("/")
        return f"{base}/{quote(self.config.tenant_id, safe='')}/oauth2/v2.0/token"

    def redact(self, text: str) -> str:
        """Scrub the client secret and the current access token."""
        return redact(text, [*self.config.secret_values(), self._last_token])

    # -- tokens ---------------------------------------------------------------------------
    def _cache_key(self) -> str:
        material = "\x00".join(
            [
                self.token_endpoint,
                self.config.client_id,
                self.config.client_secret.get_secret_value(),
                API_SCOPE,
            ]
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def _token_form(self) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret.get_secret_value(),
            "scope": API_SCOPE,
        }

    def _remember_token(self, response: httpx.Response) -> str:
        """Cache the token of a 200 answer until shortly before ``expires_in``."""
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 3599))
        except (ValueError, KeyError, TypeError):
            raise _TokenRefused(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                "the token endpoint answered without an access token (is token_url right?)",
            ) from None
        if not isinstance(token, str) or not token:
            raise _TokenRefused(
                ConnectionStatus.UNEXPECTED_RESPONSE, "the token endpoint gave an empty token"
            )
        margin = min(TOKEN_MARGIN_S, lifetime / 10)
        with _TOKEN_LOCK:
            _TOKENS[self._cache_key()] = _Token(token, time.monotonic() + lifetime - margin)
        self._last_token = token
        return token

    def _refusal(self, response: httpx.Response) -> _TokenRefused:
        """Classify a token endpoint answer other than 200; never echoes what was sent."""
        status = response.status_code
        if status == 429:
            wait = _retry_after(response.headers)
            hint = f"; it asks to wait {wait:.0f} s" if wait else ""
            return _TokenRefused(
                ConnectionStatus.THROTTLED, f"Microsoft Entra ID is throttling{hint}"
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        error = str(body.get("error") or "")
        codes = {int(c) for c in body.get("error_codes") or [] if isinstance(c, int)}
        codes |= {int(c) for c in _AADSTS.findall(str(body.get("error_description") or ""))}
        tenant, client = self.config.tenant_id, self.config.client_id
        if status in (400, 401):
            if 90002 in codes or error == "invalid_tenant":
                return _TokenRefused(
                    ConnectionStatus.BAD_CREDENTIALS,
                    f"tenant {tenant} was not found in Microsoft Entra ID; check the tenant id",
                )
            if 700016 in codes or error == "unauthorized_client":
                return _TokenRefused(
                    ConnectionStatus.BAD_CREDENTIALS,
                    f"Microsoft Entra ID does not know the application (client id {client}) in "
                    f"tenant {tenant}; check the client id and tenant id",
                )
            if error == "invalid_client" or codes & {7000215, 7000222}:
                return _TokenRefused(
                    ConnectionStatus.BAD_CREDENTIALS,
                    f"Microsoft Entra ID refused the client secret of application {client} "
                    "(wrong or expired); enter a valid secret",
                )
        shown = error or f"HTTP {status}"
        return _TokenRefused(
            ConnectionStatus.UNEXPECTED_RESPONSE,
            f"Microsoft Entra ID refused the token request ({shown})",
        )

    def _token(self, *, renew: bool = False) -> str:
        """A valid access token: the cached one, or a new one from the token endpoint."""
        key = self._cache_key()
        with _TOKEN_LOCK:
            cached = _TOKENS.get(key)
        if cached is not None and not renew and cached.expires_at > time.monotonic():
            self._last_token = cached.value
            return cached.value
        self.token_requests += 1
        try:
            response = self.http.post(
                self.token_endpoint,
                data=self._token_form(),
                headers={"Accept": "application/json"},
            )
        except httpx.TransportError as exc:
            # Asking for a token changes nothing: always safe to ask again.
            raise TransientError(
                f"Microsoft Entra ID could not be reached for a token ({type(exc).__name__})"
            ) from None
        if response.status_code == 200:
            try:
                return self._remember_token(response)
            except _TokenRefused as refused:
                raise RunAbort(refused.detail) from None
        refused = self._refusal(response)
        if refused.status is ConnectionStatus.THROTTLED or response.status_code >= 500:
            raise TransientError(
                f"no token from Microsoft Entra ID: {refused.detail}",
                _retry_after(response.headers),
            )
        raise RunAbort(refused.detail)

    def _forget_token(self, token: str) -> None:
        with _TOKEN_LOCK:
            key = self._cache_key()
            cached = _TOKENS.get(key)
            if cached is not None and cached.value == token:
                del _TOKENS[key]

    # -- transport ------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        write: bool = False,
    ) -> httpx.Response:
        """One Business Central request with a bearer token; a 401 gets one new token and one
        more try (it was refused before anything was done). Transport errors are sorted: not
        sent -> :class:`TransientError`; maybe stored -> :class:`OutcomeUnknown` (writes)."""
        response: httpx.Response | None = None
        for attempt in (1, 2):
            token = self._token(renew=attempt == 2)
            self.requests_sent += 1
            try:
                response = self.http.request(
                    method,
                    url,
                    params=params,
                    content=content,
                    headers={
                        **(headers or {}),
                        "Accept": "application/json",
                        "Authorization": f"Bearer {token}",
                    },
                )
            except httpx.TransportError as exc:
                if classify_transport_error(exc, write=write) is Answer.RETRY:
                    raise TransientError(
                        f"Business Central could not be reached ({type(exc).__name__})"
                    ) from None
                raise OutcomeUnknown(
                    f"No complete answer from Business Central ({type(exc).__name__})"
                ) from None
            if response.status_code != 401:
                return response
            self._forget_token(token)
        assert response is not None
        return response

    def _body(self, response: httpx.Response, *, write: bool = False) -> dict[str, Any]:
        """The JSON body of a 2xx answer; anything else becomes the adapter error it means."""
        status = response.status_code
        if status == 401:
            raise RunAbort(
                "Business Central rejected a fresh access token; check that the app registration "
                "is added in Business Central (Microsoft Entra Applications) and has consent"
            )
        if status == 403:
            raise RunAbort(
                f"the app registration has no permission in Business Central: {_message(response)}"
                "; assign it a permission set there, then retry"
            )
        if status == 404:
            raise RunAbort(self._not_found(response))
        answer = classify_status(status, write=write)
        if status == 429:
            raise TransientError(
                "Business Central is throttling requests", _retry_after(response.headers)
            )
        if answer is Answer.RETRY:
            raise TransientError(
                f"Business Central is unavailable (HTTP {status})", _retry_after(response.headers)
            )
        if answer is Answer.UNKNOWN:
            # A write may have been committed before the server or a gateway failed.
            raise OutcomeUnknown(
                f"Business Central answered HTTP {status}; it may have stored the lines"
            )
        if answer is Answer.STOP:
            raise RunAbort(f"Business Central refused the request: {_message(response)}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if write:
                raise OutcomeUnknown("Business Central's answer to the lines is unreadable")
            raise TransientError("Business Central's answer is unreadable (not a JSON object)")
        return body

    def _not_found(self, response: httpx.Response) -> str:
        code = _error(response)[0]
        environment, tenant = self.config.environment, self.config.tenant_id
        if code == "NoEnvironment":
            return f"environment '{environment}' was not found in tenant {tenant}"
        return (
            f"company {self.config.company_id} (or its journal) was not found in environment "
            f"'{environment}' of tenant {tenant}"
        )

    def _pages(self, url: str, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every entity of a collection, following server-driven ``@odata.nextLink`` paging."""
        next_url: str | None = url
        while next_url is not None:
            body = self._body(self._send("GET", next_url, params=params))
            value = body.get("value")
            if not isinstance(value, list):
                raise RunAbort("Business Central's answer has no value list")
            for entity in value:
                if isinstance(entity, dict):
                    yield entity
            link = body.get("@odata.nextLink")
            if link is None:
                return
            if not isinstance(link, str) or not self._same_origin(link):
                raise RunAbort("Business Central's next-page link points elsewhere; stopped")
            next_url, params = link, None  # the link carries the query

    def _same_origin(self, link: str) -> bool:
        """Never send the bearer token to a host other than the configured one."""
        ours, theirs = urlsplit(str(self.config.base_url)), urlsplit(link)
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)

    # -- connection test ------------------------------------------------------------------
    def probe(self, deadline_s: float) -> ConnectionResult:
        started = time.monotonic()

        def timeout() -> httpx.Timeout:
            left = max(0.1, deadline_s - (time.monotonic() - started) - 0.25)
            return httpx.Timeout(min(5.0, left), connect=min(3.0, left))

        with self.new_client() as client:
            self.token_requests += 1
            response = client.post(
                self.token_endpoint,
                data=self._token_form(),
                headers={"Accept": "application/json"},
                timeout=timeout(),
            )
            try:
                if response.status_code != 200:
                    raise self._refusal(response)
                token = self._remember_token(response)
            except _TokenRefused as refused:
                return ConnectionResult(refused.status, refused.detail)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            response = client.get(self.company_url, headers=headers, timeout=timeout())
            problem = self._probe_problem(response, "company")
            if problem is not None:
                return problem
            company = _json_object(response)
            if company is None or "id" not in company:
                return ConnectionResult(
                    ConnectionStatus.UNEXPECTED_RESPONSE,
                    "Business Central's answer has no company (is base_url right?)",
                )
            name = str(company.get("displayName") or company.get("name") or "")
            journal, problem = self._probe_journal(client, headers, timeout())
            if problem is not None:
                return problem
            problem = self._probe_balancing_account(client, headers, timeout())
            if problem is not None:
                return problem
        return ConnectionResult(
            ConnectionStatus.OK,
            f"Connected to Business Central: company '{name}' in environment "
            f"'{self.config.environment}', journal {journal}",
        )

    def _probe_problem(self, response: httpx.Response, what: str) -> ConnectionResult | None:
        status = response.status_code
        if status == 200:
            return None
        environment, tenant = self.config.environment, self.config.tenant_id
        if status == 401:
            return ConnectionResult(
                ConnectionStatus.BAD_CREDENTIALS,
                "Business Central rejected the access token: add the app registration in "
                "Business Central (Microsoft Entra Applications) and grant consent",
            )
        if status == 403:
            return ConnectionResult(
                ConnectionStatus.BAD_CREDENTIALS,
                "the app registration has no permission to read the company in Business "
                "Central; assign it a permission set there",
            )
        if status == 429:
            wait = _retry_after(response.headers)
            hint = f"; it asks to wait {wait:.0f} s" if wait else ""
            return ConnectionResult(
                ConnectionStatus.THROTTLED, f"Business Central is throttling{hint}"
            )
        if status == 404:
            if _error(response)[0] == "NoEnvironment":
                detail = f"environment '{environment}' not found in tenant {tenant}"
            elif what == "company":
                detail = (
                    f"company {self.config.company_id} not found in environment "
                    f"'{environment}'; check the company id"
                )
            else:
                detail = f"{what} not found in the company; check the journal setting"
            return ConnectionResult(ConnectionStatus.UNEXPECTED_RESPONSE, detail)
        return ConnectionResult(
            ConnectionStatus.UNEXPECTED_RESPONSE,
            f"Business Central answered HTTP {status} for the {what}",
        )

    def _probe_journal(
        self, client: httpx.Client, headers: dict[str, str], timeout: httpx.Timeout
    ) -> tuple[str, ConnectionResult | None]:
        """The journal exists and has no balancing account (which would balance every line
        a second time)."""
        if self.config.journal_id is not None:
            what = f"journal {self.config.journal_id}"
            url = f"{self.company_url}/journals({self.config.journal_id})"
            response = client.get(url, headers=headers, timeout=timeout)
            problem = self._probe_problem(response, what)
            if problem is not None:
                return what, problem
            journal = _json_object(response)
        else:
            what = f"journal {self.config.journal_code}"
            params = {"$filter": f"code eq '{_quoted(self.config.journal_code or '')}'"}
            response = client.get(
                f"{self.company_url}/journals", params=params, headers=headers, timeout=timeout
            )
            problem = self._probe_problem(response, what)
            if problem is not None:
                return what, problem
            body = _json_object(response) or {}
            found = body.get("value") if isinstance(body.get("value"), list) else []
            journal = found[0] if found and isinstance(found[0], dict) else None
            if journal is None:
                return what, ConnectionResult(
                    ConnectionStatus.UNEXPECTED_RESPONSE,
                    f"{what} not found in the company; create it in Business Central or fix "
                    "the journal setting",
                )
        if journal is None:
            return what, ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE, f"Business Central's {what} is unreadable"
            )
        code = str(journal.get("code") or what)
        balancing = str(journal.get("balancingAccountNumber") or "")
        if balancing:
            return code, ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                f"journal {code} has balancing account {balancing}: every claim line would be "
                "balanced a second time; clear it in Business Central or use another journal",
            )
        return code, None

    def _probe_balancing_account(
        self, client: httpx.Client, headers: dict[str, str], timeout: httpx.Timeout
    ) -> ConnectionResult | None:
        """A configured balancing account must exist and take postings (checked here: the
        mapping check never sees it)."""
        number = self.config.balancing_account_number
        if number is None:
            return None
        params = {
            "$filter": f"number eq '{_quoted(number)}'",
            "$select": "number,accountType,blocked,directPosting",
        }
        response = client.get(
            f"{self.company_url}/accounts", params=params, headers=headers, timeout=timeout
        )
        problem = self._probe_problem(response, f"balancing account {number}")
        if problem is not None:
            return problem
        body = _json_object(response) or {}
        found = [a for a in body.get("value") or [] if isinstance(a, dict)]
        if not found:
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                f"balancing account {number} is not in the company's chart of accounts",
            )
        reason = _not_postable(found[0])
        if reason:
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                f"balancing account {number} cannot be posted to ({reason})",
            )
        return None

    # -- reference codes ------------------------------------------------------------------
    def reference_codes(self) -> list[ReferenceCode]:
        select = "number,displayName,accountType,blocked,directPosting"
        codes = []
        for account in self._pages(f"{self.company_url}/accounts", {"$select": select}):
            note = _not_postable(account)
            codes.append(
                ReferenceCode(
                    code=str(account.get("number") or ""),
                    name=str(account.get("displayName") or ""),
                    postable=not note,
                    note=note,
                )
            )
        return codes

    # -- journal --------------------------------------------------------------------------
    def journal_id(self) -> str:
        """The journal's id: configured, or found once by its code."""
        if self._journal_id is not None:
            return self._journal_id
        code = self.config.journal_code or ""
        params = {"$filter": f"code eq '{_quoted(code)}'", "$select": "id,code"}
        for journal in self._pages(f"{self.company_url}/journals", params):
            if isinstance(journal.get("id"), str):
                self._journal_id = journal["id"]
                return journal["id"]
        raise RunAbort(
            f"journal {code} was not found in the Business Central company; create it there or "
            "fix the journal setting"
        )

    # -- lookup ---------------------------------------------------------------------------
    def lookup(self, keys: list[str]) -> dict[str, str]:
        """Keys Business Central already has: the G/L side of unposted journal lines (by
        ``externalDocumentNumber``), then posted G/L entries (by ``documentNumber``)."""
        found: dict[str, str] = {}
        if not keys:
            return found
        by_external = {key.upper(): key for key in keys}
        lines_url = f"{self.company_url}/journals({self.journal_id()})/journalLines"
        for chunk in _chunks(list(by_external), LOOKUP_CHUNK):
            params = {
                "$filter": " or ".join(f"externalDocumentNumber eq '{_quoted(k)}'" for k in chunk),
                "$select": "id,externalDocumentNumber",
            }
            for line in self._pages(lines_url, params):
                key = by_external.get(str(line.get("externalDocumentNumber") or "").upper())
                if key is not None:
                    found.setdefault(key, f"journalLine:{line.get('id')}")
        by_document = {document_number_for(k): k for k in keys if k not in found}
        entries_url = f"{self.company_url}/generalLedgerEntries"
        for chunk in _chunks(list(by_document), LOOKUP_CHUNK):
            params = {
                "$filter": " or ".join(f"documentNumber eq '{_quoted(d)}'" for d in chunk),
                "$select": "entryNumber,documentNumber",
            }
            for entry in self._pages(entries_url, params):
                key = by_document.get(str(entry.get("documentNumber") or "").upper())
                if key is not None:
                    found.setdefault(key, f"glEntry:{entry.get('entryNumber')}")
        return found

    # -- load -----------------------------------------------------------------------------
    def load(self, lines: pd.DataFrame) -> BatchResult:
        if len(lines) > self.max_lines_per_request:
            raise ValueError(f"at most {self.max_lines_per_request} lines per request")
        before = self.requests_sent
        order: list[str] = []
        results: dict[str, RecordResult] = {}
        claims: list[tuple[str, list[dict[str, Any]]]] = []
        current: tuple[str, list[dict[str, Any]], list[str]] | None = None
        for row in lines.itertuples(index=False):
            key = str(row.idempotency_key)
            if current is None or current[0] != key:
                if current is not None:
                    self._collect(current, claims, results)
                current = (key, [], [])
                order.append(key)
            body, problem = self._line_body(row)
            if problem is not None:
                current[2].append(problem)
            else:
                current[1].append(body)
        if current is not None:
            self._collect(current, claims, results)
        while claims:
            exported, rejected = self._send_batch(self.journal_id(), claims)
            for key, reference in exported.items():
                results[key] = RecordResult(key, RecordStatus.EXPORTED, target_reference=reference)
            for key, reason in rejected.items():
                results[key] = RecordResult(key, RecordStatus.REJECTED, reason=reason)
            # Rejections mean the batch was rolled back: send the others again without them.
            claims = [claim for claim in claims if claim[0] not in results]
        return BatchResult([results[key] for key in order], requests=self.requests_sent - before)

    @staticmethod
    def _collect(
        current: tuple[str, list[dict[str, Any]], list[str]],
        claims: list[tuple[str, list[dict[str, Any]]]],
        results: dict[str, RecordResult],
    ) -> None:
        key, bodies, problems = current
        if problems:
            reason = "; ".join(dict.fromkeys(problems))
            results[key] = RecordResult(key, RecordStatus.REJECTED, reason=reason)
        else:
            claims.append((key, bodies))

    def _line_body(self, row: Any) -> tuple[dict[str, Any], str | None]:
        """One journal line's JSON body, or why it cannot be sent (checked before sending)."""
        key = str(row.idempotency_key)
        account_type = str(row.account_type) if _present(row.account_type) else ""
        account = str(row.account) if _present(row.account) else ""
        if int(row.line_no) != 1 and self.config.balancing_account_number:
            account_type, account = "gl", self.config.balancing_account_number
        if account_type not in ACCOUNT_TYPES:
            return {}, (
                f"account type {account_type or '(empty)'!r} is not one of gl, employee, vendor; "
                "fix payable_account_type in the field mapping"
            )
        if not account:
            return {}, f"line {row.line_no} has no {ACCOUNT_TYPES[account_type]} number"
        document = str(row.document_number) if _present(row.document_number) else key
        if document == key:
            document = document_number_for(key)
        if len(document) > DOCUMENT_NUMBER_MAX:
            return {}, (
                f"document number {document!r} is longer than the {DOCUMENT_NUMBER_MAX} "
                "characters Business Central allows; shorten document_number in the field mapping"
            )
        if len(key) > EXTERNAL_DOCUMENT_NUMBER_MAX:
            return {}, "the idempotency key is longer than Business Central's 35 characters"
        text = str(row.text) if _present(row.text) else ""
        if len(text) > DESCRIPTION_MAX:
            return {}, f"the description is longer than {DESCRIPTION_MAX} characters"
        amount = to_decimal(int(row.amount_ore))
        return {
            "accountType": ACCOUNT_TYPES[account_type],
            "accountNumber": account,
            "postingDate": str(row.posting_date),
            "documentNumber": document.upper(),
            "externalDocumentNumber": key.upper(),
            "amount": amount,
            "description": text,
        }, None

    def _send_batch(
        self, journal: str, claims: list[tuple[str, list[dict[str, Any]]]]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """One ``$batch`` (snapshot isolation): (references of all claims, {}) when every line
        was created, or ({}, reasons of the failing claims) when it was rolled back."""
        operations: list[dict[str, Any]] = []
        owner: dict[str, tuple[str, int]] = {}
        url = f"{self.company_path}/journals({journal})/journalLines"
        for key, bodies in claims:
            for position, body in enumerate(bodies):
                op_id = str(len(operations) + 1)
                owner[op_id] = (key, position)
                operations.append(
                    {
                        "id": op_id,
                        "method": "POST",
                        "url": url,
                        "headers": {"Content-Type": "application/json"},
                        "body": body,
                    }
                )
        if len(operations) > MAX_BATCH_OPERATIONS:
            raise ValueError(f"at most {MAX_BATCH_OPERATIONS} operations per batch")
        response = self._send(
            "POST",
            f"{self.api_root}/$batch",
            content=json_bytes({"requests": operations}),
            headers={"Content-Type": "application/json", "Isolation": "snapshot"},
            write=True,
        )
        body = self._body(response, write=True)
        answers = body.get("responses")
        if not isinstance(answers, list):
            raise OutcomeUnknown("Business Central's batch answer has no responses")
        by_id: dict[str, dict[str, Any]] = {}
        for answer in answers:
            if not isinstance(answer, dict) or not isinstance(answer.get("status"), int):
                raise OutcomeUnknown("Business Central's batch answer is malformed")
            by_id[str(answer.get("id"))] = answer
        problems: dict[str, list[str]] = {}
        for op_id, answer in by_id.items():
            status = answer["status"]
            if status < 400:
                continue
            headers = answer.get("headers") if isinstance(answer.get("headers"), dict) else {}
            if status == 429:
                # Throttled before processing; snapshot isolation rolled the batch back.
                raise TransientError(
                    f"Business Central could not take the lines now (HTTP {status} in the batch)",
                    _retry_after(headers),
                )
            if status >= 500 or status == 408:
                raise OutcomeUnknown(
                    f"Business Central failed inside the batch (HTTP {status}); it may have "
                    "stored the lines"
                )
            if status in (401, 403):
                raise RunAbort(f"Business Central refused a journal line: {_op_message(answer)}")
            if op_id not in owner:
                raise OutcomeUnknown("Business Central's batch answer names an unknown operation")
            problems.setdefault(owner[op_id][0], []).append(_record_reason(answer))
        if problems:
            return {}, {key: "; ".join(dict.fromkeys(r)) for key, r in problems.items()}
        if set(by_id) != set(owner):
            raise OutcomeUnknown("Business Central's batch answer does not cover every line")
        references: dict[str, str] = {}
        for op_id, (key, position) in owner.items():
            if position == 0:
                created = by_id[op_id].get("body")
                line_id = created.get("id") if isinstance(created, dict) else None
                references[key] = f"journalLine:{line_id or '?'}"
        return references, {}


# -- helpers ------------------------------------------------------------------------------------
def json_bytes(value: Any) -> bytes:
    """JSON with ``Decimal`` written as an exact number (``101.00``), never through float."""
    return _json(value).encode("utf-8")


def _json(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not a finite amount")
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not sent; use Decimal")
    return json.dumps(value, ensure_ascii=False)


def _quoted(value: str) -> str:
    """An OData string literal's content: a single quote is doubled."""
    return value.replace("'", "''")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _present(value: Any) -> bool:
    """A real value: pandas' missing markers (None, NA, NaN) are not strings."""
    return isinstance(value, str) and value != ""


def _not_postable(account: dict[str, Any]) -> str:
    """Why a G/L account takes no journal lines ("" when it does): Business Central checks
    Account Type = Posting, not Blocked and Direct Posting on every line."""
    notes = []
    account_type = str(account.get("accountType") or "")
    if account_type != "Posting":
        notes.append(f"not a posting account ({account_type or 'no type'})")
    elif not account.get("directPosting", False):
        notes.append("direct posting is off")
    if account.get("blocked"):
        notes.append("blocked")
    return "; ".join(notes)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of an OData error body ``{"error": {"code", "message"}}``."""
    body = _json_object(response) or {}
    return _error_of(body)


def _error_of(body: Any) -> tuple[str, str]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    message = _CORRELATION.sub("", str(error.get("message") or ""))
    return str(error.get("code") or ""), message


def _message(response: httpx.Response) -> str:
    code, message = _error(response)
    if not message:
        return f"HTTP {response.status_code}"
    return f"{message} ({code})" if code else message


def _op_message(answer: dict[str, Any]) -> str:
    code, message = _error_of(answer.get("body"))
    return message or code or f"HTTP {answer.get('status')}"


def _record_reason(answer: dict[str, Any]) -> str:
    """A reason a person can act on, from one failed operation of a batch."""
    message = _op_message(answer)
    hint = next(
        (hint for pattern, hint in RECORD_HINTS if pattern.search(message)),
        "check the record and retry",
    )
    return f"Business Central: {message} ({hint})"


def _retry_after(headers: Any) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), or None."""
    value = None
    if isinstance(headers, httpx.Headers):
        value = headers.get("Retry-After")
    elif isinstance(headers, dict):
        value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
