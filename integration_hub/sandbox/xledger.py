"""Xledger sandbox: a local fake of Xledger's GraphQL API at ``POST /graphql``.

Why: the adapter, the demo and the tests need an Xledger that behaves like the real one as far
as public facts go (``Authorization: token …``, Relay paging, errors as HTTP 200 with a top-level
``code``, at most 500 inputs per ``addGLImportItems``, no deduplication of ``extIdentifier``),
plus switches for the failures that matter to exactly-once export: 5xx, burst limits, dropped
connections and a commit whose answer never arrives. Queries run through graphql-core against a
schema built from SDL, so malformed queries fail the way a real GraphQL server fails them.

Each API token is one company (tenant) with its own chart of accounts, employees, ledger of GL
import items and fault switches. ``/_sandbox/...`` control endpoints (no auth) let a separate
process set this up; in-process callers use :class:`XledgerSandboxState` directly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationType,
    build_schema,
    execute_sync,
    parse,
    validate,
)
from graphql.execution import ExecutionContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from integration_hub.sandbox.faults import FaultSwitches
from integration_hub.sandbox.server import drop_connection, hang

MAX_INPUTS_PER_MUTATION = 500
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
TEXT_MAX_LENGTH = 255
CENT = Decimal("0.01")

UNAUTHENTICATED = "UNAUTHENTICATED"
INVALID_QUERY = "BAD_REQUEST.INVALID_QUERY"
INVALID_ARGUMENT = "BAD_REQUEST.INVALID_ARGUMENT"
BURST_RATE_LIMIT = "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
INSUFFICIENT_CREDITS = "BAD_REQUEST.INSUFFICIENT_CREDITS"
TOO_MANY_INPUTS = "BAD_REQUEST.TOO_MANY_INPUTS"
INVALID_ACCOUNT = "BAD_REQUEST.INVALID_ACCOUNT"
INVALID_SUBLEDGER = "BAD_REQUEST.INVALID_SUBLEDGER"
INVALID_AMOUNT = "BAD_REQUEST.INVALID_AMOUNT"
INVALID_DATE = "BAD_REQUEST.INVALID_DATE"
PERIOD_CLOSED = "BAD_REQUEST.PERIOD_CLOSED"
INVALID_TEXT = "BAD_REQUEST.INVALID_TEXT"
UNBALANCED_VOUCHER = "BAD_REQUEST.UNBALANCED_VOUCHER"
VOUCHER_REJECTED = "BAD_REQUEST.VOUCHER_REJECTED"
INTERNAL_ERROR = "INTERNAL_SERVER_ERROR"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"

UNAUTHENTICATED_MESSAGE = "Invalid or missing API token"

SCHEMA_SDL = """
type Query {
  accounts(first: Int, after: String): AccountConnection!
  employees(first: Int, after: String): EmployeeConnection!
  glImportItems(first: Int, after: String, filter: GLImportItemFilter): GLImportItemConnection!
}
type Mutation { addGLImportItems(inputs: [AddGLImportItemsInput!]!): AddGLImportItemsPayload }
type PageInfo { hasNextPage: Boolean!  hasPreviousPage: Boolean!  endCursor: String }
type Account { dbId: Int!  code: String!  description: String  posting: Boolean! }
type AccountEdge { cursor: String!  node: Account! }
type AccountConnection { edges: [AccountEdge!]!  pageInfo: PageInfo! }
type Employee { dbId: Int!  code: String!  description: String  email: String }
type EmployeeEdge { cursor: String!  node: Employee! }
type EmployeeConnection { edges: [EmployeeEdge!]!  pageInfo: PageInfo! }
type ObjectRef { dbId: Int  code: String  description: String }
type GLImportItem {
  dbId: Int!  extIdentifier: String  invoiceNumber: String  text: String  amount: String!
  postedDate: String  account: ObjectRef  subledger: ObjectRef  glObject1: ObjectRef
  createdAt: String!
}
type GLImportItemEdge { cursor: String!  node: GLImportItem! }
type GLImportItemConnection { edges: [GLImportItemEdge!]!  pageInfo: PageInfo! }
input GLImportItemFilter { extIdentifier_in: [String!] }
input ObjectRefInput { dbId: Int  code: String }
input GLImportItemNodeInput {
  postedDate: String!  account: ObjectRefInput!  amount: String!  text: String
  extIdentifier: String  invoiceNumber: String  invoiceDate: String  subledger: ObjectRefInput
  glObject1: ObjectRefInput  currency: ObjectRefInput  transactionSource: ObjectRefInput
  trRegNumber: String  yourReference: String
}
input AddGLImportItemsInput { clientId: String!  node: GLImportItemNodeInput! }
type AddGLImportItemEdge { clientId: String!  node: GLImportItem! }
type AddGLImportItemsPayload { edges: [AddGLImportItemEdge!]! }
"""

DEFAULT_CHART: tuple[tuple[str, str, bool], ...] = (
    ("1500", "Kundefordringer", True),
    ("19", "Bankinnskudd, kontanter o.l. (gruppe)", False),
    ("1920", "Bank", True),
    ("2400", "Leverandørgjeld", True),
    ("2600", "Forskuddstrekk", True),
    ("2910", "Gjeld til ansatte", True),
    ("2930", "Skyldig lønn", True),
    ("3000", "Salgsinntekt", True),
    ("3400", "Offentlig tilskudd", True),
    ("5000", "Lønn til ansatte", True),
    ("6300", "Leie lokale", True),
    ("6540", "Inventar", True),
    ("6800", "Kontorrekvisita", True),
    ("6860", "Møter/kurs", True),
    ("6900", "Telefon og internett", True),
    ("7100", "Bilgodtgjørelse oppgavepliktig", True),
    ("7130", "Reisekostnad oppgavepliktig", True),
    ("7140", "Reisekostnad ikke oppgavepliktig", True),
    ("7150", "Diettkostnad", True),
    ("7160", "Diett/kost", True),
    ("7350", "Representasjon", True),
    ("7770", "Bank og kortgebyr", True),
    ("7790", "Annen kostnad", True),
)
"""A small NS 4102-style chart. "19" is a group heading (not a posting account) so that clients
see and handle non-posting accounts."""

ACCOUNT_DBID_BASE = 10000
EMPLOYEE_DBID_BASE = 20000

_AMOUNT_RE = re.compile(r"-?\d+(\.\d+)?")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class CompanyExists(ValueError):
    """``add_company`` with a token that is already taken."""


class SandboxError(Exception):
    """An error the sandbox reports with an Xledger-style ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# =============================================================================================
