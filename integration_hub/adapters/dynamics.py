"""Microsoft Dynamics 365 Business Central (API v2.0): OAuth2 client credentials, OData, $batch.

Each expense claim becomes two journal lines in one general journal: the expense G/L account
(debit) and a credit to the volunteer. The mapping picks how the credit balances
(``payable_account_type``): against the volunteer as an employee (the default) or a vendor, or,
never touching employee or vendor lines, against a G/L payable account (``gl`` with
``payable_account``), the volunteer's number (``counterparty``) then opening the credit line's
description. Both lines carry ``externalDocumentNumber`` = the idempotency key, the claim's
``documentNumber``, its ``postingDate`` and a description that ends with the claim's
reconciliation tag (:func:`document_number_for`). Lines go in through JSON ``$batch`` requests of
at most 100 operations, sent with ``Isolation: snapshot`` so one batch is one transaction: a
failing line rolls the whole batch back, the claim it belongs to is rejected with Business
Central's reason, and the rest are sent again without it. (``atomicityGroup`` is not documented
for Business Central; snapshot isolation is.) So half a claim is never left in the journal.
Answers are matched to operations by ``id``, and by position where Business Central answers
``"id": null`` (as Microsoft's transactional batch example shows).

Reconciliation, from the specs: the ``journalLines`` page only shows lines whose account type is
G/L Account..Bank Account, so an employee or vendor line cannot be read back; the G/L (expense)
side can, by ``externalDocumentNumber``. Once the journal is posted the lines are gone and only
``generalLedgerEntries`` remain, whose v2.0 resource has ``documentNumber`` and ``description``
but no external document number. A posted claim is looked for by ``documentNumber`` (the tag, by
default) and then by a description ending with the tag, which a batch's Posting No. Series
(which renumbers documents) or a mapped document number does not change.

Tokens: :class:`EntraClientCredentials` is the ``httpx.Auth`` of every request; it caches the
access token in a :class:`TokenCache` and asks Entra ID again, once, when Business Central
answers 401. ``check_schema`` reads ``$metadata`` and compares the ``journalLine`` entity type
with :data:`SENT_PROPERTIES`, the properties :meth:`DynamicsAdapter._line_body` writes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import httpx
from pydantic import SecretStr, field_validator, model_validator

from integration_hub.adapters.base import (
    AccountKind,
    Answer,
    BatchResult,
    Choice,
    ConnectionResult,
    ConnectionStatus,
    IntegrationConfig,
    OutcomeUnknown,
    RateLimit,
    RecordAdapter,
    RecordResult,
    RecordStatus,
    ReferenceCode,
    RunAbort,
    SchemaDrift,
    TargetField,
    TransientError,
    classify_status,
    classify_transport_error,
    endpoint_setting,
    secret,
    setting,
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
ACCOUNT_NUMBER_MAX = 20
DOCUMENT_NUMBER_MAX = 20
EXTERNAL_DOCUMENT_NUMBER_MAX = 35
DESCRIPTION_MAX = 100
TAG_LENGTH = DOCUMENT_NUMBER_MAX
"""A claim's reconciliation tag (:func:`document_number_for`) ends every line description."""
TEXT_MAX = DESCRIPTION_MAX - TAG_LENGTH - 1
"""What is left of the description for the mapping's text: 79 characters."""
TOKEN_MARGIN_S = 60.0
"""A cached token is renewed this long before it expires (at most a tenth of its lifetime)."""

ACCOUNT_TYPES = {"gl": "G/L Account", "employee": "Employee", "vendor": "Vendor"}
BALANCING_MODES = {
    "employee": "the claim is owed to the volunteer as an employee (the default)",
    "vendor": "as a vendor",
    "gl": "to the G/L payable account in payable_account, never an employee or vendor line, "
    "with the volunteer's number opening the credit line's description",
}
"""The mapping's ``payable_account_type``: what a claim's credit line is posted to."""


@dataclass(frozen=True)
class SentProperty:
    """A journalLine property the adapter writes: the OData types that take our JSON value
    (``"enum"``: any enum type of the service) and the longest value we send."""

    types: tuple[str, ...]
    max_length: int | None = None


SENT_PROPERTIES: dict[str, SentProperty] = {
    "accountType": SentProperty(("enum", "Edm.String")),
    "accountNumber": SentProperty(("Edm.String",), ACCOUNT_NUMBER_MAX),
    "postingDate": SentProperty(("Edm.Date",)),
    "documentNumber": SentProperty(("Edm.String",), DOCUMENT_NUMBER_MAX),
    "externalDocumentNumber": SentProperty(("Edm.String",), EXTERNAL_DOCUMENT_NUMBER_MAX),
    "amount": SentProperty(("Edm.Decimal",)),
    "description": SentProperty(("Edm.String",), DESCRIPTION_MAX),
}
"""Every property :meth:`DynamicsAdapter._line_body` sends (a test keeps the two equal), for
the schema check against ``$metadata``."""
LINE_ENTITY = "journalLine"
TARGET = "Business Central"
"""How schema drift names the target (the wording is :class:`SchemaDrift`'s, shared)."""
EDM_NAMESPACES = ("http://docs.oasis-open.org/odata/ns/edm",)
"""CSDL v4, what Business Central's API ``$metadata`` is written in."""

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,254}$")
_ENVIRONMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,29}$")
_AADSTS = re.compile(r"AADSTS(\d+)")
_CORRELATION = re.compile(r"\s*CorrelationId:\s*[0-9a-fA-F-]+\.?\s*$")
_XML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_DOCTYPE = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)

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


