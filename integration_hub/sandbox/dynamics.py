"""Business Central sandbox: a local fake of Entra ID's token endpoint and BC's API v2.0.

Why: the adapter, the demo and the tests need a Business Central that behaves like the real one
as far as public facts go, plus switches for the failures that matter to exactly-once export.

- ``POST /{tenant}/oauth2/v2.0/token`` (form: client credentials, scope
  ``https://api.businesscentral.dynamics.com/.default``) answers a bearer token with
  ``expires_in``, or Entra-style errors (``invalid_client``, ``unauthorized_client``, AADSTS
  codes).
- ``/v2.0/{tenant}/{environment}/api/v2.0/...``: ``companies``, ``accounts``, ``employees``,
  ``vendors``, ``journals``, ``journalLines`` (GET/POST), ``Microsoft.NAV.post``,
  ``generalLedgerEntries`` and JSON ``$batch`` (at most 100 operations; without headers it stops
  at the first failing operation, ``Prefer: odata.continue-on-error`` goes on, and
  ``Isolation: snapshot`` makes the batch one transaction that a failing operation rolls back).
  Errors are OData bodies ``{"error": {"code", "message"}}``. Collections page server-side
  (``@odata.nextLink``, 50 a page) and take ``$filter`` (``field eq 'value'`` or
  ``endswith(field,'value')``, joined by ``or`` on one field only, as Microsoft's filter page
  says), ``$select`` and ``$top``. A batch answer echoes each operation's ``id`` (``null`` when
  it had none, as in Microsoft's transactional batch example; a tenant can answer ``null``
  throughout, :attr:`Tenant.null_batch_ids`).
- ``GET $metadata``: a CSDL document of the ``journalLine`` entity type, rendered from facts in
  ``specs/dynamics/`` (see its ``SOURCE.md``); a journal line POST accepts exactly what that
  document lists. :meth:`Tenant.change_schema` changes both (a property dropped, retyped or
  shortened, an enum member gone), so a test can prove the adapter's schema check sees it.
- A journal batch may have a Posting No. Series (``Company.add_journal(posting_no_series=…)``):
  posting renumbers the documents, and, as in the real ``journals`` entity, the API cannot show
  it.
- As in the real ``APIV2 - JournalLines`` page (``OnOpenPage`` filters Account Type to
  G/L Account..Bank Account), lines against an employee are created but never listed.
- Codes are upper-cased (Business Central ``Code`` fields); amounts stay ``Decimal`` and are
  written as exact JSON numbers.

Error codes Microsoft documents are used as documented; where the exact code of the real
service is not public (e.g. an unknown environment), the sandbox picks a plausible one.

Each tenant has app registrations (client id + secret, with or without permission in BC),
environments with companies, and its own fault switches and counters. ``/_sandbox/...``
control endpoints (no auth) let a separate process set this up; in-process callers use
:class:`DynamicsSandboxState` directly (:meth:`DynamicsSandboxState.provision`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode
from xml.etree import ElementTree

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from integration_hub.sandbox.faults import FaultSwitches
from integration_hub.sandbox.server import drop_connection, hang

SCOPE = "https://api.businesscentral.dynamics.com/.default"
MAX_BATCH_OPERATIONS = 100
PAGE_SIZE = 50
TOKEN_LIFETIME_S = 3599
CENT = Decimal("0.01")

SPEC_FILE = Path(__file__).parent / "specs" / "dynamics" / "journalLine.json"
"""The journalLine entity type as facts from Microsoft's material (``specs/dynamics/SOURCE.md``)."""
EDMX_NS = "http://docs.oasis-open.org/odata/ns/edmx"
EDM_NS = "http://docs.oasis-open.org/odata/ns/edm"
STRING_TYPES = ("Edm.String", "Edm.Date", "Edm.Guid", "Edm.DateTimeOffset")
"""Types a JSON body carries as a string (an enum type, too); the rest are numbers."""
ElementTree.register_namespace("edmx", EDMX_NS)  # prefixes as CSDL documents write them
ElementTree.register_namespace("", EDM_NS)
READ_ONLY = frozenset({"journalDisplayName", "lastModifiedDateTime"})
"""Accepted in a body (as Microsoft's create example sends them) and ignored."""


@dataclass(frozen=True)
class EdmProperty:
    """One property of an entity type: its name, OData type and string length limit."""

    name: str
    type: str
    max_length: int | None = None
    nullable: bool = True


@dataclass(frozen=True)
class LineSchema:
    """The ``journalLine`` entity type: what ``$metadata`` says and what a POST accepts.

    Why one object for both: a tenant whose schema was changed (:meth:`changed`, as an upgrade
    of Business Central might) must both describe and enforce the change, or a test of the
    adapter's schema check proves nothing.
    """

    namespace: str
    entity: str
    entity_set: str
    key: str
    properties: tuple[EdmProperty, ...]
    enums: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]

    @classmethod
    def load(cls, path: Path = SPEC_FILE) -> LineSchema:
        spec = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            namespace=spec["namespace"],
            entity=spec["entity"],
            entity_set=spec["entity_set"],
            key=spec["key"],
            properties=tuple(
                EdmProperty(p["name"], p["type"], p.get("max_length"), p.get("nullable", True))
                for p in spec["properties"]
            ),
            enums=tuple(
                (name, tuple((str(m), int(v)) for m, v in members))
                for name, members in spec["enums"].items()
            ),
        )

    @cached_property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.properties)

    @cached_property
    def _by_name(self) -> dict[str, EdmProperty]:
        return {p.name: p for p in self.properties}

    @cached_property
    def _enum_types(self) -> dict[str, tuple[str, ...]]:
        return {
            f"{self.namespace}.{name}": tuple(member for member, _ in members)
            for name, members in self.enums
        }

    def get(self, name: str) -> EdmProperty | None:
        return self._by_name.get(name)

    def enum_of(self, prop: EdmProperty) -> tuple[str, ...] | None:
        """The members of the enum type ``prop`` has, or None for a primitive type."""
        return self._enum_types.get(prop.type)

    def changed(
        self,
        *,
        drop: Iterable[str] = (),
        types: Mapping[str, str] | None = None,
        max_lengths: Mapping[str, int] | None = None,
        drop_members: Iterable[str] = (),
    ) -> LineSchema:
        """A copy with properties dropped, retyped or shortened and enum members removed."""
        drop, types, lengths = set(drop), dict(types or {}), dict(max_lengths or {})
        unknown = sorted((drop | set(types) | set(lengths)) - self.names)
        if unknown:
            raise SandboxSetupError(f"journalLine has no property {unknown[0]}")
        gone = set(drop_members)
        return replace(
            self,
            properties=tuple(
                replace(
                    p,
                    type=types.get(p.name, p.type),
                    max_length=lengths.get(p.name, p.max_length),
                )
                for p in self.properties
                if p.name not in drop
            ),
            enums=tuple(
                (name, tuple((m, v) for m, v in members if m not in gone))
                for name, members in self.enums
            ),
        )

    def csdl(self) -> bytes:
        """The CSDL (OData v4 XML) document ``GET .../api/v2.0/$metadata`` answers."""
        edmx = ElementTree.Element(f"{{{EDMX_NS}}}Edmx", {"Version": "4.0"})
        services = ElementTree.SubElement(edmx, f"{{{EDMX_NS}}}DataServices")
        schema = ElementTree.SubElement(services, f"{{{EDM_NS}}}Schema", Namespace=self.namespace)
        for name, members in self.enums:
            enum = ElementTree.SubElement(schema, f"{{{EDM_NS}}}EnumType", Name=name)
            for member, value in members:
                ElementTree.SubElement(
                    enum, f"{{{EDM_NS}}}Member", Name=_xml_name(member), Value=str(value)
                )
        entity = ElementTree.SubElement(schema, f"{{{EDM_NS}}}EntityType", Name=self.entity)
        key = ElementTree.SubElement(entity, f"{{{EDM_NS}}}Key")
        ElementTree.SubElement(key, f"{{{EDM_NS}}}PropertyRef", Name=self.key)
        for prop in self.properties:
            attributes = {"Name": prop.name, "Type": prop.type}
            if not prop.nullable:
                attributes["Nullable"] = "false"
            if prop.max_length is not None:
                attributes["MaxLength"] = str(prop.max_length)
            if prop.type == "Edm.Decimal":
                attributes["Scale"] = "Variable"
            ElementTree.SubElement(entity, f"{{{EDM_NS}}}Property", attributes)
        container = ElementTree.SubElement(schema, f"{{{EDM_NS}}}EntityContainer", Name="NAV")
        ElementTree.SubElement(
            container,
            f"{{{EDM_NS}}}EntitySet",
            Name=self.entity_set,
            EntityType=f"{self.namespace}.{self.entity}",
        )
        return ElementTree.tostring(edmx, encoding="utf-8", xml_declaration=True)