# state
# =============================================================================================


@dataclass
class Faults:
    """Per-company fault switches. Counters apply to the next N requests and count down."""

    latency_ms: int = 0
    fail_5xx: int = 0
    burst_limit: int = 0
    insufficient_credits: int = 0
    drop_connection: int = 0
    commit_then_timeout: int = 0
    commit_then_drop: int = 0
    hang_seconds: float = 30.0
    burst_per_second: int | None = None


REQUEST_FAULTS = ("fail_5xx", "drop_connection", "burst_limit", "insufficient_credits")
"""Whole-request faults, in the order they are checked; at most one fires per request."""

MUTATION_FAULTS = ("commit_then_timeout", "commit_then_drop")
"""Faults that let a mutation commit and then spoil the answer; checked after REQUEST_FAULTS."""

RATE_FAULT = "burst_per_second"
"""The per-second admission limit field, and the fault a request over that limit meets."""


def _reference(entry: Mapping[str, Any], kind: str, next_id: Callable[[], int]) -> dict[str, Any]:
    """Normalise one account or employee dict; dbId is assigned when missing."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"each {kind} must be an object")
    code = entry.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        code = str(code)
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"each {kind} needs a non-empty code")
    db_id = entry.get("dbId")
    if db_id is None:
        db_id = next_id()
    elif isinstance(db_id, bool) or not isinstance(db_id, int):
        raise ValueError(f"{kind} {code}: dbId must be an integer")
    description = entry.get("description")
    result: dict[str, Any] = {
        "dbId": db_id,
        "code": code,
        "description": "" if description is None else str(description),
    }
    if kind == "account":
        posting = entry.get("posting", True)
        if not isinstance(posting, bool):
            raise ValueError(f"account {code}: posting must be true or false")
        result["posting"] = posting
    else:
        email = entry.get("email")
        result["email"] = None if email is None else str(email)
    return result


class Company:
    """One tenant: chart, employees, ledger, counters and faults. Guarded by the state's lock."""

    def __init__(
        self,
        token: str,
        lock: threading.RLock,
        accounts: Iterable[Mapping[str, Any]],
        employees: Iterable[Mapping[str, Any]],
        closed_before: date | None,
    ) -> None:
        self.token = token
        self.closed_before = closed_before
        self.ledger: list[dict[str, Any]] = []
        self.requests = 0
        self.mutations = 0
        self._lock = lock
        self._faults = FaultSwitches(
            Faults(), REQUEST_FAULTS, MUTATION_FAULTS, RATE_FAULT, lock=lock, error=ValueError
        )
        self._accounts: dict[str, dict[str, Any]] = {}
        self._employees: dict[str, dict[str, Any]] = {}
        self._next_item_id = 1
        self.set_accounts(accounts)
        self.add_employees(employees)

    # -- reference data ------------------------------------------------------------------
    @property
    def accounts(self) -> list[dict[str, Any]]:
        """The chart ordered by code (copies)."""
        with self._lock:
            return [dict(a) for _, a in sorted(self._accounts.items())]

    @property
    def employees(self) -> list[dict[str, Any]]:
        """The employees ordered by code (copies)."""
        with self._lock:
            return [dict(e) for _, e in sorted(self._employees.items())]

    def set_accounts(self, accounts: Iterable[Mapping[str, Any]]) -> None:
        """Replace the chart of accounts."""
        entries = list(accounts)
        used = {e["dbId"] for e in entries if isinstance(e, Mapping) and "dbId" in e}
        counter = iter(range(ACCOUNT_DBID_BASE + 1, ACCOUNT_DBID_BASE + 10**6))

        def next_id() -> int:
            return next(i for i in counter if i not in used)

        chart: dict[str, dict[str, Any]] = {}
        for entry in entries:
            account = _reference(entry, "account", next_id)
            if account["code"] in chart:
                raise ValueError(f"account {account['code']} is listed twice")
            chart[account["code"]] = account
        if len({a["dbId"] for a in chart.values()}) != len(chart):
            raise ValueError("account dbIds must be unique")
        with self._lock:
            self._accounts = chart

    def add_employees(self, employees: Iterable[Mapping[str, Any]]) -> None:
        """Add employees, replacing any with the same code."""
        entries = list(employees)
        with self._lock:
            merged = dict(self._employees)
            used = {e["dbId"] for e in merged.values()}
            used |= {e["dbId"] for e in entries if isinstance(e, Mapping) and "dbId" in e}

            def next_id() -> int:
                candidate = max(used | {EMPLOYEE_DBID_BASE}) + 1
                used.add(candidate)
                return candidate

            for entry in entries:
                employee = _reference(entry, "employee", next_id)
                merged[employee["code"]] = employee
            self._employees = merged

    # -- faults --------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        """The live fault switches (read them under the lock for a consistent view)."""
        return self._faults.faults

    def set_faults(self, **changes: Any) -> Faults:
        """Set fault fields by name (validated); returns a copy of the resulting faults."""
        return self._faults.set(**changes)

    def begin_request(self) -> str | None:
        """Count an authenticated request and decide which whole-request fault it meets."""
        with self._lock:
            self.requests += 1
            return self._faults.take_request_fault()

    def take_mutation_fault(self) -> tuple[str | None, float]:
        """Pick the commit-then-fail fault for a mutation request, with the hang length."""
        return self._faults.take_commit_fault()

    # -- GL import items -----------------------------------------------------------------
    def ledger_snapshot(self) -> list[dict[str, Any]]:
        """Copies of the committed items, safe to read while the server keeps posting."""
        with self._lock:
            return [dict(item) for item in self.ledger]

    def snapshot(self) -> dict[str, Any]:
        """Ledger and counters read together (what ``GET /_sandbox/.../ledger`` returns)."""
        with self._lock:
            return {
                "items": self.ledger_snapshot(),
                "requests": self.requests,
                "mutations": self.mutations,
            }

    def post_gl_import_items(
        self, inputs: list[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Validate and commit inputs voucher by voucher (partial success, no deduplication).

        Returns the committed ledger items (in input order) and one error per rejected input.
        """
        with self._lock:
            self.mutations += 1
            if len(inputs) > MAX_INPUTS_PER_MUTATION:
                raise SandboxError(
                    TOO_MANY_INPUTS,
                    f"At most {MAX_INPUTS_PER_MUTATION} inputs per request; got {len(inputs)}",
                )
            vouchers: dict[Any, list[int]] = {}
            for index, item in enumerate(inputs):
                ext = item["node"].get("extIdentifier")
                key = ext if isinstance(ext, str) and ext != "" else ("line", index)
                vouchers.setdefault(key, []).append(index)

            problems: dict[int, tuple[str, str]] = {}
            resolved: dict[int, dict[str, Any]] = {}
            for key, indexes in vouchers.items():
                name = key if isinstance(key, str) else "without extIdentifier"
                for index in indexes:
                    line, problem = self._check_line(inputs[index]["node"])
                    if problem is not None:
                        problems[index] = problem
                    else:
                        resolved[index] = line
                failed = [i for i in indexes if i in problems]
                if failed:
                    first = failed[0]
                    reason = (
                        f"Voucher {name} rejected: line {inputs[first]['clientId']} failed: "
                        f"{problems[first][1]}"
                    )
                    for index in indexes:
                        problems.setdefault(index, (VOUCHER_REJECTED, reason))
                    continue
                total = sum((resolved[i]["_amount"] for i in indexes), Decimal(0))
                if total != 0:
                    message = f"Voucher {name} does not balance: its lines sum to {total}"
                    for index in indexes:
                        problems[index] = (UNBALANCED_VOUCHER, message)

            created_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            committed: list[dict[str, Any]] = []
            for index, item in enumerate(inputs):
                if index in problems:
                    continue
                line = resolved[index]
                del line["_amount"]
                record = {"dbId": self._next_item_id, "clientId": item["clientId"], **line}
                record["createdAt"] = created_at
                self._next_item_id += 1
                self.ledger.append(record)
                committed.append(dict(record))
            errors = [
                {"message": message, "code": code, "clientId": inputs[index]["clientId"]}
                for index, (code, message) in sorted(problems.items())
            ]
            return committed, errors

    def _check_line(self, node: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, str] | None]:
        """Resolve one input node into a ledger line, or name its first problem."""
        account, problem = self._resolve_account(node.get("account") or {})
        if problem:
            return {}, problem
        employee: dict[str, Any] | None = None
        subledger = node.get("subledger")
        if subledger and (subledger.get("code") is not None or subledger.get("dbId") is not None):
            employee = self._find(self._employees, subledger)
            if employee is None:
                shown = subledger.get("code") or f"dbId {subledger.get('dbId')}"
                return {}, (INVALID_SUBLEDGER, f"Employee subledger {shown} does not exist")
        amount, problem = _parse_amount(node.get("amount"))
        if problem:
            return {}, problem
        posted = _parse_date(node.get("postedDate"))
        if posted is None:
            return {}, (INVALID_DATE, f"postedDate {node.get('postedDate')!r} is not YYYY-MM-DD")
        if node.get("invoiceDate") is not None and _parse_date(node["invoiceDate"]) is None:
            return {}, (INVALID_DATE, f"invoiceDate {node['invoiceDate']!r} is not YYYY-MM-DD")
        if self.closed_before is not None and posted < self.closed_before:
            return {}, (
                PERIOD_CLOSED,
                f"The period of postedDate {posted.isoformat()} is closed "
                f"(closed before {self.closed_before.isoformat()})",
            )
        text = node.get("text")
        if text is not None and len(text) > TEXT_MAX_LENGTH:
            return {}, (
                INVALID_TEXT,
                f"text is {len(text)} characters long; at most {TEXT_MAX_LENGTH} are allowed",
            )
        line = _flatten(node)
        line.update(
            {
                "extIdentifier": node.get("extIdentifier"),
                "account_dbId": account["dbId"],
                "account_code": account["code"],
                "account_description": account["description"],
                "subledger_dbId": employee["dbId"] if employee else None,
                "subledger_code": employee["code"] if employee else None,
                "subledger_description": employee["description"] if employee else None,
                "amount": str(amount.quantize(CENT)),
                "text": text,
                "postedDate": posted.isoformat(),
                "invoiceNumber": node.get("invoiceNumber"),
                "_amount": amount,
            }
        )
        return line, None

    def _resolve_account(
        self, ref: Mapping[str, Any]
    ) -> tuple[dict[str, Any], tuple[str, str] | None]:
        code, db_id = ref.get("code"), ref.get("dbId")
        if code is None and db_id is None:
            return {}, (INVALID_ACCOUNT, "Account is required (code or dbId)")
        account = self._find(self._accounts, ref)
        if account is None:
            if code is not None and db_id is not None and code in self._accounts:
                return {}, (INVALID_ACCOUNT, f"Account {code} does not have dbId {db_id}")
            shown = code if code is not None else f"with dbId {db_id}"
            return {}, (INVALID_ACCOUNT, f"Account {shown} does not exist")
        if not account["posting"]:
            return {}, (INVALID_ACCOUNT, f"Account {account['code']} is not a posting account")
        return account, None

    @staticmethod
    def _find(
        entries: Mapping[str, dict[str, Any]], ref: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Look up by code and/or dbId; both given must name the same entry."""
        code, db_id = ref.get("code"), ref.get("dbId")
        if code is not None:
            found = entries.get(code)
            if found is None or (db_id is not None and found["dbId"] != db_id):
                return None
            return found
        return next((e for e in entries.values() if e["dbId"] == db_id), None)


def _flatten(node: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a_b": 1}``: the naming the ledger items use (as Xledger's)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            for inner, inner_value in value.items():
                flat[f"{key}_{inner}"] = inner_value
        elif value is not None:
            flat[key] = value
    return flat


def _parse_amount(raw: Any) -> tuple[Decimal, tuple[str, str] | None]:
    if not isinstance(raw, str) or not _AMOUNT_RE.fullmatch(raw):
        return Decimal(0), (INVALID_AMOUNT, f"Amount {raw!r} is not a decimal number")
    try:
        amount = Decimal(raw)
        exact = amount == amount.quantize(CENT)
    except InvalidOperation:
        return Decimal(0), (INVALID_AMOUNT, f"Amount {raw!r} is out of range")
    if not exact:
        return Decimal(0), (INVALID_AMOUNT, f"Amount {raw} has more than 2 decimals")
    if amount == 0:
        return Decimal(0), (INVALID_AMOUNT, "Amount must not be zero")
    return amount, None


def _parse_date(raw: Any) -> date | None:
    if not isinstance(raw, str) or not _DATE_RE.fullmatch(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


class XledgerSandboxState:
    """All companies of one sandbox. Thread-safe: uvicorn serves from another thread."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._companies: dict[str, Company] = {}

    def add_company(
        self,
        token: str,
        accounts: list[dict[str, Any]] | None = None,
        employees: list[dict[str, Any]] | None = None,
        closed_before: date | None = None,
    ) -> Company:
        """Create a tenant reachable with ``Authorization: token <token>``."""
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ValueError("token must be a non-empty string without spaces")
        chart = accounts if accounts is not None else default_accounts()
        company = Company(token, self._lock, chart, employees or [], closed_before)
        with self._lock:
            if token in self._companies:
                raise CompanyExists(f"a company with token {token!r} already exists")
            self._companies[token] = company
        return company

    def company(self, token: str) -> Company:
        """The company for ``token``; KeyError if there is none."""
        found = self.find_company(token)
        if found is None:
            raise KeyError(f"no sandbox company with token {token!r}")
        return found

    def find_company(self, token: str | None) -> Company | None:
        if token is None:
            return None
        with self._lock:
            return self._companies.get(token)

    @property
    def tokens(self) -> list[str]:
        with self._lock:
            return sorted(self._companies)

    def reset(self) -> None:
        """Forget every company (and with them ledgers, counters and faults)."""
        with self._lock:
            self._companies.clear()


def default_accounts() -> list[dict[str, Any]]:
    """The built-in chart as account dicts (fresh copies)."""
    return [
        {"dbId": ACCOUNT_DBID_BASE + n, "code": code, "description": text, "posting": posting}
        for n, (code, text, posting) in enumerate(DEFAULT_CHART, start=1)
    ]


# =============================================================================================
# GraphQL
# =============================================================================================


def _encode_cursor(kind: str, key: str | int) -> str:
    raw = json.dumps([kind, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_cursor(kind: str, cursor: str) -> Any:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        decoded = None
    if not (isinstance(decoded, list) and len(decoded) == 2 and decoded[0] == kind):
        raise SandboxError(INVALID_ARGUMENT, f"Invalid cursor for {kind}: {cursor!r}")
    return decoded[1]


def _page(
    kind: str,
    nodes: list[dict[str, Any]],
    key: str,
    first: int | None,
    after: str | None,
) -> dict[str, Any]:
    """Relay forward paging over ``nodes`` (sorted by ``key``); cursors carry the key."""
    size = DEFAULT_PAGE_SIZE if first is None else first
    if size < 0 or size > MAX_PAGE_SIZE:
        raise SandboxError(
            INVALID_ARGUMENT, f"first must be between 0 and {MAX_PAGE_SIZE}; got {size}"
        )
    start = 0
    if after is not None:
        position = _decode_cursor(kind, after)
        keys = [n[key] for n in nodes]
        try:
            start = bisect.bisect_right(keys, position)
        except TypeError:
            raise SandboxError(INVALID_ARGUMENT, f"Invalid cursor for {kind}") from None
    window = nodes[start : start + size]
    edges = [{"cursor": _encode_cursor(kind, n[key]), "node": n} for n in window]
    return {
        "edges": edges,
        "pageInfo": {
            "hasNextPage": start + size < len(nodes),
            "hasPreviousPage": start > 0,
            "endCursor": edges[-1]["cursor"] if edges else after,
        },
    }


def _ref(db_id: Any, code: Any, description: Any) -> dict[str, Any] | None:
    if db_id is None and code is None:
        return None
    return {"dbId": db_id, "code": code, "description": description}


def _gl_node(item: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger item shaped as the GraphQL ``GLImportItem`` type."""
    return {
        "dbId": item["dbId"],
        "extIdentifier": item.get("extIdentifier"),
        "invoiceNumber": item.get("invoiceNumber"),
        "text": item.get("text"),
        "amount": item["amount"],
        "postedDate": item.get("postedDate"),
        "createdAt": item["createdAt"],
        "account": _ref(
            item.get("account_dbId"), item.get("account_code"), item.get("account_description")
        ),
        "subledger": _ref(
            item.get("subledger_dbId"),
            item.get("subledger_code"),
            item.get("subledger_description"),
        ),
        "glObject1": _ref(item.get("glObject1_dbId"), item.get("glObject1_code"), None),
    }


class _Root:
    """Root value for one request; graphql-core's default resolver calls these methods."""

    def __init__(self, company: Company) -> None:
        self.company = company
        self.input_errors: list[dict[str, Any]] = []

    def accounts(
        self, info: GraphQLResolveInfo, first: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        return _page("accounts", self.company.accounts, "code", first, after)

    def employees(
        self, info: GraphQLResolveInfo, first: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        return _page("employees", self.company.employees, "code", first, after)

    def glImportItems(  # the GraphQL field name
        self,
        info: GraphQLResolveInfo,
        first: int | None = None,
        after: str | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        items = self.company.ledger_snapshot()
        wanted = (filter or {}).get("extIdentifier_in")
        if wanted is not None:
            keys = set(wanted)
            items = [i for i in items if i.get("extIdentifier") in keys]
        return _page("glImportItems", [_gl_node(i) for i in items], "dbId", first, after)

    def addGLImportItems(  # the GraphQL field name
        self, info: GraphQLResolveInfo, inputs: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        committed, errors = self.company.post_gl_import_items(inputs)
        path = info.path.as_list()
        self.input_errors.extend({**error, "path": path} for error in errors)
        return {"edges": [{"clientId": i["clientId"], "node": _gl_node(i)} for i in committed]}


def _format_error(error: GraphQLError, code: str | None = None) -> dict[str, Any]:
    """graphql-core error -> Xledger shape: ``code`` is a top-level key, not in extensions."""
    original = error.original_error
    if code is None:
        if isinstance(original, SandboxError):
            code = original.code
        elif original is None:
            code = INVALID_QUERY
        else:
            code = INTERNAL_ERROR
    formatted: dict[str, Any] = {"message": error.message, "code": code}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path:
        formatted["path"] = list(error.path)
    return formatted


def _error_body(message: str, code: str) -> dict[str, Any]:
    return {"data": None, "errors": [{"message": message, "code": code}]}


@dataclass
class _Outcome:
    """What one GraphQL request produced, and how the answer must be spoiled, if at all."""

    body: dict[str, Any]
    status: int = 200
    after_commit: str | None = None
    hang_seconds: float = 0.0


class _GraphQLEndpoint:
    """Raw ASGI app for ``POST /graphql``: raw so faults can hang or cut the connection."""

    def __init__(self, state: XledgerSandboxState, schema: GraphQLSchema) -> None:
        self.state = state
        self.schema = schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        company = self.state.find_company(_token(request.headers.get("authorization")))
        if company is None:
            body = {"errors": [{"message": UNAUTHENTICATED_MESSAGE, "code": UNAUTHENTICATED}]}
            await JSONResponse(body, status_code=401)(scope, receive, send)
            return
        fault = company.begin_request()
        latency = company.faults.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        if fault is not None:
            await self._answer_fault(fault, scope, receive, send)
            return
        outcome = self._run(company, raw)
        encoded = json.dumps(outcome.body, ensure_ascii=False).encode("utf-8")
        if outcome.after_commit == "commit_then_drop":
            await drop_connection(send, encoded)
            return
        if outcome.after_commit == "commit_then_timeout":
            ending = await hang(receive, outcome.hang_seconds)
            if ending == "disconnected":
                return  # the client gave up waiting: nobody is left to answer
            if ending == "shutdown":
                await drop_connection(send, encoded)  # as if the server died mid-request
                return
        response = Response(encoded, status_code=outcome.status, media_type="application/json")
        await response(scope, receive, send)

    async def _answer_fault(self, fault: str, scope: Scope, receive: Receive, send: Send) -> None:
        if fault == "drop_connection":
            await drop_connection(send, b'{"data": null, "errors": [{"message": "lost"}]}')
            return
        if fault == "fail_5xx":
            body = {
                "errors": [
                    {"message": "Service temporarily unavailable", "code": SERVICE_UNAVAILABLE}
                ]
            }
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        if fault == "insufficient_credits":
            body = _error_body("Insufficient credits", INSUFFICIENT_CREDITS)
        else:  # burst_limit or burst_per_second
            body = _error_body("Burst rate limit reached", BURST_RATE_LIMIT)
        await JSONResponse(body)(scope, receive, send)

    def _run(self, company: Company, raw: bytes) -> _Outcome:
        """Parse, validate and execute one GraphQL request for ``company``."""
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _Outcome(_error_body("The request body is not JSON", INVALID_QUERY), 400)
        if not isinstance(payload, dict):
            return _Outcome(_error_body("The request body must be a JSON object", INVALID_QUERY))
        query = payload.get("query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if not isinstance(query, str) or not query.strip():
            return _Outcome(_error_body("The request has no query", INVALID_QUERY))
        if variables is not None and not isinstance(variables, dict):
            return _Outcome(_error_body("variables must be a JSON object", INVALID_QUERY))
        if operation_name is not None and not isinstance(operation_name, str):
            return _Outcome(_error_body("operationName must be a string", INVALID_QUERY))
        try:
            document = parse(query)
        except GraphQLError as error:
            return _Outcome({"data": None, "errors": [_format_error(error, INVALID_QUERY)]})
        invalid = validate(self.schema, document)
        if invalid:
            return _Outcome(
                {"data": None, "errors": [_format_error(e, INVALID_QUERY) for e in invalid]}
            )
        root = _Root(company)
        context = ExecutionContext.build(
            self.schema, document, root, None, variables, operation_name
        )
        if isinstance(context, list):  # bad variables or operation name
            return _Outcome(
                {"data": None, "errors": [_format_error(e, INVALID_QUERY) for e in context]}
            )
        after_commit: str | None = None
        hang_seconds = 0.0
        if context.operation.operation == OperationType.MUTATION:
            after_commit, hang_seconds = company.take_mutation_fault()
        result = execute_sync(
            self.schema,
            document,
            root_value=root,
            variable_values=variables,
            operation_name=operation_name,
        )
        body: dict[str, Any] = {"data": result.data}
        errors = [_format_error(e) for e in result.errors or []] + root.input_errors
        if errors:
            body["errors"] = errors
        return _Outcome(body, 200, after_commit, hang_seconds)


def _token(header: str | None) -> str | None:
    """``Authorization: token <TOKEN>`` (the word ``token``, case-insensitive, not Bearer)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "token" or not value.strip():
        return None
    return value.strip()


# =============================================================================================
# control endpoints
# =============================================================================================


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    return json.loads(raw)


def _control_routes(state: XledgerSandboxState) -> list[Route]:
    """Setup and inspection over HTTP, for a sandbox running in another process."""

    def company_or_404(request: Request) -> Company | JSONResponse:
        company = state.find_company(request.path_params["token"])
        if company is None:
            return JSONResponse({"error": "no such company"}, status_code=404)
        return company

    async def create_company(request: Request) -> Response:
        try:
            spec = await _json_body(request)
            if not isinstance(spec, dict):
                raise ValueError("expected a JSON object with a token")
            closed = spec.get("closed_before")
            company = state.add_company(
                spec.get("token"),
                accounts=spec.get("accounts"),
                employees=spec.get("employees"),
                closed_before=None if closed is None else date.fromisoformat(closed),
            )
        except CompanyExists as error:
            return JSONResponse({"error": str(error)}, status_code=409)
        except (ValueError, TypeError) as error:
            return _bad_request(str(error))
        body = {
            "token": company.token,
            "accounts": len(company.accounts),
            "employees": len(company.employees),
        }
        return JSONResponse(body, status_code=201)

    async def set_faults(request: Request) -> Response:
        company = company_or_404(request)
        if isinstance(company, JSONResponse):
            return company
        try:
            changes = await _json_body(request)
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault fields")
            faults = company.set_faults(**changes)
        except ValueError as error:
            return _bad_request(str(error))
        return JSONResponse(asdict(faults))

    async def add_employees(request: Request) -> Response:
        company = company_or_404(request)
        if isinstance(company, JSONResponse):
            return company
        try:
            employees = await _json_body(request)
            if not isinstance(employees, list):
                raise ValueError("expected a JSON list of employees")
            company.add_employees(employees)
        except ValueError as error:
            return _bad_request(str(error))
        return JSONResponse({"employees": len(company.employees)})

    async def set_accounts(request: Request) -> Response:
        company = company_or_404(request)
        if isinstance(company, JSONResponse):
            return company
        try:
            accounts = await _json_body(request)
            if not isinstance(accounts, list):
                raise ValueError("expected a JSON list of accounts")
            company.set_accounts(accounts)
        except ValueError as error:
            return _bad_request(str(error))
        return JSONResponse({"accounts": len(company.accounts)})

    async def ledger(request: Request) -> Response:
        company = company_or_404(request)
        if isinstance(company, JSONResponse):
            return company
        return JSONResponse(company.snapshot())

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    prefix = "/_sandbox"
    return [
        Route(f"{prefix}/companies", create_company, methods=["POST"]),
        Route(f"{prefix}/companies/{{token}}/faults", set_faults, methods=["POST"]),
        Route(f"{prefix}/companies/{{token}}/employees", add_employees, methods=["POST"]),
        Route(f"{prefix}/companies/{{token}}/accounts", set_accounts, methods=["POST"]),
        Route(f"{prefix}/companies/{{token}}/ledger", ledger, methods=["GET"]),
        Route(f"{prefix}/reset", reset, methods=["POST"]),
    ]


def build_xledger_schema() -> GraphQLSchema:
    return build_schema(SCHEMA_SDL)


def create_xledger_app(state: XledgerSandboxState | None = None) -> Starlette:
    """The sandbox ASGI app; its state is also at ``app.state.xledger``."""
    state = state if state is not None else XledgerSandboxState()
    endpoint = _GraphQLEndpoint(state, build_xledger_schema())
    routes = [Route("/graphql", endpoint, methods=["POST"]), *_control_routes(state)]
    app = Starlette(routes=routes)
    app.state.xledger = state
    return app