def _optional_guid(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return _check_guid(value)


def document_number_for(key: str) -> str:
    """A claim's reconciliation tag: its idempotency key cut to Business Central's 20-character
    document number, in capitals (a Code field). It is the default ``documentNumber`` and ends
    every line's description, so a posted claim is found by either. The hub's keys are ``IH`` +
    30 hex digits, so 18 hex digits (72 bits) remain: unique in practice."""
    return key[:DOCUMENT_NUMBER_MAX].upper()


class DynamicsConfig(IntegrationConfig):
    """One Business Central company reached by an Entra ID app registration (client
    credentials). ``base_url``/``token_url`` are overridable so tests and the demo point both
    at the sandbox.

    The company and the journal may be left out at first: once the credentials work, the admin
    picks them from lists (:meth:`DynamicsAdapter.companies`, :meth:`DynamicsAdapter.journals`)
    instead of pasting GUIDs; until then the connection test lists what there is to choose."""

    tenant_id: str = setting(
        label="Tenant (Microsoft Entra directory)",
        help="A GUID, or a domain such as contoso.onmicrosoft.com.",
    )
    client_id: str = setting(label="Client id", help="The application (client) id you were given.")
    client_secret: SecretStr = secret(
        label="Client secret", help="The secret that belongs to the client id."
    )
    environment: str = setting(
        "production",
        label="Environment",
        help="The Business Central environment, usually production.",
    )
    company_id: str | None = setting(
        None,
        label="Company id",
        help="The company's id (a GUID) in Business Central. Leave it empty at first: once the "
        "credentials are saved, pick the company from the list the page then offers.",
    )
    journal_id: str | None = setting(
        None,
        label="Journal id",
        help="The general journal batch by its id (a GUID); or give the journal code instead.",
    )
    """The general journal (batch) the lines go into, by id; or give ``journal_code``."""
    journal_code: str | None = setting(
        None,
        label="Journal code",
        help="The general journal batch by its code. Leave it empty at first: once the company "
        "is saved, pick the journal from the list the page then offers.",
    )
    base_url: EndpointUrl = endpoint_setting("https://api.businesscentral.dynamics.com")
    token_url: EndpointUrl = endpoint_setting(
        "https://login.microsoftonline.com",
        label="Sign-in service address (URL)",
        help="Where access tokens are asked for; normally https://login.microsoftonline.com.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_balancing_setting(cls, data: Any) -> Any:
        """``balancing_account_number`` was a setting that overrode the mapping's credit line;
        the G/L balancing mode now lives in the mapping alone (``payable_account_type: gl``).
        Stored settings carry it as null, which is dropped; a value is refused with the move."""
        if isinstance(data, dict) and "balancing_account_number" in data:
            data = dict(data)
            legacy = data.pop("balancing_account_number")
            if legacy not in (None, ""):
                raise ValueError(
                    "balancing_account_number is no longer a setting: choose the G/L balancing "
                    f"mode in the field mapping (payable_account_type gl, payable_account "
                    f"{legacy})"
                )
        return data

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        value = value.strip()
        if not _TENANT.fullmatch(value):
            raise ValueError("a tenant id is a GUID or a domain such as contoso.onmicrosoft.com")
        return value

    @field_validator("client_id")
    @classmethod
    def _guid(cls, value: str) -> str:
        return _check_guid(value)

    @field_validator("company_id", "journal_id")
    @classmethod
    def _optional_guids(cls, value: str | None) -> str | None:
        return _optional_guid(value)

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        value = value.strip()
        if not _ENVIRONMENT.fullmatch(value):
            raise ValueError("an environment name has letters, digits, - and _ (at most 30)")
        return value

    @field_validator("journal_code")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().upper()  # Business Central Code fields are upper case
        if len(value) > 10:
            raise ValueError("a journal code has at most 10 characters")
        return value

    @model_validator(mode="after")
    def _journal_of_a_company(self) -> DynamicsConfig:
        if self.company_id is None and (self.journal_id or self.journal_code):
            raise ValueError("choose the company before the journal")
        return self


# -- tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class TokenCache:
    """Access tokens by key (:attr:`EntraClientCredentials.key`), in memory only, until
    shortly before they expire.

    One instance, :data:`TOKENS`, is shared by the adapters of a process: each Prefect task
    builds its own adapter, and a token per task would cost Entra ID a request each. Tests
    empty it with :meth:`clear`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}

    def get(self, key: str) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
        if token is None or token.expires_at <= time.monotonic():
            return None
        return token.value

    def put(self, key: str, value: str, lifetime_s: float) -> None:
        margin = min(TOKEN_MARGIN_S, lifetime_s / 10)
        with self._lock:
            self._tokens[key] = _Token(value, time.monotonic() + lifetime_s - margin)

    def forget(self, key: str, value: str | None = None) -> None:
        """Drop the token of ``key`` (only if it is still ``value``, when given: another
        thread may have stored a fresh one meanwhile)."""
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and value in (None, token.value):
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


TOKENS = TokenCache()
"""The process's token cache (see :class:`TokenCache`)."""


class TokenRefused(Exception):
    """The token endpoint answered but gave no token; ``detail`` is safe to show."""

    def __init__(
        self,
        status: ConnectionStatus,
        detail: str,
        *,
        transient: bool = False,
        wait: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.transient = transient
        """Asking again later may work (throttled, or Entra ID failed)."""
        self.retry_after = wait


class EntraClientCredentials(httpx.Auth):
    """OAuth2 client credentials against Microsoft Entra ID, as the ``httpx.Auth`` of every
    Business Central request.

    A request gets the cached token, or one fetched first (the token request goes through the
    same client, so the same endpoint guard and timeouts apply). A 401 means Business Central
    refused the token before doing anything: a cached token is dropped, a new one fetched and
    the request sent once more; a token fetched for this very request is not fetched again.
    A refusal by the token endpoint raises :class:`TokenRefused`.

    Tokens are cached per (token URL, tenant, client, SHA-256 of the secret, scope), so a changed
    secret never reuses the old secret's token."""

    def __init__(
        self,
        token_endpoint: str,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str = API_SCOPE,
        cache: TokenCache = TOKENS,
    ) -> None:
        self.token_endpoint = token_endpoint
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.cache = cache
        self.last_token: str | None = None
        """The token last used (the adapter redacts it from anything it reports)."""
        secret_hash = hashlib.sha256(client_secret.get_secret_value().encode()).hexdigest()
        material = "\x00".join([token_endpoint, tenant_id, client_id, secret_hash, scope])
        self.key = hashlib.sha256(material.encode()).hexdigest()

    def forget(self) -> None:
        """Drop the cached token: the next request fetches a new one (a connection test wants
        proof that the secret works now, not an hour ago)."""
        self.cache.forget(self.key)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        # Overridden (not auth_flow) to read only the token endpoint's body, never an API
        # answer's: a write's body is read, and classified, by the adapter.
        token = self.cache.get(self.key)
        fetched = token is None
        if token is None:
            token = yield from self._fetch(request)
        response = yield self._signed(request, token)
        if response.status_code != 401 or fetched:
            return
        self.cache.forget(self.key, token)
        token = yield from self._fetch(request)
        yield self._signed(request, token)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise NotImplementedError("the hub's adapters use synchronous clients")
        yield request  # unreachable: makes this the async generator httpx expects

    def _signed(self, request: httpx.Request, token: str) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token}"
        self.last_token = token
        return request

    def _fetch(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, str]:
        token_request = httpx.Request(
            "POST",
            self.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self._secret.get_secret_value(),
                "scope": self.scope,
            },
            headers={"Accept": "application/json"},
            # The API request's timeout, so a connection test's deadline covers the token too.
            extensions={"timeout": request.extensions.get("timeout", {})},
        )
        response = yield token_request
        response.read()
        if response.status_code != 200:
            raise self.refusal(response)
        return self._accept(response)

    def _accept(self, response: httpx.Response) -> str:
        """Cache the token of a 200 answer until shortly before ``expires_in``."""
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 3599))
        except (ValueError, KeyError, TypeError):
            raise TokenRefused(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                "the token endpoint answered without an access token (is token_url right?)",
            ) from None
        if not isinstance(token, str) or not token:
            raise TokenRefused(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                "the token endpoint gave an empty token",
            )
        self.cache.put(self.key, token, lifetime)
        self.last_token = token
        return token

    def refusal(self, response: httpx.Response) -> TokenRefused:
        """Classify a token endpoint answer other than 200; never echoes what was sent."""
        status = response.status_code
        wait = _retry_after(response.headers)
        if status == 429:
            hint = f"; it asks to wait {wait:.0f} s" if wait else ""
            return TokenRefused(
                ConnectionStatus.THROTTLED,
                f"Microsoft Entra ID is throttling{hint}",
                transient=True,
                wait=wait,
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        error = str(body.get("error") or "")
        codes = {int(c) for c in body.get("error_codes") or [] if isinstance(c, int)}
        codes |= {int(c) for c in _AADSTS.findall(str(body.get("error_description") or ""))}
        tenant, client = self.tenant_id, self.client_id
        bad = ConnectionStatus.BAD_CREDENTIALS
        if status in (400, 401):
            if 90002 in codes or error == "invalid_tenant":
                detail = f"tenant {tenant} was not found in Microsoft Entra ID; check the tenant id"
                return TokenRefused(bad, detail)
            if 700016 in codes or error == "unauthorized_client":
                detail = (
                    f"Microsoft Entra ID does not know the application (client id {client}) in "
                    f"tenant {tenant}; check the client id and tenant id"
                )
                return TokenRefused(bad, detail)
            if error == "invalid_client" or codes & {7000215, 7000222}:
                detail = (
                    f"Microsoft Entra ID refused the client secret of application {client} "
                    "(wrong or expired); enter a valid secret"
                )
                return TokenRefused(bad, detail)
        shown = error or f"HTTP {status}"
        return TokenRefused(
            ConnectionStatus.UNEXPECTED_RESPONSE,
            f"Microsoft Entra ID refused the token request ({shown})",
            transient=status >= 500,
            wait=wait,
        )


@register
class DynamicsAdapter(RecordAdapter):
    key = "dynamics"
    display_name = "Microsoft Dynamics 365 Business Central"
    config_model = DynamicsConfig
    rate_limit = RateLimit(6000, 300.0)
    """6,000 requests per user or service principal in a five-minute sliding window
    (Microsoft's operational limits for OData/API requests), i.e. one every 50 ms."""
    choice_fields = ("company_id", "journal_id")
    record_type = "expense_claim"
    default_mapping = "dynamics_expense_claims.yaml"
    max_lines_per_request = MAX_BATCH_OPERATIONS
    text_max_length = TEXT_MAX
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
            "Balancing mode: credit to employee, vendor or gl",
            help="; ".join(f"{mode}: {what}" for mode, what in BALANCING_MODES.items()),
        ),
        TargetField(
            "counterparty",
            "Employee or vendor number",
            help="The volunteer's number in Business Central: the credit line's account when "
            "crediting an employee or vendor; in the gl mode it names the volunteer in the "
            "credit line's description",
        ),
        TargetField(
            "payable_account",
            "Payable G/L account (credit)",
            required=False,
            reference=True,
            help="Only in the gl balancing mode (payable_account_type gl): the G/L account "
            "every claim is credited to",
        ),
        TargetField("posting_date", "Posting date"),
        TargetField(
            "document_number",
            "Document number",
            required=False,
            help="At most 20 characters. Leave unmapped (recommended): the hub then uses the "
            "claim's reconciliation tag (the first 20 characters of its idempotency key). The "
            "journal batch must then have no No. Series, or one that allows manual numbers",
        ),
        TargetField(
            "text",
            f"Line description (at most {TEXT_MAX} characters)",
            help="The hub adds the claim's reconciliation tag at the end (Business Central "
            f"allows {DESCRIPTION_MAX} characters)",
        ),
    )

    config: DynamicsConfig

    def __init__(
        self, config: IntegrationConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(config, transport=transport)
        self.token_requests = 0
        """Requests to the token endpoint: Entra ID, not Business Central, so not metered in
        ``requests_sent``."""
        self.auth = EntraClientCredentials(
            self.token_endpoint,
            tenant_id=self.config.tenant_id,
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
        )
        self._journal_id: str | None = self.config.journal_id

    # -- addresses ------------------------------------------------------------------------
    @property
    def api_root(self) -> str:
        base = str(self.config.base_url).rstrip("/")
        tenant = quote(self.config.tenant_id, safe="")
        environment = quote(self.config.environment, safe="")
        return f"{base}/v2.0/{tenant}/{environment}/api/v2.0"

    @property
    def company_path(self) -> str:
        if self.config.company_id is None:
            raise RunAbort(
                "no Business Central company is chosen yet; pick one from the list of "
                "companies (`integrations dynamics companies ORG`) and save it as company_id"
            )
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
        return redact(text, [*self.config.secret_values(), self.auth.last_token])

    # -- transport ------------------------------------------------------------------------
    def new_client(self, **kwargs: Any) -> httpx.Client:
        """Every client signs its requests (:class:`EntraClientCredentials`) and counts them:
        Business Central's in ``requests_sent`` (a 401 and its retry are two), Entra ID's in
        ``token_requests``."""
        return super().new_client(auth=self.auth, event_hooks={"request": [self._count]}, **kwargs)

    def _count(self, request: httpx.Request) -> None:
        if self._is_token_request(request):
            self.token_requests += 1
        else:
            self.requests_sent += 1

    def _is_token_request(self, request: httpx.Request | None) -> bool:
        return request is not None and request.url == httpx.URL(self.token_endpoint)

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        write: bool = False,
        accept: str = "application/json",
    ) -> httpx.Response:
        """One Business Central request (signed, and sent again once after a 401 with a new
        token, by :attr:`auth`). Errors are sorted: no token -> :class:`TransientError` or
        :class:`RunAbort`; not sent -> :class:`TransientError`; maybe stored ->
        :class:`OutcomeUnknown` (writes)."""
        try:
            return self.http.request(
                method,
                url,
                params=params,
                content=content,
                headers={**(headers or {}), "Accept": accept},
            )
        except TokenRefused as refused:
            if refused.transient:
                raise TransientError(
                    f"no token from Microsoft Entra ID: {refused.detail}", refused.retry_after
                ) from None
            raise RunAbort(refused.detail) from None
        except httpx.TransportError as exc:
            if self._is_token_request(_failed_request(exc)):
                # Asking for a token changes nothing, and the write was never sent.
                raise TransientError(
                    f"Microsoft Entra ID could not be reached for a token ({type(exc).__name__})"
                ) from None
            if classify_transport_error(exc, write=write) is Answer.RETRY:
                raise TransientError(
                    f"Business Central could not be reached ({type(exc).__name__})"
                ) from None
            raise OutcomeUnknown(
                f"No complete answer from Business Central ({type(exc).__name__})"
            ) from None

    def _checked(self, response: httpx.Response, *, write: bool = False) -> httpx.Response:
        """A 2xx answer; anything else becomes the adapter error it means."""
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
        return response

    def _body(self, response: httpx.Response, *, write: bool = False) -> dict[str, Any]:
        """The JSON body of a 2xx answer; anything else becomes the adapter error it means."""
        self._checked(response, write=write)
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

    # -- companies and journals to choose from --------------------------------------------
    def choices(self, field: str, within: str | None = None) -> list[Choice]:
        """The companies for ``company_id``; a company's journals for ``journal_id`` (the
        configured company unless ``within`` names one)."""
        if field == "company_id":
            return self.companies()
        if field == "journal_id":
            return self.journals(within)
        return []

    def companies(self) -> list[Choice]:
        """The environment's companies, for an admin to pick ``company_id`` from."""
        return [
            Choice(id=str(company.get("id") or ""), name=self._name_of(company))
            for company in self._pages(f"{self.api_root}/companies")
        ]

    def journals(self, company_id: str | None = None) -> list[Choice]:
        """The general journal batches of a company (the configured one unless named), for an
        admin to pick ``journal_id`` from; each says if the hub cannot use it as it is."""
        company = _check_guid(company_id) if company_id else None
        path = f"companies({company})" if company else self.company_path
        params = {"$select": "id,code,displayName,balancingAccountNumber"}
        return [
            Choice(
                id=str(journal.get("id") or ""),
                name=self._name_of(journal),
                code=self.clean(str(journal.get("code") or ""), 20),
                note=self.clean(_journal_problem(journal)),
            )
            for journal in self._pages(f"{self.api_root}/{path}/journals", params)
        ]

    def _name_of(self, entity: dict[str, Any]) -> str:
        return self.clean(str(entity.get("displayName") or entity.get("name") or ""), 100)

    # -- connection test ------------------------------------------------------------------
    def probe(self, deadline_s: float) -> ConnectionResult:
        started = time.monotonic()

        def timeout() -> httpx.Timeout:
            left = max(0.1, deadline_s - (time.monotonic() - started) - 0.25)
            return httpx.Timeout(min(5.0, left), connect=min(3.0, left))

        headers = {"Accept": "application/json"}
        self.auth.forget()  # a connection test proves the secret works now, not an hour ago
        with self.new_client() as client:
            try:
                if self.config.company_id is None:
                    response = client.get(
                        f"{self.api_root}/companies", headers=headers, timeout=timeout()
                    )
                    return self._probe_problem(response, "companies") or self._to_choose(
                        "company", "companies", _json_object(response)
                    )
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
                if self.config.journal_id is None and self.config.journal_code is None:
                    response = client.get(
                        f"{self.company_url}/journals", headers=headers, timeout=timeout()
                    )
                    return self._probe_problem(response, "journals") or self._to_choose(
                        "journal", f"the journals of company '{name}'", _json_object(response)
                    )
                journal, problem = self._probe_journal(client, headers, timeout())
            except TokenRefused as refused:
                return ConnectionResult(refused.status, refused.detail)
        if problem is not None:
            return problem
        return ConnectionResult(
            ConnectionStatus.OK,
            f"Connected to Business Central: company '{name}' ({self.config.environment}), "
            f"journal {journal}. The API cannot show number series: batch {journal} needs no "
            "No. Series (or one allowing manual numbers) and no Posting No. Series",
        )

    def _to_choose(self, what: str, where: str, body: dict[str, Any] | None) -> ConnectionResult:
        """Signed in, but the admin has not chosen a company or journal yet: say what there is
        (a journal by its code, which can be saved as journal_code as it is)."""
        found = (body or {}).get("value")
        found = [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []
        names = ", ".join(
            f"{self.clean(str(f['code']), 20)} ('{self._name_of(f)}')"
            if f.get("code")
            else f"'{self._name_of(f)}'"
            for f in found[:5]
        )
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        listing = f": {names}{more}" if found else ""
        return ConnectionResult(
            ConnectionStatus.UNEXPECTED_RESPONSE,
            f"Signed in to Business Central; now choose the {what} ({len(found)} in {where}"
            f"{listing}) and save it",
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
            elif what.startswith("journal "):
                detail = f"{what} not found in the company; check the journal setting"
            else:
                detail = f"Business Central has no {what} here (HTTP 404); is base_url right?"
            return ConnectionResult(ConnectionStatus.UNEXPECTED_RESPONSE, detail)
        return ConnectionResult(
            ConnectionStatus.UNEXPECTED_RESPONSE,
            f"Business Central answered HTTP {status} for the {what}",
        )

    def _probe_journal(
        self, client: httpx.Client, headers: dict[str, str], timeout: httpx.Timeout
    ) -> tuple[str, ConnectionResult | None]:
        """The journal exists and the hub can use it as it is (:func:`_journal_problem`)."""
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
        reason = _journal_problem(journal)
        if reason:
            return code, ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                f"journal {code} {reason}; clear it in Business Central or use another journal",
            )
        return code, None

    # -- schema check ---------------------------------------------------------------------
    def check_schema(self) -> list[SchemaDrift]:
        """Compare the ``journalLine`` entity type of the service's ``$metadata`` with
        :data:`SENT_PROPERTIES`: a property we send that it lacks, a type that no longer takes
        our value or a shorter length is an error (lines would be refused or cut); an
        ``accountType`` value a balancing mode sends that its enum lacks is a warning (only
        that mode fails), except "G/L Account", which every expense line uses. What
        ``$metadata`` cannot show (number series, permissions, posting setup) is in the
        go-live checklist."""
        response = self._checked(
            self._send("GET", f"{self.api_root}/$metadata", accept="application/xml")
        )
        entity, enums = _csdl_entity(response.content, LINE_ENTITY)
        if entity is None:
            return [SchemaDrift.missing(TARGET, LINE_ENTITY)]
        drift: list[SchemaDrift] = []
        for name, sent in SENT_PROPERTIES.items():
            field = f"{LINE_ENTITY}.{name}"
            declared = entity.get(name)
            if declared is None:
                drift.append(SchemaDrift.missing(TARGET, field))
                continue
            type_name, max_length = declared
            members = enums.get(type_name)
            if ("enum" if members is not None else type_name) not in sent.types:
                sent_as = " or ".join("an enum value" if t == "enum" else t for t in sent.types)
                drift.append(SchemaDrift.changed(TARGET, field, type_name, sent_as))
            elif sent.max_length and max_length is not None and max_length < sent.max_length:
                drift.append(
                    SchemaDrift.changed(
                        TARGET,
                        field,
                        f"at most {max_length} characters",
                        f"up to {sent.max_length} characters",
                    )
                )
            if members is not None and name == "accountType":
                drift += _unknown_account_types(field, members)
        return drift

    # -- reference codes ------------------------------------------------------------------
    def reference_codes(self) -> list[ReferenceCode]:
        """The company's G/L accounts, each with its kind from ``category`` (documented for
        v2.0's account resource; ``subCategory`` is each company's own free text, so the kind
        is read from the category alone)."""
        select = "number,displayName,category,accountType,blocked,directPosting"
        codes = []
        for account in self._pages(f"{self.company_url}/accounts", {"$select": select}):
            note = _not_postable(account)
            codes.append(
                ReferenceCode(
                    code=str(account.get("number") or ""),
                    name=str(account.get("displayName") or ""),
                    postable=not note,
                    note=note,
                    kind=account_kind(account.get("category")),
                )
            )
        return codes

    # -- journal --------------------------------------------------------------------------
    def journal_id(self) -> str:
        """The journal's id: configured, or found once by its code (a company comes first)."""
        company_url = self.company_url
        if self._journal_id is not None:
            return self._journal_id
        code = self.config.journal_code
        if code is None:
            raise RunAbort(
                "no Business Central journal is chosen yet; pick one from the company's "
                "journals (`integrations dynamics journals ORG`) and save it as journal_id"
            )
        params = {"$filter": f"code eq '{_quoted(code)}'", "$select": "id,code"}
        for journal in self._pages(f"{company_url}/journals", params):
            if isinstance(journal.get("id"), str):
                self._journal_id = journal["id"]
                return journal["id"]
        raise RunAbort(
            f"journal {code} was not found in the Business Central company; create it there or "
            "fix the journal setting"
        )

    # -- lookup ---------------------------------------------------------------------------
    def lookup(self, keys: list[str]) -> dict[str, str]:
        """Keys Business Central already has, three ways, each asked only for keys still
        missing: unposted journal lines by ``externalDocumentNumber`` (the G/L side, which the
        page lists), then posted G/L entries by ``documentNumber`` (the tag, unless a mapping
        or a Posting No. Series changed it), then by a ``description`` ending with the tag."""
        found: dict[str, str] = {}
        if not keys:
            return found
        lines_url = f"{self.company_url}/journals({self.journal_id()})/journalLines"
        entries_url = f"{self.company_url}/generalLedgerEntries"
        searches: tuple[tuple[str, str, str, bool, Callable[[str], str]], ...] = (
            (lines_url, "externalDocumentNumber", "id", False, str.upper),
            (entries_url, "documentNumber", "entryNumber", False, document_number_for),
            (entries_url, "description", "entryNumber", True, document_number_for),
        )
        for url, field, reference, ends, wanted_of in searches:
            wanted = {wanted_of(key): key for key in keys if key not in found}
            prefix = "journalLine" if url == lines_url else "glEntry"
            for key, entity in self._search(url, field, reference, wanted, ends_with=ends):
                found.setdefault(key, f"{prefix}:{entity.get(reference)}")
        return found

    def _search(
        self, url: str, field: str, reference: str, wanted: dict[str, str], *, ends_with: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, entity) for every entity whose ``field`` is (or ends with) a value of
        ``wanted`` (value -> key), asked ``LOOKUP_CHUNK`` values at a time. Business Central
        joins ``or`` only on one field, so each search is its own request."""
        for chunk in _chunks(list(wanted), LOOKUP_CHUNK):
            if ends_with:
                clauses = [f"endswith({field},'{_quoted(value)}')" for value in chunk]
            else:
                clauses = [f"{field} eq '{_quoted(value)}'" for value in chunk]
            params = {"$filter": " or ".join(clauses), "$select": f"{reference},{field}"}
            for entity in self._pages(url, params):
                text = str(entity.get(field) or "")
                seen = text.rsplit(" ", 1)[-1] if ends_with else text.upper()
                if seen in wanted:
                    yield wanted[seen], entity

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
        """One journal line's JSON body (exactly :data:`SENT_PROPERTIES`), or why it cannot be
        sent (checked before sending)."""
        key = str(row.idempotency_key)
        account_type = str(row.account_type) if _present(row.account_type) else ""
        account = str(row.account) if _present(row.account) else ""
        if account_type not in ACCOUNT_TYPES:
            return {}, (
                f"account type {account_type or '(empty)'!r} is not one of "
                f"{', '.join(BALANCING_MODES)}; fix payable_account_type in the field mapping"
            )
        if not account:
            hint = (
                "; map payable_account (the G/L payable account) for the gl balancing mode"
                if account_type == "gl" and int(row.line_no) != 1
                else ""
            )
            return {}, f"line {row.line_no} has no {ACCOUNT_TYPES[account_type]} number{hint}"
        tag = document_number_for(key)
        document = str(row.document_number) if _present(row.document_number) else key
        if document == key:
            document = tag
        if len(document) > DOCUMENT_NUMBER_MAX:
            return {}, (
                f"document number {document!r} is longer than the {DOCUMENT_NUMBER_MAX} "
                "characters Business Central allows; shorten document_number in the field mapping"
            )
        if len(key) > EXTERNAL_DOCUMENT_NUMBER_MAX:
            return {}, "the idempotency key is longer than Business Central's 35 characters"
        text = str(row.text) if _present(row.text) else ""
        # In the gl mode the credit line names the volunteer, who has no line of their own.
        volunteer = (
            str(row.counterparty)
            if account_type == "gl" and int(row.line_no) != 1 and _present(row.counterparty)
            else ""
        )
        amount = to_decimal(int(row.amount_ore))
        return {
            "accountType": ACCOUNT_TYPES[account_type],
            "accountNumber": account,
            "postingDate": str(row.posting_date),
            "documentNumber": document.upper(),
            "externalDocumentNumber": key.upper(),
            "amount": amount,
            "description": _description(text, tag, volunteer),
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
        by_id = dict(zip(_answered_operations(answers, list(owner)), answers, strict=True))
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
def _failed_request(exc: httpx.TransportError) -> httpx.Request | None:
    """The request a transport error happened on (httpx attaches it), if known."""
    try:
        return exc.request
    except RuntimeError:
        return None


def _unknown_account_types(field: str, members: frozenset[str]) -> list[SchemaDrift]:
    """The ``accountType`` values we send that the service's enum lacks. Every claim's expense
    line is a "G/L Account" line, so that one missing is an error; "Employee" or "Vendor"
    missing only fails the balancing mode the mapping picks, so it is a warning."""
    missing = [value for value in ACCOUNT_TYPES.values() if value not in members]
    if not missing:
        return []
    values = ", ".join(sorted(members)) or "nothing"
    if ACCOUNT_TYPES["gl"] in missing:
        return [SchemaDrift.changed(TARGET, field, f"one of {values}", ACCOUNT_TYPES["gl"])]
    return [SchemaDrift.unknown_value(TARGET, field, values, None)]


def _journal_problem(journal: dict[str, Any]) -> str:
    """Why the hub cannot use a journal batch as it is ("" when it can). Only the balancing
    account shows through the API; number series do not (see the connection test's words)."""
    balancing = str(journal.get("balancingAccountNumber") or "")
    if balancing:
        return (
            f"has balancing account {balancing}: every claim line would be balanced a second time"
        )
    return ""


def _description(text: str, tag: str, volunteer: str = "") -> str:
    """A line's description: the volunteer first (the credit line of the gl balancing mode,
    where no employee or vendor line names them), the mapping's text cut to fit with "…", and
    the claim's tag last, where :meth:`DynamicsAdapter.lookup` finds posted entries by it."""
    body = f"{volunteer}: {text}" if volunteer and text else volunteer or text
    room = DESCRIPTION_MAX - len(tag) - 1
    if len(body) > room:
        body = body[: room - 1] + "…"
    return f"{body} {tag}" if body else tag


def _answered_operations(answers: list[Any], sent: list[str]) -> list[str]:
    """The operation id each ``$batch`` answer is about: the id it names, or, where it names
    none (``"id": null``, as in Microsoft's transactional batch example), the operation at its
    position, since answers come in the order the operations were sent. An answer that cannot
    be placed exactly once cannot be trusted: the outcome of the batch is unknown."""
    known = set(sent)
    ids: list[str] = []
    for position, answer in enumerate(answers):
        status = answer.get("status") if isinstance(answer, dict) else None
        if not isinstance(status, int) or isinstance(status, bool):
            raise OutcomeUnknown("Business Central's batch answer is malformed")
        named = answer.get("id")
        if named is None:
            if position >= len(sent):
                raise OutcomeUnknown("Business Central's batch answer has more answers than lines")
            ids.append(sent[position])
        elif str(named) in known:
            ids.append(str(named))
        else:
            raise OutcomeUnknown("Business Central's batch answer names an unknown operation")
    if len(set(ids)) != len(ids):
        raise OutcomeUnknown("Business Central's batch answer answers one line twice")
    return ids


def _csdl_entity(
    document: bytes, name: str
) -> tuple[dict[str, tuple[str, int | None]] | None, dict[str, frozenset[str]]]:
    """From a CSDL (``$metadata``) document: the properties of entity type ``name`` (property
    -> (type, MaxLength)), or None when no schema declares it, and every enum type's members
    (``Namespace.Name`` and ``Alias.Name`` -> values, with CSDL's ``_xHHHH_`` escapes decoded,
    so ``G_x002F_L_x0020_Account`` is "G/L Account")."""
    if _DOCTYPE.search(document):
        # CSDL has no DTD; one could only be there to expand entities.
        raise TransientError("Business Central's $metadata declares a DTD; not read")
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        raise TransientError("Business Central's $metadata is not readable XML") from None
    entity: dict[str, tuple[str, int | None]] | None = None
    enums: dict[str, frozenset[str]] = {}
    for schema in root.iter():
        if _local(schema.tag) != "Schema" or _namespace(schema.tag) not in EDM_NAMESPACES:
            continue
        prefixes = [p for p in (schema.get("Namespace"), schema.get("Alias")) if p]
        for element in schema:
            kind = _local(element.tag)
            if kind == "EnumType":
                members = frozenset(
                    _XML_ESCAPE.sub(lambda code: chr(int(code.group(1), 16)), str(m.get("Name")))
                    for m in element
                    if _local(m.tag) == "Member"
                )
                for prefix in prefixes:
                    enums[f"{prefix}.{element.get('Name')}"] = members
            elif kind == "EntityType" and element.get("Name") == name and entity is None:
                entity = {}
                for prop in element:
                    if _local(prop.tag) != "Property" or not prop.get("Name"):
                        continue
                    length = prop.get("MaxLength") or ""
                    entity[str(prop.get("Name"))] = (
                        str(prop.get("Type") or ""),
                        int(length) if length.isdigit() else None,
                    )
    return entity, enums


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


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


ACCOUNT_KINDS: dict[str, AccountKind] = {
    "Assets": AccountKind.ASSET,
    "Liabilities": AccountKind.LIABILITY,
    "Equity": AccountKind.EQUITY,
    "Income": AccountKind.INCOME,
    "Cost of Goods Sold": AccountKind.EXPENSE,
    "Expense": AccountKind.EXPENSE,
}
"""``NAV.glAccountCategory`` members as account kinds; " " (no category) has none. Cost of goods
sold is an expense in the income statement, so an expense claim may be posted there."""


def account_kind(category: Any) -> AccountKind | None:
    """The kind a G/L account's ``category`` states. Business Central's JSON writes an enum
    member by its CSDL name (``Cost_x0020_of_x0020_Goods_x0020_Sold``, ``_x0020_`` for none):
    decoded first, so both spellings are read."""
    if not isinstance(category, str):
        return None
    name = _XML_ESCAPE.sub(lambda code: chr(int(code.group(1), 16)), category)
    return ACCOUNT_KINDS.get(name.strip())


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