def _xml_name(value: str) -> str:
    """A member name as CSDL writes it: characters an XML name cannot hold become ``_xHHHH_``
    (so "G/L Account" is ``G_x002F_L_x0020_Account``)."""
    return "".join(c if c.isalnum() or c == "_" else f"_x{ord(c):04X}_" for c in value)


LINE_SCHEMA = LineSchema.load()
ACCOUNT_TYPES = LINE_SCHEMA.enum_of(LINE_SCHEMA.get("accountType"))  # type: ignore[arg-type]
assert ACCOUNT_TYPES is not None
LISTED_ACCOUNT_TYPES = ACCOUNT_TYPES[:4]
"""``APIV2 - JournalLines`` OnOpenPage: SetRange("Account Type", G/L Account, Bank Account)."""

CODE_FIELDS = (
    "accountNumber",
    "documentNumber",
    "externalDocumentNumber",
    "balancingAccountNumber",
)
QUERY_OPTIONS = {"$filter", "$select", "$top", "$skiptoken"}

UNAUTHORIZED = "Authentication_InvalidCredentials"
FORBIDDEN = "Authorization_InsufficientPermissions"
NOT_FOUND = "BadRequest_NotFound"
NO_ENVIRONMENT = "NoEnvironment"
BAD_REQUEST = "BadRequest"
DIALOG = "Application_DialogException"
RECORD_NOT_FOUND = "Internal_RecordNotFound"
TOO_LONG = "Application_StringExceededLength"
TOO_MANY_REQUESTS = "Application_TooManyRequests"
UNAVAILABLE = "ServiceUnavailable"
GATEWAY_TIMEOUT = "GatewayTimeout"

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SEGMENT_RE = re.compile(r"^([A-Za-z][\w.]*)(?:\(([^()]*)\))?$")
_CLAUSE_RE = re.compile(r"\s*([A-Za-z]\w*)\s+eq\s+(?:'((?:[^']|'')*)'|([\w.-]+))\s*")
_ENDSWITH_RE = re.compile(r"\s*endswith\(\s*([A-Za-z]\w*)\s*,\s*'((?:[^']|'')*)'\s*\)\s*")
_OR_RE = re.compile(r"or\b", re.IGNORECASE)


class ODataError(Exception):
    """An error the sandbox answers as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class SandboxSetupError(ValueError):
    """A setup call (in process or through ``/_sandbox``) with invalid input."""


# =============================================================================================
# state
# =============================================================================================


@dataclass
class Faults:
    """Per-tenant fault switches for API requests. Counters apply to the next N requests."""

    latency_ms: int = 0
    fail_5xx: int = 0
    throttle: int = 0
    retry_after_s: int = 5
    drop_connection: int = 0
    hang: int = 0
    commit_then_timeout: int = 0
    commit_then_drop: int = 0
    hang_seconds: float = 30.0
    requests_per_second: int | None = None


REQUEST_FAULTS = ("fail_5xx", "throttle", "drop_connection", "hang")
"""Whole-request faults, in the order they are checked; at most one fires per request."""

COMMIT_FAULTS = ("commit_then_timeout", "commit_then_drop")
"""Faults that let a write commit and then spoil the answer; only a request that wrote."""

RATE_FAULT = "requests_per_second"
"""The per-second admission limit field, and the fault a request over that limit meets."""


DEFAULT_ACCOUNTS: tuple[tuple[str, str, str, str, bool, bool], ...] = (
    # number, displayName, category, accountType, blocked, directPosting
    ("1500", "Kundefordringer", "Assets", "Posting", False, False),
    ("1900", "Bankinnskudd og kontanter", "Assets", "Heading", False, False),
    ("1920", "Bank", "Assets", "Posting", False, True),
    ("2400", "Leverandørgjeld", "Liabilities", "Posting", False, False),
    ("2600", "Forskuddstrekk", "Liabilities", "Posting", False, True),
    ("2910", "Gjeld til ansatte", "Liabilities", "Posting", False, True),
    ("2930", "Skyldig lønn", "Liabilities", "Posting", False, True),
    ("3000", "Salgsinntekt", "Income", "Posting", False, True),
    ("3400", "Offentlig tilskudd", "Income", "Posting", False, True),
    ("5000", "Lønn til ansatte", "Expense", "Posting", False, True),
    ("6800", "Kontorrekvisita", "Expense", "Posting", False, True),
    ("6860", "Møter, kurs", "Expense", "Posting", False, True),
    ("7000", "Reise- og transportkostnader", "Expense", "Heading", False, False),
    ("7100", "Bilgodtgjørelse oppgavepliktig", "Expense", "Posting", False, True),
    ("7130", "Reisekostnad oppgavepliktig", "Expense", "Posting", False, True),
    ("7140", "Reisekostnad ikke oppgavepliktig", "Expense", "Posting", False, True),
    ("7150", "Diettkostnad oppgavepliktig", "Expense", "Posting", False, True),
    ("7160", "Diett/kost", "Expense", "Posting", False, True),
    ("7350", "Representasjon", "Expense", "Posting", True, True),
    ("7770", "Bank og kortgebyr", "Expense", "Posting", False, True),
    ("7790", "Annen kostnad", "Expense", "Posting", False, True),
)
"""A small NS 4102-style chart in Business Central's shape: 1900 and 7000 are headings, 7350 is
blocked, and the receivables/payables control accounts 1500 and 2400 take no direct posting."""

DEFAULT_EMPLOYEES = (
    ("1001", "Kari Nordmann"),
    ("1002", "Ola Nordmann"),
    ("1003", "Per Hansen"),
)
DEFAULT_VENDORS = (("50001", "Kari Nordmann (leverandør)"),)
EMPLOYEE_PAYABLES = "2910"
"""The employee posting group's payables account: where a posted employee line lands in G/L."""
VENDOR_PAYABLES = "2400"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(entry: Mapping[str, Any], name: str, default: str = "") -> str:
    value = entry.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise SandboxSetupError(f"{name} must be text")
    return value


ACCOUNT_CATEGORIES = (
    " ",
    "Assets",
    "Liabilities",
    "Equity",
    "Income",
    "Cost of Goods Sold",
    "Expense",
)
"""``NAV.glAccountCategory``: the v2.0 account resource's documented values (" " is none)."""


def _account_category(entry: Mapping[str, Any], number: str) -> str:
    """The account's category as Business Central's JSON writes an enum member: its CSDL name,
    so "Cost of Goods Sold" is ``Cost_x0020_of_x0020_Goods_x0020_Sold`` and none is
    ``_x0020_`` (what public clients of the v2.0 accounts API match on)."""
    value = _text(entry, "category", " ") or " "
    by_name = {_xml_name(member): member for member in ACCOUNT_CATEGORIES}
    member = by_name.get(value, value)
    if member not in ACCOUNT_CATEGORIES:
        raise SandboxSetupError(f"account {number}: unknown category {value}")
    return _xml_name(member)


def _flag(entry: Mapping[str, Any], name: str, default: bool) -> bool:
    value = entry.get(name, default)
    if not isinstance(value, bool):
        raise SandboxSetupError(f"{name} must be true or false")
    return value


def _guid(value: Any, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise SandboxSetupError(f"{what} must be a GUID") from None


def _typed_values(body: Any, schema: LineSchema) -> dict[str, Any]:
    """The properties of a journal line body, checked as Business Central's OData layer checks
    them before any AL code runs: known to the entity type, of its type, within its length, a
    member of its enum. Codes come back in capitals; read-only properties are ignored."""
    if not isinstance(body, dict):
        raise ODataError(400, BAD_REQUEST, "The request body must be a JSON object.")
    unknown = sorted(set(body) - schema.names)
    if unknown:
        raise ODataError(
            400,
            BAD_REQUEST,
            f"The property '{unknown[0]}' does not exist on type "
            f"'{schema.namespace}.{schema.entity}'. Make sure to only use property names that "
            "are defined by the type.",
        )
    values: dict[str, Any] = {}
    for name, value in body.items():
        prop = schema.get(name)
        if value is None or prop is None or name in READ_ONLY:
            continue
        members = schema.enum_of(prop)
        textual = members is not None or prop.type in STRING_TYPES
        if textual and not isinstance(value, str):
            raise ODataError(
                400,
                BAD_REQUEST,
                f"Cannot convert a primitive value to the expected type '{prop.type}' for "
                f"property '{name}'.",
            )
        if not textual and (isinstance(value, bool) or not isinstance(value, int | Decimal)):
            raise ODataError(
                400,
                BAD_REQUEST,
                f"Cannot convert the literal '{value}' to the expected type '{prop.type}'.",
            )
        if prop.max_length is not None and len(value) > prop.max_length:
            raise ODataError(
                400,
                TOO_LONG,
                f"The length of the string is {len(value)}, but it must be less than or "
                f"equal to {prop.max_length} characters. Value: {value}",
            )
        if members is not None and value not in members:
            raise ODataError(
                400,
                BAD_REQUEST,
                f"'{value}' is not an option. The existing options are: " + ",".join(members),
            )
        values[name] = value.upper() if name in CODE_FIELDS else value
    return values


class Company:
    """One company: chart, employees, vendors, journals with lines, posted G/L entries."""

    def __init__(
        self,
        lock: threading.RLock,
        company_id: str,
        name: str,
        accounts: Iterable[Mapping[str, Any]],
        employees: Iterable[Mapping[str, Any]],
        vendors: Iterable[Mapping[str, Any]],
    ) -> None:
        self._lock = lock
        self.id = company_id
        self.name = name
        self.created = _now()
        self._accounts: dict[str, dict[str, Any]] = {}
        self._employees: dict[str, dict[str, Any]] = {}
        self._vendors: dict[str, dict[str, Any]] = {}
        self._journals: dict[str, dict[str, Any]] = {}
        self._lines: dict[str, list[dict[str, Any]]] = {}
        self._entries: list[dict[str, Any]] = []
        self._posting_series: dict[str, str] = {}
        self._posted_documents = 0
        self.set_accounts(accounts)
        self.add_employees(employees)
        self.add_vendors(vendors)

    # -- reference data ------------------------------------------------------------------
    def entity(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "systemVersion": "26.0.0.0",
            "timestamp": 1,
            "name": self.name,
            "displayName": self.name,
            "businessProfileId": "",
            "systemCreatedAt": self.created,
            "systemCreatedBy": str(uuid.UUID(int=0)),
            "systemModifiedAt": self.created,
            "systemModifiedBy": str(uuid.UUID(int=0)),
        }

    @property
    def accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for _, a in sorted(self._accounts.items())]

    @property
    def employees(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for _, e in sorted(self._employees.items())]

    @property
    def vendors(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(v) for _, v in sorted(self._vendors.items())]

    @property
    def journals(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(j) for j in self._journals.values()]

    def set_accounts(self, accounts: Iterable[Mapping[str, Any]]) -> None:
        """Replace the chart. Entries: number, displayName, accountType (Posting), blocked,
        directPosting, category (one of :data:`ACCOUNT_CATEGORIES`, as Business Central names
        it or as its JSON writes it), subCategory."""
        chart: dict[str, dict[str, Any]] = {}
        for entry in accounts:
            if not isinstance(entry, Mapping):
                raise SandboxSetupError("each account must be an object")
            number = _text(entry, "number").upper()
            if not number or len(number) > 20:
                raise SandboxSetupError("each account needs a number of 1-20 characters")
            if number in chart:
                raise SandboxSetupError(f"account {number} is listed twice")
            account_type = _text(entry, "accountType", "Posting")
            if account_type not in ("Posting", "Heading", "Total", "Begin-Total", "End-Total"):
                raise SandboxSetupError(f"account {number}: unknown accountType {account_type}")
            chart[number] = {
                "id": _guid(entry.get("id", uuid.uuid4()), "id"),
                "number": number,
                "displayName": _text(entry, "displayName"),
                "category": _account_category(entry, number),
                "subCategory": _text(entry, "subCategory", "")[:80],
                "blocked": _flag(entry, "blocked", False),
                "accountType": account_type,
                "directPosting": _flag(entry, "directPosting", account_type == "Posting"),
                "netChange": Decimal("0.00"),
                "consolidationTranslationMethod": "Average Rate (Manual)",
                "consolidationDebitAccount": "",
                "consolidationCreditAccount": "",
                "excludeFromConsolidation": False,
                "lastModifiedDateTime": _now(),
            }
        with self._lock:
            self._accounts = chart

    def add_employees(self, employees: Iterable[Mapping[str, Any]]) -> None:
        """Add or replace employees (number, displayName, status Active)."""
        self._add_people(self._employees, employees, "employee")

    def add_vendors(self, vendors: Iterable[Mapping[str, Any]]) -> None:
        """Add or replace vendors (number, displayName, blocked " "/"All")."""
        self._add_people(self._vendors, vendors, "vendor")

    def _add_people(
        self, into: dict[str, dict[str, Any]], entries: Iterable[Mapping[str, Any]], kind: str
    ) -> None:
        checked = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise SandboxSetupError(f"each {kind} must be an object")
            number = _text(entry, "number").upper()
            if not number or len(number) > 20:
                raise SandboxSetupError(f"each {kind} needs a number of 1-20 characters")
            person = {
                "id": _guid(entry.get("id", uuid.uuid4()), "id"),
                "number": number,
                "displayName": _text(entry, "displayName"),
                "lastModifiedDateTime": _now(),
            }
            if kind == "employee":
                person["status"] = _text(entry, "status", "Active")
                person["email"] = _text(entry, "email", "")
            else:
                person["blocked"] = _text(entry, "blocked", " ")
            checked.append(person)
        with self._lock:
            for person in checked:
                into[person["number"]] = person

    def add_journal(
        self,
        code: str = "UTLEGG",
        display_name: str = "Utlegg frivillige",
        *,
        balancing_account_number: str = "",
        journal_id: str | None = None,
        posting_no_series: str = "",
    ) -> dict[str, Any]:
        """A general journal batch (``journals``), optionally with a balancing account.

        ``posting_no_series`` (a prefix such as ``"GJP"``) gives the batch a Posting No. Series:
        posting then renumbers each document (``GJP00001``, ...), so posted G/L entries no longer
        carry the document numbers the lines had. Like the real ``journals`` entity, the API
        never shows it."""
        code = code.strip().upper()
        if not code or len(code) > 10:
            raise SandboxSetupError("a journal code has 1-10 characters")
        balancing = balancing_account_number.strip().upper()
        with self._lock:
            if any(j["code"] == code for j in self._journals.values()):
                raise SandboxSetupError(f"journal {code} exists")
            account = self._accounts.get(balancing) if balancing else None
            if balancing and account is None:
                raise SandboxSetupError(f"balancing account {balancing} is not in the chart")
            journal = {
                "id": _guid(journal_id or uuid.uuid4(), "journal id"),
                "code": code,
                "displayName": display_name,
                "templateDisplayName": "GENERELL",
                "lastModifiedDateTime": _now(),
                "balancingAccountId": account["id"] if account else str(uuid.UUID(int=0)),
                "balancingAccountNumber": balancing,
            }
            self._journals[journal["id"]] = journal
            self._lines[journal["id"]] = []
            if posting_no_series:
                self._posting_series[journal["id"]] = posting_no_series.strip().upper()
            return dict(journal)

    def journal(self, journal_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._journals.get(journal_id.lower())
            if found is None:
                raise ODataError(
                    404, NOT_FOUND, f"The journal with id '{journal_id}' does not exist."
                )
            return found

    def journal_lines(
        self, journal_id: str | None = None, *, listed_only: bool = False
    ) -> list[dict[str, Any]]:
        """Copies of the unposted lines (all journals unless one is named). ``listed_only``:
        only what ``GET journalLines`` shows (not employee lines)."""
        with self._lock:
            ids = [journal_id.lower()] if journal_id else list(self._lines)
            lines = [dict(line) for j in ids for line in self._lines.get(j, [])]
        if listed_only:
            lines = [line for line in lines if line["accountType"] in LISTED_ACCOUNT_TYPES]
        return lines

    @property
    def gl_entries(self) -> list[dict[str, Any]]:
        """Copies of the posted G/L entries."""
        with self._lock:
            return [dict(e) for e in self._entries]

    # -- writes --------------------------------------------------------------------------
    def create_line(
        self, journal_id: str, body: Any, schema: LineSchema = LINE_SCHEMA
    ) -> tuple[dict[str, Any], Callable[[], None]]:
        """Validate ``body`` against ``schema`` (the tenant's journalLine type) and insert one
        journal line; returns it and how to undo the insert."""
        with self._lock:
            journal = self.journal(journal_id)
            line = self._check_line(journal, body, schema)
            lines = self._lines[journal["id"]]
            if "lineNumber" not in line:
                line["lineNumber"] = (max((x["lineNumber"] for x in lines), default=0)) + 10000
            lines.append(line)

            def undo() -> None:
                with self._lock:
                    if line in lines:
                        lines.remove(line)

            return dict(line), undo

    def _check_line(
        self, journal: Mapping[str, Any], body: Any, schema: LineSchema
    ) -> dict[str, Any]:
        values = _typed_values(body, schema)
        account_type = values.get("accountType", "G/L Account")
        try:
            amount = Decimal(values.get("amount", 0))
        except ArithmeticError:
            raise ODataError(
                400, BAD_REQUEST, "Cannot convert the literal to the expected type 'Edm.Decimal'."
            ) from None
        if not amount.is_finite() or amount != amount.quantize(CENT):
            raise ODataError(
                400, DIALOG, f"The amount {amount} has more decimals than the currency allows."
            )
        posting = values.get("postingDate", date.today().isoformat())
        if not _DATE_RE.fullmatch(posting) or _date(posting) is None:
            raise ODataError(
                400,
                BAD_REQUEST,
                f"Cannot convert the literal '{posting}' to the expected type 'Edm.Date'.",
            )
        number = values.get("accountNumber", "")
        account_id = str(uuid.UUID(int=0))
        if number:
            account_id = self._check_account(account_type, number)
        balancing = values.get("balancingAccountNumber", journal["balancingAccountNumber"])
        balancing_id = str(uuid.UUID(int=0))
        if balancing:
            balancing_id = self._check_account("G/L Account", balancing)
        line_number = body.get("lineNumber")
        line: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "journalId": journal["id"],
            "journalDisplayName": journal["code"],
            "accountType": account_type,
            "accountId": account_id,
            "accountNumber": number,
            "postingDate": posting,
            "documentNumber": values.get("documentNumber", ""),
            "externalDocumentNumber": values.get("externalDocumentNumber", ""),
            "amount": amount.quantize(CENT),
            "description": values.get("description", ""),
            "comment": values.get("comment", ""),
            "taxCode": values.get("taxCode", ""),
            "balanceAccountType": "G/L Account",
            "balancingAccountId": balancing_id,
            "balancingAccountNumber": balancing,
            "lastModifiedDateTime": _now(),
        }
        if line_number is not None:
            if isinstance(line_number, bool) or not isinstance(line_number, int):
                raise ODataError(400, BAD_REQUEST, "lineNumber must be an integer.")
            line["lineNumber"] = line_number
        return line

    def _check_account(self, account_type: str, number: str) -> str:
        """The id of a postable account of this type, or the error Business Central gives."""
        if account_type == "G/L Account":
            account = self._accounts.get(number)
            if account is None:
                raise ODataError(400, DIALOG, 'The "accountNumber" does not match to an Account.')
            if account["accountType"] != "Posting":
                raise ODataError(
                    400,
                    DIALOG,
                    f"Account Type must be equal to 'Posting'  in G/L Account: No.={number}. "
                    f"Current value is '{account['accountType']}'.",
                )
            if account["blocked"]:
                raise ODataError(
                    400,
                    DIALOG,
                    f"Blocked must be equal to 'No'  in G/L Account: No.={number}. "
                    "Current value is 'Yes'.",
                )
            if not account["directPosting"]:
                raise ODataError(
                    400,
                    DIALOG,
                    f"Direct Posting must be equal to 'Yes'  in G/L Account: No.={number}. "
                    "Current value is 'No'.",
                )
            return str(account["id"])
        if account_type in ("Employee", "Vendor"):
            people = self._employees if account_type == "Employee" else self._vendors
            person = people.get(number)
            if person is None:
                raise ODataError(
                    400,
                    RECORD_NOT_FOUND,
                    f"The {account_type} does not exist. Identification fields and values: "
                    f"No.='{number}'",
                )
            if person.get("blocked", " ") == "All":
                raise ODataError(
                    400, DIALOG, f"You cannot post because Vendor {number} is blocked (All)."
                )
            return str(uuid.UUID(int=0))
        raise ODataError(400, BAD_REQUEST, f"The sandbox does not model {account_type} accounts.")

    def post_journal(self, journal_id: str) -> Callable[[], None]:
        """``Microsoft.NAV.post``: the journal's lines become G/L entries and leave the journal.
        Refused when the lines do not balance. Returns how to undo the posting."""
        with self._lock:
            journal = self.journal(journal_id)
            lines = self._lines[journal["id"]]
            if not lines:
                raise ODataError(400, DIALOG, "There is nothing to post.")
            total = sum(
                (line["amount"] for line in lines if not line["balancingAccountNumber"]),
                Decimal(0),
            )
            if total != 0:
                raise ODataError(
                    400,
                    DIALOG,
                    f"The lines in General Journal {journal['code']} are out of balance by "
                    f"{total}. Check that posting dates and document numbers are correct.",
                )
            missing = [line for line in lines if not line["accountNumber"]]
            if missing:
                raise ODataError(
                    400,
                    DIALOG,
                    f"Account No. must have a value in line {missing[0]['lineNumber']}.",
                )
            before, documents_before = len(self._entries), self._posted_documents
            posted = list(lines)
            numbers = self._posting_numbers(journal["id"], posted)
            for line in posted:
                document = numbers.get(line["documentNumber"], line["documentNumber"])
                self._entries.append(
                    self._entry(line, self._gl_account(line), line["amount"], document)
                )
                if line["balancingAccountNumber"]:
                    account = line["balancingAccountNumber"]
                    self._entries.append(self._entry(line, account, -line["amount"], document))
            lines.clear()

            def undo() -> None:
                with self._lock:
                    del self._entries[before:]
                    self._posted_documents = documents_before
                    lines[:0] = posted

            return undo

    def _posting_numbers(self, journal_id: str, lines: list[dict[str, Any]]) -> dict[str, str]:
        """Document number -> the one a Posting No. Series gives it ({} without a series)."""
        series = self._posting_series.get(journal_id)
        if not series:
            return {}
        numbers: dict[str, str] = {}
        for line in lines:
            if line["documentNumber"] not in numbers:
                self._posted_documents += 1
                numbers[line["documentNumber"]] = f"{series}{self._posted_documents:05d}"
        return numbers

    def _gl_account(self, line: Mapping[str, Any]) -> str:
        if line["accountType"] == "Employee":
            return EMPLOYEE_PAYABLES
        if line["accountType"] == "Vendor":
            return VENDOR_PAYABLES
        return str(line["accountNumber"])

    def _entry(
        self, line: Mapping[str, Any], account: str, amount: Decimal, document: str
    ) -> dict[str, Any]:
        number = len(self._entries) + 1
        found = self._accounts.get(account)
        return {
            "id": str(uuid.uuid4()),
            "entryNumber": number,
            "postingDate": line["postingDate"],
            "documentNumber": document,
            "documentType": " ",
            "accountId": found["id"] if found else str(uuid.UUID(int=0)),
            "accountNumber": account,
            "description": line["description"],
            "debitAmount": amount if amount > 0 else Decimal("0.00"),
            "creditAmount": -amount if amount < 0 else Decimal("0.00"),
            "additionalCurrencyDebitAmount": Decimal("0.00"),
            "additionalCurrencyCreditAmount": Decimal("0.00"),
            "lastModifiedDateTime": _now(),
        }


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


class Environment:
    """One environment (production, sandbox, …) of a tenant: its companies by id."""

    def __init__(self, name: str, lock: threading.RLock) -> None:
        self.name = name
        self._lock = lock
        self.companies: dict[str, Company] = {}

    def add_company(
        self,
        name: str = "Frivillig Norge",
        *,
        company_id: str | None = None,
        accounts: Iterable[Mapping[str, Any]] | None = None,
        employees: Iterable[Mapping[str, Any]] | None = None,
        vendors: Iterable[Mapping[str, Any]] | None = None,
    ) -> Company:
        company = Company(
            self._lock,
            _guid(company_id or uuid.uuid4(), "company id"),
            name,
            default_accounts() if accounts is None else accounts,
            default_employees() if employees is None else employees,
            default_vendors() if vendors is None else vendors,
        )
        with self._lock:
            self.companies[company.id] = company
        return company


@dataclass
class Client:
    """An app registration in the tenant; ``permitted`` = has a permission set in BC."""

    client_id: str
    client_secret: str
    permitted: bool = True


class Tenant:
    """One customer's Entra tenant: app registrations, environments, faults and counters."""

    def __init__(self, tenant_id: str, lock: threading.RLock) -> None:
        self.tenant_id = tenant_id
        self._lock = lock
        self.clients: dict[str, Client] = {}
        self.environments: dict[str, Environment] = {}
        self._faults = FaultSwitches(
            Faults(), REQUEST_FAULTS, COMMIT_FAULTS, RATE_FAULT, lock=lock, error=SandboxSetupError
        )
        self.token_lifetime_s = TOKEN_LIFETIME_S
        self.requests = 0
        self.batches = 0
        self.token_requests = 0
        self.schema = LINE_SCHEMA
        """The journalLine type its environments describe (``$metadata``) and enforce."""
        self.null_batch_ids = False
        """Answer every ``$batch`` operation with ``"id": null``, as Microsoft's transactional
        batch example shows, instead of echoing the ids sent (absent ids are null anyway)."""

    def change_schema(self, **changes: Any) -> LineSchema:
        """Change the journalLine type from the default (:meth:`LineSchema.changed`: ``drop``,
        ``types``, ``max_lengths``, ``drop_members``), as an upgrade of Business Central might;
        no changes restore the default."""
        schema = LINE_SCHEMA.changed(**changes) if changes else LINE_SCHEMA
        with self._lock:
            self.schema = schema
        return schema

    def add_client(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        permitted: bool = True,
    ) -> Client:
        client = Client(
            _guid(client_id or uuid.uuid4(), "client id"),
            client_secret or secrets.token_urlsafe(24),
            permitted,
        )
        with self._lock:
            self.clients[client.client_id] = client
        return client

    def add_environment(self, name: str = "production") -> Environment:
        with self._lock:
            existing = self.environments.get(name.lower())
            if existing is not None:
                return existing
            environment = Environment(name, self._lock)
            self.environments[name.lower()] = environment
            return environment

    @property
    def faults(self) -> Faults:
        """The live fault switches (read them under the lock for a consistent view)."""
        return self._faults.faults

    def set_faults(self, **changes: Any) -> Faults:
        """Set fault fields by name (validated); returns a copy of the resulting faults."""
        return self._faults.set(**changes)

    def begin_request(self) -> str | None:
        """Count an authenticated API request and decide which whole-request fault it meets."""
        with self._lock:
            self.requests += 1
            return self._faults.take_request_fault()

    def take_commit_fault(self) -> tuple[str | None, float]:
        return self._faults.take_commit_fault()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "batches": self.batches,
                "token_requests": self.token_requests,
                "faults": asdict(self.faults),
            }


@dataclass(frozen=True)
class Grant:
    tenant_id: str
    client_id: str
    expires_at: float  # time.monotonic()


@dataclass(frozen=True)
class Provisioned:
    """What :meth:`DynamicsSandboxState.provision` set up: the adapter's settings and the
    objects behind them."""

    tenant_id: str
    client_id: str
    client_secret: str
    environment: str
    company_id: str
    journal_id: str
    journal_code: str
    tenant: Tenant = field(repr=False)
    company: Company = field(repr=False)

    def settings(self, url: str) -> dict[str, Any]:
        """Adapter configuration (secret included) pointing both URLs at the sandbox."""
        return {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "environment": self.environment,
            "company_id": self.company_id,
            "journal_id": self.journal_id,
            "base_url": url,
            "token_url": url,
        }


class DynamicsSandboxState:
    """All tenants and issued tokens of one sandbox. Thread-safe: uvicorn serves from another
    thread."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tenants: dict[str, Tenant] = {}
        self._grants: dict[str, Grant] = {}

    # -- setup ---------------------------------------------------------------------------
    def add_tenant(self, tenant_id: str | None = None) -> Tenant:
        tenant_id = (tenant_id or str(uuid.uuid4())).strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", tenant_id):
            raise SandboxSetupError("a tenant id is a GUID or a domain name")
        with self._lock:
            existing = self._tenants.get(tenant_id.lower())
            if existing is not None:
                return existing
            tenant = Tenant(tenant_id, self._lock)
            self._tenants[tenant_id.lower()] = tenant
            return tenant

    def provision(
        self,
        *,
        tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        environment: str = "production",
        company_name: str = "Frivillig Norge",
        company_id: str | None = None,
        journal_code: str = "UTLEGG",
        journal_id: str | None = None,
        accounts: Iterable[Mapping[str, Any]] | None = None,
        employees: Iterable[Mapping[str, Any]] | None = None,
        vendors: Iterable[Mapping[str, Any]] | None = None,
        permitted: bool = True,
    ) -> Provisioned:
        """A tenant (new unless named), an app registration, an environment, a company with
        the default chart, employees, vendors and one general journal."""
        tenant = self.add_tenant(tenant_id)
        client = tenant.add_client(client_id, client_secret, permitted=permitted)
        env = tenant.add_environment(environment)
        company = env.add_company(
            company_name,
            company_id=company_id,
            accounts=accounts,
            employees=employees,
            vendors=vendors,
        )
        journal = company.add_journal(journal_code, journal_id=journal_id)
        return Provisioned(
            tenant_id=tenant.tenant_id,
            client_id=client.client_id,
            client_secret=client.client_secret,
            environment=env.name,
            company_id=company.id,
            journal_id=journal["id"],
            journal_code=journal["code"],
            tenant=tenant,
            company=company,
        )

    def find_tenant(self, tenant_id: str) -> Tenant | None:
        with self._lock:
            return self._tenants.get(tenant_id.lower())

    def tenant(self, tenant_id: str) -> Tenant:
        found = self.find_tenant(tenant_id)
        if found is None:
            raise KeyError(f"no sandbox tenant {tenant_id!r}")
        return found

    @property
    def tenant_ids(self) -> list[str]:
        with self._lock:
            return sorted(t.tenant_id for t in self._tenants.values())

    def reset(self) -> None:
        """Forget every tenant and token."""
        with self._lock:
            self._tenants.clear()
            self._grants.clear()

    # -- tokens --------------------------------------------------------------------------
    def issue_token(self, tenant_id: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer (status, JSON) for a client-credentials form."""
        tenant = self.find_tenant(tenant_id)
        if tenant is None:
            return _aad_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant_id}' not found. Check to make sure you have the correct "
                "tenant ID and are signing into the correct cloud.",
            )
        with self._lock:
            tenant.token_requests += 1
        grant_type = form.get("grant_type")
        if not grant_type:
            return _aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant_type != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        client = tenant.clients.get(str(form.get("client_id", "")).lower())
        if client is None:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id', '')}' was not found in "
                f"the directory '{tenant.tenant_id}'.",
            )
        if not secrets.compare_digest(
            str(form.get("client_secret", "")).encode(), client.client_secret.encode()
        ):
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID.",
            )
        if form.get("scope") != SCOPE:
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier.",
            )
        token = "sbx." + secrets.token_urlsafe(32)
        lifetime = tenant.token_lifetime_s
        with self._lock:
            self._grants[token] = Grant(
                tenant.tenant_id, client.client_id, time.monotonic() + lifetime
            )
        return 200, {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }

    def grant_for(self, authorization: str | None) -> Grant | None:
        """The live grant behind ``Authorization: Bearer <token>``, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        with self._lock:
            grant = self._grants.get(token.strip())
        if grant is None or grant.expires_at <= time.monotonic():
            return None
        return grant

    def revoke_tokens(self, tenant_id: str | None = None) -> int:
        """Invalidate issued tokens (of one tenant, or all): the next request gets 401."""
        with self._lock:
            doomed = [
                t
                for t, g in self._grants.items()
                if tenant_id is None or g.tenant_id.lower() == tenant_id.lower()
            ]
            for token in doomed:
                del self._grants[token]
            return len(doomed)


def _aad_error(status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
    trace = str(uuid.uuid4())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} "
        f"Correlation ID: {uuid.uuid4()} Timestamp: {_now()}",
        "error_codes": [code],
        "timestamp": _now(),
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
    }


def default_accounts() -> list[dict[str, Any]]:
    return [
        {
            "number": number,
            "displayName": name,
            "category": category,
            "accountType": kind,
            "blocked": blocked,
            "directPosting": direct,
        }
        for number, name, category, kind, blocked, direct in DEFAULT_ACCOUNTS
    ]


def default_employees() -> list[dict[str, Any]]:
    return [{"number": n, "displayName": name} for n, name in DEFAULT_EMPLOYEES]


def default_vendors() -> list[dict[str, Any]]:
    return [{"number": n, "displayName": name} for n, name in DEFAULT_VENDORS]


# =============================================================================================
# JSON, OData queries
# =============================================================================================


def dumps(value: Any) -> bytes:
    """JSON with ``Decimal`` as an exact number: what Business Central's ``Edm.Decimal`` is."""
    return _json(value).encode("utf-8")


def _json(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _loads(raw: bytes) -> Any:
    """Request JSON with numbers as exact values (never float)."""
    return json.loads(raw, parse_float=Decimal)


def _parse_filter(text: str, entity: str, allowed: Iterable[str]) -> list[tuple[str, str, str]]:
    """``a eq 'x' or endswith(a,'y')`` -> [(a, eq, x), (a, endswith, y)]; anything else is a
    400 as in OData. Like Business Central, ``or`` may only join clauses on one field."""
    names = set(allowed)
    clauses: list[tuple[str, str, str]] = []
    position = 0
    while True:
        match = _CLAUSE_RE.match(text, position)
        if match is not None:
            name, quoted, bare = match.groups()
            operator = "eq"
        else:
            match = _ENDSWITH_RE.match(text, position)
            if match is None:
                raise ODataError(
                    400, BAD_REQUEST, f"Could not parse $filter at position {position}: {text!r}"
                )
            (name, quoted), bare, operator = match.groups(), None, "endswith"
        if name not in names:
            raise ODataError(
                400,
                BAD_REQUEST,
                f"Could not find a property named '{name}' on type 'Microsoft.NAV.{entity}'.",
            )
        if clauses and clauses[0][0] != name:
            raise ODataError(
                400,
                BAD_REQUEST,
                "An 'or' can only join filters on the same field; got "
                f"'{clauses[0][0]}' and '{name}'.",
            )
        value = quoted.replace("''", "'") if quoted is not None else str(bare)
        clauses.append((name, operator, value))
        position = match.end()
        if position >= len(text):
            return clauses
        joiner = _OR_RE.match(text, position)
        if joiner is None:
            raise ODataError(
                400,
                BAD_REQUEST,
                "The sandbox supports $filter clauses 'field eq value' and "
                f"'endswith(field,value)' joined by 'or'; got {text!r}",
            )
        position = joiner.end()


def _matches(entity: Mapping[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
    for name, operator, value in clauses:
        field_value = entity.get(name)
        if isinstance(field_value, bool):
            shown = "true" if field_value else "false"
        elif isinstance(field_value, Decimal):
            shown = format(field_value, "f")
        else:
            shown = "" if field_value is None else str(field_value)
        if shown == value or (operator == "endswith" and shown.endswith(value)):
            return True
    return False


def _encode_token(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode("ascii")


def _decode_token(token: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise ODataError(400, BAD_REQUEST, "The $skiptoken is not valid.") from None


def _collection(
    entities: list[dict[str, Any]],
    query: Mapping[str, str],
    *,
    entity: str,
    sort_key: str,
    link: str,
    page_size: int,
) -> dict[str, Any]:
    """Server-driven paging over ``entities`` with ``$filter``, ``$select`` and ``$top``."""
    unsupported = sorted(k for k in query if k.startswith("$") and k not in QUERY_OPTIONS)
    if unsupported:
        raise ODataError(
            400, BAD_REQUEST, f"The query option {unsupported[0]} is not supported by the sandbox."
        )
    rows = entities
    if "$filter" in query:
        allowed = set(entities[0]) if entities else _ENTITY_FIELDS.get(entity, set())
        clauses = _parse_filter(
            query["$filter"], entity, allowed | _ENTITY_FIELDS.get(entity, set())
        )
        rows = [row for row in rows if _matches(row, clauses)]
    rows = sorted(rows, key=lambda row: row[sort_key])
    if "$top" in query:
        try:
            top = int(query["$top"])
        except ValueError:
            raise ODataError(400, BAD_REQUEST, "$top must be a non-negative integer.") from None
        if top < 0:
            raise ODataError(400, BAD_REQUEST, "$top must be a non-negative integer.")
        rows = rows[:top]
    if "$skiptoken" in query:
        after = _decode_token(query["$skiptoken"])
        rows = [row for row in rows if row[sort_key] > after]
    page, more = rows[:page_size], len(rows) > page_size
    body: dict[str, Any] = {"@odata.context": f"{link}/$metadata#{entity}", "value": []}
    select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]
    for row in page:
        body["value"].append({k: row[k] for k in select if k in row} if select else row)
    if more:
        rest = {k: v for k, v in query.items() if k != "$skiptoken"}
        rest["$skiptoken"] = _encode_token(page[-1][sort_key])
        body["@odata.nextLink"] = f"{link}?{urlencode(rest)}"
    return body


_ENTITY_FIELDS: dict[str, set[str]] = {
    "journalLine": set(LINE_SCHEMA.names),
    "generalLedgerEntry": {
        "id",
        "entryNumber",
        "postingDate",
        "documentNumber",
        "documentType",
        "accountId",
        "accountNumber",
        "description",
        "debitAmount",
        "creditAmount",
    },
    "journal": {"id", "code", "displayName", "balancingAccountNumber"},
    "account": {
        "id",
        "number",
        "displayName",
        "category",
        "subCategory",
        "accountType",
        "blocked",
        "directPosting",
    },
    "employee": {"id", "number", "displayName", "status"},
    "vendor": {"id", "number", "displayName", "blocked"},
    "company": {"id", "name", "displayName"},
}
"""Filterable fields when a collection is empty (an empty list still knows its type)."""


def _one(entity: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]
    return {k: entity[k] for k in select if k in entity} if select else dict(entity)


# =============================================================================================
# API
# =============================================================================================


@dataclass
class _Outcome:
    status: int
    body: Any = None
    """JSON to write, or bytes sent as they are (the ``$metadata`` XML)."""
    wrote: bool = False
    media_type: str = "application/json"


def _segments(path: str) -> list[tuple[str, str | None]]:
    parts = []
    for raw in [p for p in path.strip("/").split("/") if p]:
        match = _SEGMENT_RE.match(raw)
        if match is None:
            raise ODataError(404, NOT_FOUND, f"No HTTP resource was found for segment '{raw}'.")
        name, key = match.groups()
        if key is not None:
            key = key.strip()
            if len(key) >= 2 and key[0] == key[-1] == "'":
                key = key[1:-1]
        parts.append((name, key))
    return parts


class _Api:
    """Routes one API call (direct or inside a batch) to the state."""

    def __init__(self, state: DynamicsSandboxState) -> None:
        self.state = state
        self.page_size = PAGE_SIZE

    def call(
        self,
        tenant: Tenant,
        environment: str,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: Any,
        root: str,
        undo: list[Callable[[], None]] | None = None,
    ) -> _Outcome:
        env = tenant.environments.get(environment.lower())
        if env is None:
            raise ODataError(
                404,
                NO_ENVIRONMENT,
                f"Environment '{environment}' does not exist for tenant {tenant.tenant_id}.",
            )
        parts = _segments(path)
        if not parts or parts[0][0] != "companies":
            raise ODataError(404, NOT_FOUND, f"No HTTP resource was found for '{path}'.")
        if len(parts) == 1 and parts[0][1] is None:
            self._only(method, "GET")
            with self.state._lock:
                companies = [c.entity() for c in env.companies.values()]
            return _Outcome(
                200,
                _collection(
                    companies,
                    query,
                    entity="company",
                    sort_key="name",
                    link=f"{root}/companies",
                    page_size=self.page_size,
                ),
            )
        company = env.companies.get(str(parts[0][1] or "").lower())
        if company is None:
            raise ODataError(404, NOT_FOUND, f"The company with id '{parts[0][1]}' does not exist.")
        base = f"{root}/companies({company.id})"
        if len(parts) == 1:
            self._only(method, "GET")
            return _Outcome(200, _one(company.entity(), query))
        name, key = parts[1]
        rest = parts[2:]
        if name == "journals" and key is not None and rest:
            return self._journal_child(tenant, company, key, rest, method, query, body, base, undo)
        if rest:
            raise ODataError(404, NOT_FOUND, f"No HTTP resource was found for '{path}'.")
        self._only(method, "GET")
        listings: dict[str, tuple[Callable[[], list[dict[str, Any]]], str, str]] = {
            "accounts": (lambda: company.accounts, "account", "number"),
            "employees": (lambda: company.employees, "employee", "number"),
            "vendors": (lambda: company.vendors, "vendor", "number"),
            "journals": (lambda: company.journals, "journal", "code"),
            "generalLedgerEntries": (
                lambda: company.gl_entries,
                "generalLedgerEntry",
                "entryNumber",
            ),
        }
        if name not in listings:
            raise ODataError(404, NOT_FOUND, f"No HTTP resource was found for '{path}'.")
        read, entity, sort_key = listings[name]
        rows = read()
        if key is not None:
            found = next((r for r in rows if str(r["id"]) == key.lower()), None)
            if found is None:
                raise ODataError(404, NOT_FOUND, f"The {entity} with id '{key}' does not exist.")
            return _Outcome(200, _one(found, query))
        return _Outcome(
            200,
            _collection(
                rows,
                query,
                entity=entity,
                sort_key=sort_key,
                link=f"{base}/{name}",
                page_size=self.page_size,
            ),
        )

    def _journal_child(
        self,
        tenant: Tenant,
        company: Company,
        journal_id: str,
        rest: list[tuple[str, str | None]],
        method: str,
        query: Mapping[str, str],
        body: Any,
        base: str,
        undo: list[Callable[[], None]] | None,
    ) -> _Outcome:
        journal = company.journal(journal_id)
        name, key = rest[0]
        if len(rest) == 1 and name == "Microsoft.NAV.post":
            self._only(method, "POST")
            reverse = company.post_journal(journal["id"])
            if undo is not None:
                undo.append(reverse)
            return _Outcome(204, None, wrote=True)
        if len(rest) != 1 or name != "journalLines":
            raise ODataError(404, NOT_FOUND, "No HTTP resource was found for this path.")
        if method == "POST" and key is None:
            line, reverse = company.create_line(journal["id"], body, tenant.schema)
            if undo is not None:
                undo.append(reverse)
            return _Outcome(201, line, wrote=True)
        self._only(method, "GET")
        rows = company.journal_lines(journal["id"], listed_only=True)
        if key is not None:
            found = next((r for r in rows if r["id"] == key.lower()), None)
            if found is None:
                raise ODataError(404, NOT_FOUND, f"The journalLine with id '{key}' does not exist.")
            return _Outcome(200, _one(found, query))
        return _Outcome(
            200,
            _collection(
                rows,
                query,
                entity="journalLine",
                sort_key="lineNumber",
                link=f"{base}/journals({journal['id']})/journalLines",
                page_size=self.page_size,
            ),
        )

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise ODataError(405, "BadRequest_MethodNotAllowed", f"'{method}' is not allowed.")

    def metadata(self, tenant: Tenant, environment: str, method: str) -> _Outcome:
        """``GET $metadata``: the CSDL document of the tenant's journalLine type."""
        self._only(method, "GET")
        if environment.lower() not in tenant.environments:
            raise ODataError(
                404,
                NO_ENVIRONMENT,
                f"Environment '{environment}' does not exist for tenant {tenant.tenant_id}.",
            )
        with self.state._lock:
            schema = tenant.schema
        return _Outcome(200, schema.csdl(), media_type="application/xml")

    def batch(
        self,
        tenant: Tenant,
        environment: str,
        payload: Any,
        headers: Mapping[str, str],
        root: str,
    ) -> _Outcome:
        """JSON ``$batch``: operations in order; see the module docstring for the headers."""
        if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
            raise ODataError(400, BAD_REQUEST, "A JSON batch needs a 'requests' array.")
        operations = payload["requests"]
        if len(operations) > MAX_BATCH_OPERATIONS:
            raise ODataError(
                400,
                BAD_REQUEST,
                f"The batch has {len(operations)} operations; at most {MAX_BATCH_OPERATIONS} "
                "are allowed.",
            )
        for op in operations:
            if not isinstance(op, dict) or not isinstance(op.get("url"), str):
                raise ODataError(400, BAD_REQUEST, "Each batch request needs a url.")
            if "atomicityGroup" in op or "dependsOn" in op:
                raise ODataError(
                    400, BAD_REQUEST, "atomicityGroup and dependsOn are not supported."
                )
            if op.get("method", "GET") not in ("GET", "POST", "PATCH", "DELETE"):
                raise ODataError(400, BAD_REQUEST, f"Unsupported method {op.get('method')}.")
        snapshot = headers.get("isolation", "").strip().lower() == "snapshot"
        go_on = "odata.continue-on-error" in headers.get("prefer", "").lower()
        undo: list[Callable[[], None]] = []
        answers: list[dict[str, Any]] = []
        wrote = False
        with self.state._lock:
            tenant.batches += 1
            for op in operations:
                path, _, raw_query = op["url"].partition("?")
                if path.startswith(root):
                    path = path[len(root) :]
                query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
                try:
                    outcome = self.call(
                        tenant,
                        environment,
                        op.get("method", "GET"),
                        path,
                        query,
                        op.get("body"),
                        root,
                        undo,
                    )
                except ODataError as error:
                    outcome = _Outcome(error.status, error.body())
                # Microsoft's example answers "id": null (its requests name no id); a named
                # id is echoed unless the tenant answers null for every operation.
                answer: dict[str, Any] = {
                    "id": None if tenant.null_batch_ids else op.get("id"),
                    "status": outcome.status,
                    "headers": {
                        "content-type": "application/json; odata.metadata=minimal",
                        "odata-version": "4.0",
                    }
                    if outcome.body is not None
                    else {},
                }
                if outcome.body is not None:
                    answer["body"] = outcome.body
                answers.append(answer)
                wrote = wrote or outcome.wrote
                if outcome.status >= 400:
                    if snapshot:
                        for reverse in reversed(undo):
                            reverse()
                        wrote = False
                        break
                    if not go_on:
                        break
        return _Outcome(200, {"responses": answers}, wrote=wrote)


class _ApiEndpoint:
    """Raw ASGI app for the API: raw so faults can hang or cut the connection."""

    def __init__(self, state: DynamicsSandboxState) -> None:
        self.state = state
        self.api = _Api(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        params = scope.get("path_params", {})
        tenant_id, environment = params["tenant"], params["environment"]
        grant = self.state.grant_for(request.headers.get("authorization"))
        tenant = self.state.find_tenant(grant.tenant_id) if grant else None
        client = tenant.clients.get(grant.client_id) if tenant and grant else None
        if tenant is None or client is None or tenant.tenant_id.lower() != tenant_id.lower():
            error = ODataError(401, UNAUTHORIZED, "The server has rejected the client credentials.")
            headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            await _odata(error.status, error.body(), headers)(scope, receive, send)
            return
        fault = tenant.begin_request()
        if tenant.faults.latency_ms > 0:
            await asyncio.sleep(tenant.faults.latency_ms / 1000)
        if fault is not None:
            await self._answer_fault(tenant, fault, scope, receive, send)
            return
        if not client.permitted:
            error = ODataError(
                403,
                FORBIDDEN,
                "You do not have the following permissions on TableData Company: Read.",
            )
            await _odata(error.status, error.body())(scope, receive, send)
            return
        root = (
            f"{request.url.scheme}://{request.url.netloc}/v2.0/{tenant_id}/{environment}/api/v2.0"
        )
        outcome = self._run(tenant, environment, request, raw, root)
        if isinstance(outcome.body, bytes):
            encoded = outcome.body
        else:
            encoded = dumps(outcome.body) if outcome.body is not None else b""
        if outcome.wrote:
            after, hang_seconds = tenant.take_commit_fault()
            if after == "commit_then_drop":
                await drop_connection(send, encoded, outcome.status)
                return
            if after == "commit_then_timeout":
                ending = await hang(receive, hang_seconds)
                if ending == "disconnected":
                    return
                if ending == "shutdown":
                    await drop_connection(send, encoded, outcome.status)
                    return
        response = Response(
            encoded if outcome.body is not None else None,
            status_code=outcome.status,
            media_type=outcome.media_type if outcome.body is not None else None,
            headers={"OData-Version": "4.0"},
        )
        await response(scope, receive, send)

    def _run(
        self, tenant: Tenant, environment: str, request: Request, raw: bytes, root: str
    ) -> _Outcome:
        method = request.method
        path = request.path_params["rest"]
        query = dict(request.query_params)
        try:
            body = _loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            return _Outcome(400, ODataError(400, BAD_REQUEST, "The body is not JSON.").body())
        try:
            if path.strip("/") == "$batch":
                if method != "POST":
                    raise ODataError(405, "BadRequest_MethodNotAllowed", "$batch takes POST.")
                headers = {k.lower(): v for k, v in request.headers.items()}
                return self.api.batch(tenant, environment, body, headers, root)
            if path.strip("/") == "$metadata":
                return self.api.metadata(tenant, environment, method)
            with self.state._lock:
                return self.api.call(tenant, environment, method, path, query, body, root)
        except ODataError as error:
            return _Outcome(error.status, error.body())

    async def _answer_fault(
        self, tenant: Tenant, fault: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if fault == "drop_connection":
            await drop_connection(send, b'{"error": {"code": "Unknown", "message": "lost"}}')
            return
        if fault == "fail_5xx":
            error = ODataError(503, UNAVAILABLE, "The service is temporarily unavailable.")
            await _odata(error.status, error.body())(scope, receive, send)
            return
        if fault == "hang":
            ending = await hang(receive, tenant.faults.hang_seconds)
            if ending == "timeout":
                error = ODataError(504, GATEWAY_TIMEOUT, "The upstream server did not answer.")
                await _odata(error.status, error.body())(scope, receive, send)
            elif ending == "shutdown":
                await drop_connection(send, b"{}")
            return
        # throttle or requests_per_second
        limit = tenant.faults.requests_per_second
        wait = 1 if fault == "requests_per_second" else tenant.faults.retry_after_s
        error = ODataError(
            429,
            TOO_MANY_REQUESTS,
            f"Too many requests reached. Actual ({(limit or 0) + 1}). Maximum ({limit or 0}).",
        )
        headers = {"Retry-After": str(wait)}
        await _odata(error.status, error.body(), headers)(scope, receive, send)


def _odata(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"OData-Version": "4.0", **(headers or {})},
    )


# =============================================================================================
# token endpoint and control endpoints
# =============================================================================================


def _token_route(state: DynamicsSandboxState) -> Route:
    async def token(request: Request) -> Response:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            status, body = _aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must be application/x-www-form-urlencoded.",
            )
            return JSONResponse(body, status_code=status)
        form = {
            k: v[0]
            for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()
        }
        status, body = state.issue_token(request.path_params["tenant"], form)
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    return Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"])


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    return json.loads(raw)


def _control_routes(state: DynamicsSandboxState) -> list[Route]:
    """Setup and inspection over HTTP, for a sandbox running in another process."""

    def tenant_or_404(request: Request) -> Tenant | JSONResponse:
        tenant = state.find_tenant(request.path_params["tenant"])
        if tenant is None:
            return JSONResponse({"error": "no such tenant"}, status_code=404)
        return tenant

    def company_or_404(request: Request) -> Company | JSONResponse:
        tenant = tenant_or_404(request)
        if isinstance(tenant, JSONResponse):
            return tenant
        env = tenant.environments.get(request.path_params["environment"].lower())
        company = env.companies.get(request.path_params["company"].lower()) if env else None
        if company is None:
            return JSONResponse({"error": "no such company"}, status_code=404)
        return company

    async def provision(request: Request) -> Response:
        try:
            spec = await _json_body(request) or {}
            if not isinstance(spec, dict):
                raise SandboxSetupError("expected a JSON object")
            allowed = {
                "tenant_id",
                "client_id",
                "client_secret",
                "environment",
                "company_name",
                "company_id",
                "journal_code",
                "accounts",
                "employees",
                "vendors",
                "permitted",
            }
            unknown = sorted(set(spec) - allowed)
            if unknown:
                raise SandboxSetupError(f"unknown field(s): {', '.join(unknown)}")
            made = state.provision(**spec)
        except (SandboxSetupError, ValueError, TypeError) as error:
            return _bad_request(str(error))
        # The sandbox's own made-up secret: fine to return, nothing real is behind it.
        body = {f.name: getattr(made, f.name) for f in fields(made) if f.repr}
        return JSONResponse(body, status_code=201)

    async def set_faults(request: Request) -> Response:
        tenant = tenant_or_404(request)
        if isinstance(tenant, JSONResponse):
            return tenant
        try:
            changes = await _json_body(request)
            if not isinstance(changes, dict):
                raise SandboxSetupError("expected a JSON object of fault fields")
            faults = tenant.set_faults(**changes)
        except (SandboxSetupError, ValueError) as error:
            return _bad_request(str(error))
        return JSONResponse(asdict(faults))

    async def options(request: Request) -> Response:
        """``{"null_batch_ids": bool, "schema": {drop, types, max_lengths, drop_members}}``."""
        tenant = tenant_or_404(request)
        if isinstance(tenant, JSONResponse):
            return tenant
        try:
            changes = await _json_body(request)
            if not isinstance(changes, dict) or set(changes) - {"null_batch_ids", "schema"}:
                raise SandboxSetupError("expected an object with null_batch_ids and/or schema")
            flag = changes.get("null_batch_ids", tenant.null_batch_ids)
            schema = changes.get("schema")
            if not isinstance(flag, bool) or not isinstance(schema, dict | None):
                raise SandboxSetupError("null_batch_ids is true or false; schema an object")
            if schema is not None:
                tenant.change_schema(**schema)
            tenant.null_batch_ids = flag
        except (SandboxSetupError, ValueError, TypeError) as error:
            return _bad_request(str(error))
        names = sorted(tenant.schema.names)
        return JSONResponse({"null_batch_ids": tenant.null_batch_ids, "properties": names})

    async def stats(request: Request) -> Response:
        tenant = tenant_or_404(request)
        if isinstance(tenant, JSONResponse):
            return tenant
        return JSONResponse(tenant.stats())

    async def revoke(request: Request) -> Response:
        tenant = tenant_or_404(request)
        if isinstance(tenant, JSONResponse):
            return tenant
        return JSONResponse({"revoked": state.revoke_tokens(tenant.tenant_id)})

    async def ledger(request: Request) -> Response:
        company = company_or_404(request)
        if isinstance(company, JSONResponse):
            return company
        body = {"journalLines": company.journal_lines(), "generalLedgerEntries": company.gl_entries}
        return Response(dumps(body), media_type="application/json")

    async def people(request: Request) -> Response:
        company = company_or_404(request)
        if isinstance(company, JSONResponse):
            return company
        kind = request.path_params["kind"]
        try:
            entries = await _json_body(request)
            if not isinstance(entries, list):
                raise SandboxSetupError(f"expected a JSON list of {kind}")
            if kind == "employees":
                company.add_employees(entries)
            elif kind == "vendors":
                company.add_vendors(entries)
            elif kind == "accounts":
                company.set_accounts(entries)
            else:
                return JSONResponse({"error": "no such list"}, status_code=404)
        except (SandboxSetupError, ValueError) as error:
            return _bad_request(str(error))
        return JSONResponse({kind: len(getattr(company, kind))})

    async def post_journal(request: Request) -> Response:
        company = company_or_404(request)
        if isinstance(company, JSONResponse):
            return company
        try:
            company.post_journal(request.path_params["journal"])
        except ODataError as error:
            return JSONResponse(error.body(), status_code=error.status)
        return JSONResponse({"posted": True, "entries": len(company.gl_entries)})

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    prefix = "/_sandbox"
    company = f"{prefix}/tenants/{{tenant}}/environments/{{environment}}/companies/{{company}}"
    return [
        Route(f"{prefix}/provision", provision, methods=["POST"]),
        Route(f"{prefix}/tenants/{{tenant}}/faults", set_faults, methods=["POST"]),
        Route(f"{prefix}/tenants/{{tenant}}/options", options, methods=["POST"]),
        Route(f"{prefix}/tenants/{{tenant}}/stats", stats, methods=["GET"]),
        Route(f"{prefix}/tenants/{{tenant}}/revoke-tokens", revoke, methods=["POST"]),
        Route(f"{company}/ledger", ledger, methods=["GET"]),
        Route(f"{company}/journals/{{journal}}/post", post_journal, methods=["POST"]),
        Route(f"{company}/{{kind}}", people, methods=["POST"]),
        Route(f"{prefix}/reset", reset, methods=["POST"]),
    ]


def create_dynamics_app(state: DynamicsSandboxState | None = None) -> Starlette:
    """The sandbox ASGI app; its state is also at ``app.state.dynamics``."""
    state = state if state is not None else DynamicsSandboxState()
    api = _ApiEndpoint(state)
    methods = ["GET", "POST", "PATCH", "DELETE"]
    routes = [
        *_control_routes(state),
        _token_route(state),
        Route("/v2.0/{tenant}/{environment}/api/v2.0/{rest:path}", api, methods=methods),
    ]
    app = Starlette(routes=routes)
    app.state.dynamics = state
    return app
