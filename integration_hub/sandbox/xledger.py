"""Xledger sandbox: a local fake of Xledger's GraphQL API at ``POST /graphql``.

Why: the adapter, the demo and the tests need an Xledger that refuses what the real one refuses
as far as public facts go (``../shared/specs/xledger/FINDINGS.md``): ``Authorization: token …``,
Relay paging by each edge's cursor, at most 500 inputs per ``addGLImportItems``, no
deduplication of ``extIdentifier``, errors as HTTP 200 whose only codes are the documented ones,
and a staged import. Its ``AddGLImportItemsInput`` is generated from Xledger's introspected
metadata (:mod:`integration_hub.sandbox.xledger_schema`), not written by hand, and a company can
be given a changed schema to test the adapter's schema check. Queries run through graphql-core
against that schema, so malformed queries fail as a real GraphQL server fails them, and
introspection works as it does at Xledger for a token holder.

What a voucher needs, as every public example sends it: a voucher type
(``transactionSource { code }`` or ``dbId``) and a voucher number (``trRegNumber``); lines are
grouped into vouchers by the two (Xledger's GL02b file import keys a voucher the same way),
never by ``extIdentifier``. An input without them, a bad amount, date or text, or a voucher that
does not balance is refused at once, with an error that points at the input (``clientId`` and
an index in ``path``) and carries no invented code. What needs the company's data is found at
"import", right after the items are staged, as Xledger does it later: an unknown or
non-posting account, an unknown employee subledger or a closed period becomes a
``glImportItemErrors`` row (``transactionDbId`` = the item's ``dbId``; our assumption) and the
voucher is not imported; an imported voucher becomes ``journalEntries``.

Plus switches for the failures that matter to exactly-once export: 5xx, burst, concurrency and
credit limits, dropped connections and a commit whose answer never arrives.

Each API token is one company (tenant) with its own chart of accounts, employees, import items,
import errors, journal, fault switches and (optionally) schema changes. ``/_sandbox/...``
control endpoints (no auth) let a separate process set this up; in-process callers use
:class:`XledgerSandboxState` directly.
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
    FieldNode,
    GraphQLError,
    GraphQLResolveInfo,
    OperationType,
    execute_sync,
    parse,
    validate,
)
from graphql.execution import ExecutionContext
from graphql.execution.values import get_argument_values
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from integration_hub.sandbox.faults import FaultSwitches
from integration_hub.sandbox.server import drop_connection, hang
from integration_hub.sandbox.xledger_schema import (
    ACCOUNT_FLAGS,
    SchemaChanges,
    build_xledger_schema,
)

MAX_INPUTS_PER_MUTATION = 500
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
TEXT_MAX_LENGTH = 255
CENT = Decimal("0.01")

BURST_RATE_LIMIT = "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
CONCURRENCY_LIMIT = "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"
INSUFFICIENT_CREDITS = "BAD_REQUEST.INSUFFICIENT_CREDITS"
DOCUMENTED_CODES = (BURST_RATE_LIMIT, CONCURRENCY_LIMIT, INSUFFICIENT_CREDITS)
"""The only error codes the sandbox answers: the ones Xledger's own sample documents
(graphql-samples, commit f8da6a3). Every other error is a message (and a path) without one."""

UNAUTHENTICATED_MESSAGE = "Invalid or missing API token"
VOUCHER_NUMBER_DIGITS = 8
"""GL02b's voucher number: digits, at most 8."""
ERROR_LEVEL = {"dbId": 1, "code": "ERROR", "name": "Error", "dbSubId": 1, "definitionId": 1}
"""The import errors' level (the sandbox's own values; the field names are the metadata's)."""

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
    """An error the sandbox reports: a message, and a ``code`` only when Xledger documents one."""

    def __init__(self, message: str, code: str | None = None) -> None:
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
    concurrency_limit: int = 0
    insufficient_credits: int = 0
    drop_connection: int = 0
    commit_then_timeout: int = 0
    commit_then_drop: int = 0
    hang_seconds: float = 30.0
    burst_per_second: int | None = None


REQUEST_FAULTS = (
    "fail_5xx",
    "drop_connection",
    "burst_limit",
    "concurrency_limit",
    "insufficient_credits",
)
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
        for flag in ACCOUNT_FLAGS:  # what kind of account it is; unset: none of them
            value = entry.get(flag, False)
            if not isinstance(value, bool):
                raise ValueError(f"account {code}: {flag} must be true or false")
            result[flag] = value
    else:
        email = entry.get("email")
        result["email"] = None if email is None else str(email)
    return result


class Company:
    """One tenant: chart, employees, import items, import errors, journal, counters, faults and
    its schema. Guarded by the state's lock."""

    def __init__(
        self,
        token: str,
        lock: threading.RLock,
        accounts: Iterable[Mapping[str, Any]],
        employees: Iterable[Mapping[str, Any]],
        closed_before: date | None,
        schema_changes: SchemaChanges | None = None,
        keep_imported_items: bool = True,
    ) -> None:
        self.token = token
        self.closed_before = closed_before
        self.schema_changes = schema_changes or SchemaChanges()
        self.schema = build_xledger_schema(self.schema_changes)
        self.keep_imported_items = keep_imported_items
        """False: ``glImportItems`` stops listing items once they are imported (whether Xledger
        keeps them is not public), so only ``journalEntries`` still show them."""
        self.ledger: list[dict[str, Any]] = []
        """Every GL import item staged, in order (imported or not): what was sent."""
        self.import_errors: list[dict[str, Any]] = []
        self.journal: list[dict[str, Any]] = []
        self.requests = 0
        self.mutations = 0
        self._lock = lock
        self._faults = FaultSwitches(
            Faults(), REQUEST_FAULTS, MUTATION_FAULTS, RATE_FAULT, lock=lock, error=ValueError
        )
        self._accounts: dict[str, dict[str, Any]] = {}
        self._employees: dict[str, dict[str, Any]] = {}
        self._next_item_id = 1
        self._next_error_id = 1
        self._next_entry_id = 1
        self._next_header_id = 1
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

    def import_errors_snapshot(self) -> list[dict[str, Any]]:
        """Copies of the import errors (what ``glImportItemErrors`` lists)."""
        with self._lock:
            return [dict(e) for e in self.import_errors]

    def journal_snapshot(self) -> list[dict[str, Any]]:
        """Copies of the journal entries (what ``journalEntries`` lists)."""
        with self._lock:
            return [dict(e) for e in self.journal]

    def snapshot(self) -> dict[str, Any]:
        """Items, import errors, journal and counters read together (what
        ``GET /_sandbox/.../ledger`` returns)."""
        with self._lock:
            return {
                "items": self.ledger_snapshot(),
                "import_errors": self.import_errors_snapshot(),
                "journal": self.journal_snapshot(),
                "requests": self.requests,
                "mutations": self.mutations,
            }

    def post_gl_import_items(
        self, inputs: list[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Stage inputs voucher by voucher (partial success, no deduplication), then import
        each staged voucher.

        A voucher is the lines that share a voucher type and number. One whose input lacks
        either, or has a bad line, or does not balance, is refused at once (an error per
        input). The rest are staged as import items and imported: a voucher whose account,
        subledger or period the company refuses gets an import error per such line and stays
        staged; the others become journal entries. Returns the staged items (in input order)
        and the refusals as ``{"index": input index, "message": why}``.
        """
        with self._lock:
            self.mutations += 1
            vouchers: dict[tuple[str, str], list[int]] = {}
            problems: dict[int, str] = {}
            lines: dict[int, dict[str, Any]] = {}
            for index, item in enumerate(inputs):
                node = item.get("node")
                voucher, problem = _voucher_of(node)
                if voucher is not None:
                    vouchers.setdefault(voucher, []).append(index)
                    line, problem = _check_line(node or {})
                    if problem is None:
                        lines[index] = line
                if problem is not None:
                    problems[index] = problem
            for (kind, number), indexes in vouchers.items():
                name = f"{kind} {number}"
                failed = [i for i in indexes if i in problems]
                if failed:
                    first = failed[0]
                    reason = f"Voucher {name} rejected: {_shown(inputs, first)} failed"
                    for index in indexes:
                        problems.setdefault(index, reason)
                    continue
                total = sum((lines[i]["_amount"] for i in indexes), Decimal(0))
                if total != 0:
                    for index in indexes:
                        problems[index] = (
                            f"Voucher {name} does not balance: its lines sum to {total}"
                        )
            created_at = _now()
            staged: dict[int, dict[str, Any]] = {}
            for index, item in enumerate(inputs):
                if index in problems:
                    continue
                line = lines[index]
                del line["_amount"]
                record = {"dbId": self._next_item_id, "clientId": item.get("clientId"), **line}
                record["createdAt"] = record["modifiedAt"] = created_at
                self._next_item_id += 1
                self.ledger.append(record)
                staged[index] = record
            for indexes in vouchers.values():
                if all(i in staged for i in indexes):
                    self._import([staged[i] for i in indexes], created_at)
            errors = [{"index": index, "message": message} for index, message in problems.items()]
            return [dict(staged[i]) for i in sorted(staged)], sorted(errors, key=_by_index)

    def delete_import_items(self, ext_identifier: str) -> int:
        """What an accountant does in Xledger's GL import to lines that failed their import:
        delete them (and so their errors). Returns how many items went."""
        with self._lock:
            gone = {
                i["dbId"]
                for i in self.ledger
                if i.get("extIdentifier") == ext_identifier and not i.get("imported")
            }
            self.ledger = [i for i in self.ledger if i["dbId"] not in gone]
            self.import_errors = [e for e in self.import_errors if e["transactionDbId"] not in gone]
            return len(gone)

    def _import(self, items: list[dict[str, Any]], at: str) -> None:
        """Import one staged voucher: errors for what the company refuses, else the journal."""
        refusals = [(item, self._import_problem(item)) for item in items]
        if any(problem for _, problem in refusals):
            for item, problem in refusals:
                if problem:
                    self.import_errors.append(
                        {
                            "dbId": self._next_error_id,
                            "createdAt": at,
                            "ownerDbId": 1,
                            "errorLevelDbId": ERROR_LEVEL["dbId"],
                            "transactionDbId": item["dbId"],
                            "message": problem,
                            "errorLevel": dict(ERROR_LEVEL),
                            "owner": {"dbId": 1},
                        }
                    )
                    self._next_error_id += 1
            return
        header = self._next_header_id
        self._next_header_id += 1
        for item in items:
            account = self._find(self._accounts, _ref_of(item, "account")) or {}
            employee = self._find(self._employees, _ref_of(item, "subledger"))
            item["imported"] = True
            self.journal.append(
                {
                    "dbId": str(self._next_entry_id),
                    "_order": self._next_entry_id,
                    "extIdentifier": item.get("extIdentifier"),
                    "invoiceNumber": item.get("invoiceNumber"),
                    "text": item.get("text"),
                    "amount": item["amount"],
                    "postedDate": item["postedDate"],
                    "createdAt": at,
                    "modifiedAt": at,
                    "subledgerDbId": str(employee["dbId"]) if employee else None,
                    "account": {"dbId": str(account.get("dbId"))},
                    "transactionSource": {"code": item.get("transactionSource_code")},
                    "transactionHeader": {
                        "dbId": str(header),
                        "transactionNumber": str(item["trRegNumber"]),
                        "postedDate": item["postedDate"],
                        "importedAt": at,
                        "transactionSource": {"code": item.get("transactionSource_code")},
                        "jobLevel": {"dbSubId": _text(item.get("jobLevel_dbSubId"))},
                    },
                }
            )
            self._next_entry_id += 1

    def _import_problem(self, item: Mapping[str, Any]) -> str | None:
        """What the company's data says against one staged line, or None."""
        problem = self._account_problem(_ref_of(item, "account"))
        if problem:
            return problem
        subledger = _ref_of(item, "subledger")
        if subledger and self._find(self._employees, subledger) is None:
            shown = subledger.get("code") or f"dbId {subledger.get('dbId')}"
            return f"Employee subledger {shown} does not exist"
        posted = date.fromisoformat(item["postedDate"])
        if self.closed_before is not None and posted < self.closed_before:
            return (
                f"The period of postedDate {posted.isoformat()} is closed "
                f"(closed before {self.closed_before.isoformat()})"
            )
        return None

    def _account_problem(self, ref: Mapping[str, Any]) -> str | None:
        code, db_id = ref.get("code"), ref.get("dbId")
        account = self._find(self._accounts, ref)
        if account is None:
            if code is not None and db_id is not None and code in self._accounts:
                return f"Account {code} does not have dbId {db_id}"
            shown = code if code is not None else f"with dbId {db_id}"
            return f"Account {shown} does not exist"
        if not account["posting"]:
            return f"Account {account['code']} is not a posting account"
        return None

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _by_index(error: Mapping[str, Any]) -> int:
    return int(error["index"])


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _shown(inputs: list[Mapping[str, Any]], index: int) -> str:
    client_id = inputs[index].get("clientId")
    return f"line {client_id}" if client_id else f"input {index}"


def _ref_of(item: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``account_code``/``account_dbId`` of a staged item back as ``{"code", "dbId"}``."""
    return {part: item[f"{name}_{part}"] for part in ("code", "dbId") if item.get(f"{name}_{part}")}


def _voucher_of(node: Any) -> tuple[tuple[str, str] | None, str | None]:
    """(voucher type, voucher number) of an input node, or why there is none."""
    if not isinstance(node, Mapping):
        return None, "node is required"
    source = node.get("transactionSource") or {}
    kind = source.get("code") or (f"#{source['dbId']}" if source.get("dbId") is not None else None)
    number = node.get("trRegNumber")
    missing = [
        what
        for what, value in (
            ("a voucher type (transactionSource with code or dbId)", kind),
            ("a voucher number (trRegNumber)", number),
        )
        if value in (None, "")
    ]
    if missing:
        return None, f"A GL import item needs {' and '.join(missing)}"
    if not str(number).isdigit() or len(str(number)) > VOUCHER_NUMBER_DIGITS:
        return None, (
            f"trRegNumber {number!r} is not a voucher number (digits, at most "
            f"{VOUCHER_NUMBER_DIGITS})"
        )
    return (str(kind), str(int(number))), None


def _check_line(node: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """One input node as a staged line, or its first problem (what needs no company data)."""
    account = node.get("account") or {}
    if account.get("code") is None and account.get("dbId") is None:
        return {}, "Account is required (code or dbId)"
    amount, problem = _parse_amount(node.get("amount"))
    if problem:
        return {}, problem
    posted = _parse_date(node.get("postedDate"))
    if posted is None:
        return {}, f"postedDate {node.get('postedDate')!r} is not YYYY-MM-DD"
    if node.get("invoiceDate") is not None and _parse_date(node["invoiceDate"]) is None:
        return {}, f"invoiceDate {node['invoiceDate']!r} is not YYYY-MM-DD"
    text = node.get("text")
    if text is not None and len(text) > TEXT_MAX_LENGTH:
        return {}, f"text is {len(text)} characters long; at most {TEXT_MAX_LENGTH} are allowed"
    line = _flatten(node)
    line.update(
        {
            "amount": str(amount.quantize(CENT)),
            "postedDate": posted.isoformat(),
            "trRegNumber": int(node["trRegNumber"]),
            "_amount": amount,
        }
    )
    return line, None


def _flatten(node: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a_b": 1}``: the naming the ledger items use (as Xledger's)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            for inner, inner_value in value.items():
                if inner_value is not None:
                    flat[f"{key}_{inner}"] = inner_value
        elif value is not None:
            flat[key] = value
    return flat


def _parse_amount(raw: Any) -> tuple[Decimal, str | None]:
    if not isinstance(raw, str) or not _AMOUNT_RE.fullmatch(raw):
        return Decimal(0), f"Amount {raw!r} is not a decimal number"
    try:
        amount = Decimal(raw)
        exact = amount == amount.quantize(CENT)
    except InvalidOperation:
        return Decimal(0), f"Amount {raw!r} is out of range"
    if not exact:
        return Decimal(0), f"Amount {raw} has more than 2 decimals"
    if amount == 0:
        return Decimal(0), "Amount must not be zero"
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
        schema_changes: SchemaChanges | None = None,
        keep_imported_items: bool = True,
    ) -> Company:
        """Create a tenant reachable with ``Authorization: token <token>``; ``schema_changes``
        gives it a drifted ``AddGLImportItemsInput``."""
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise ValueError("token must be a non-empty string without spaces")
        chart = accounts if accounts is not None else default_accounts()
        company = Company(
            token,
            self._lock,
            chart,
            employees or [],
            closed_before,
            schema_changes,
            keep_imported_items,
        )
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
    """The built-in chart as account dicts (fresh copies), each with its kind's flags."""
    return [
        {
            "dbId": ACCOUNT_DBID_BASE + n,
            "code": code,
            "description": text,
            "posting": posting,
            **ns4102_flags(code),
        }
        for n, (code, text, posting) in enumerate(DEFAULT_CHART, start=1)
    ]


def ns4102_flags(code: str) -> dict[str, bool]:
    """The account flags of an NS 4102 account number, as a Norwegian tenant's chart sets them:
    class 1 assets, 20 equity, 21-29 liabilities (both balance sheet), 3 revenue, 4-7 costs,
    8 financial items (80 income, 81 and up costs)."""
    flags = dict.fromkeys(ACCOUNT_FLAGS, False)
    first, second = code[:1], code[1:2]
    if first == "1":
        flags.update(asset=True, balanceSheet=True)
    elif first == "2":
        kind = "equity" if second == "0" else "liabilities"
        flags.update({kind: True, "balanceSheet": True, "credit": True})
    elif first == "3":
        flags.update(revenue=True, credit=True)
    elif first and first in "4567":
        flags.update(cost=True)
    elif first == "8":
        flags.update(finance=True, **({"revenue": True} if second == "0" else {"cost": True}))
    return flags


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
        raise SandboxError(f"Invalid cursor for {kind}: {cursor!r}")
    return decoded[1]


def _page(
    kind: str,
    nodes: list[dict[str, Any]],
    key: str,
    first: int | None,
    after: str | None,
) -> dict[str, Any]:
    """Relay forward paging over ``nodes`` (sorted by ``key``); cursors carry the key. The
    page info has what the public query templates ask for, and no end cursor: a client pages
    with the last edge's ``cursor``."""
    size = DEFAULT_PAGE_SIZE if first is None else first
    if size < 0 or size > MAX_PAGE_SIZE:
        raise SandboxError(f"first must be between 0 and {MAX_PAGE_SIZE}; got {size}")
    start = 0
    if after is not None:
        position = _decode_cursor(kind, after)
        keys = [n[key] for n in nodes]
        try:
            start = bisect.bisect_right(keys, position)
        except TypeError:
            raise SandboxError(f"Invalid cursor for {kind}") from None
    window = nodes[start : start + size]
    edges = [{"cursor": _encode_cursor(kind, n[key]), "node": n} for n in window]
    return {
        "edges": edges,
        "pageInfo": {"hasNextPage": start + size < len(nodes), "hasPreviousPage": start > 0},
    }


def _since(raw: Any, name: str) -> datetime:
    """A ``*_gte`` filter's time (ISO 8601, as the sandbox writes ``createdAt``)."""
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError:
        raise SandboxError(f"{name} {raw!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filtered(
    nodes: list[dict[str, Any]], filter: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Plain equality on each given field, and ``<field>_gte`` on times: the filter shapes
    public clients use."""
    for name, wanted in (filter or {}).items():
        if wanted is None:
            continue
        if name.endswith("_gte"):
            field = name.removesuffix("_gte")
            since = _since(wanted, name)
            nodes = [n for n in nodes if n.get(field) and _since(n[field], field) >= since]
        else:
            nodes = [n for n in nodes if n.get(name) == wanted]
    return nodes


def _ref(item: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    fields = ("dbId", "dbSubId", "code", "description")
    found = {f: item.get(f"{name}_{f}") for f in fields if item.get(f"{name}_{f}") is not None}
    return found or None


def _gl_node(item: Mapping[str, Any]) -> dict[str, Any]:
    """A staged item shaped as the GraphQL ``GLImportItem`` type."""
    node = {
        name: item.get(name)
        for name in (
            "dbId",
            "extIdentifier",
            "invoiceNumber",
            "text",
            "amount",
            "postedDate",
            "trRegNumber",
            "createdAt",
            "modifiedAt",
        )
    }
    for name in ("account", "subledger", "glObject1", "transactionSource", "jobLevel"):
        node[name] = _ref(item, name)
    return node


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
        if not self.company.keep_imported_items:
            items = [i for i in items if not i.get("imported")]
        nodes = _filtered([_gl_node(i) for i in items], filter)
        return _page("glImportItems", nodes, "dbId", first, after)

    def glImportItemErrors(  # the GraphQL field name
        self,
        info: GraphQLResolveInfo,
        first: int | None = None,
        after: str | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        errors = self.company.import_errors_snapshot()
        return _page("glImportItemErrors", _filtered(errors, filter), "dbId", first, after)

    def journalEntries(  # the GraphQL field name
        self,
        info: GraphQLResolveInfo,
        first: int | None = None,
        after: str | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        entries = self.company.journal_snapshot()
        return _page("journalEntries", _filtered(entries, filter), "_order", first, after)

    def addGLImportItems(  # the GraphQL field name
        self, info: GraphQLResolveInfo, inputs: list[Mapping[str, Any]]
    ) -> dict[str, Any]:
        staged, errors = self.company.post_gl_import_items(inputs)
        name = info.path.key
        for error in errors:
            client_id = inputs[error["index"]].get("clientId")
            shaped: dict[str, Any] = {"message": error["message"], "path": [name, error["index"]]}
            if client_id:
                shaped["clientId"] = client_id
            self.input_errors.append(shaped)
        return {"edges": [{"clientId": i.get("clientId"), "node": _gl_node(i)} for i in staged]}


def _format_error(error: GraphQLError) -> dict[str, Any]:
    """graphql-core error -> Xledger's shape: ``message``, ``locations``, ``path``, and a
    top-level ``code`` only for the documented codes."""
    formatted: dict[str, Any] = {"message": error.message}
    original = error.original_error
    if error.path and original is not None and not isinstance(original, SandboxError):
        formatted["message"] = "Internal server error"  # a resolver broke: no details
    if isinstance(original, SandboxError) and original.code:
        formatted["code"] = original.code
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path:
        formatted["path"] = list(error.path)
    return formatted


def _error_body(message: str, code: str | None = None) -> dict[str, Any]:
    """A request-level error; nothing ran, so (as the GraphQL spec has it) no ``data``."""
    error: dict[str, Any] = {"message": message}
    if code:
        error["code"] = code
    return {"errors": [error]}


def _limit_body(message: str, code: str) -> dict[str, Any]:
    """A documented limit, in the shape Xledger's sample reads (``errors[*].code``)."""
    return {"data": None, "errors": [{"message": message, "code": code}]}


def _input_count(context: ExecutionContext) -> int:
    """How many inputs an ``addGLImportItems`` mutation carries (0 when it has none)."""
    mutation = context.schema.mutation_type
    if mutation is None:
        return 0
    count = 0
    for selection in context.operation.selection_set.selections:
        if isinstance(selection, FieldNode) and selection.name.value == "addGLImportItems":
            field = mutation.fields["addGLImportItems"]
            try:
                values = get_argument_values(field, selection, context.variable_values)
            except GraphQLError:
                continue  # execution reports it
            count += len(values.get("inputs") or [])
    return count


@dataclass
class _Outcome:
    """What one GraphQL request produced, and how the answer must be spoiled, if at all."""

    body: dict[str, Any]
    status: int = 200
    after_commit: str | None = None
    hang_seconds: float = 0.0


class _GraphQLEndpoint:
    """Raw ASGI app for ``POST /graphql``: raw so faults can hang or cut the connection."""

    def __init__(self, state: XledgerSandboxState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        raw = await request.body()
        company = self.state.find_company(_token(request.headers.get("authorization")))
        if company is None:
            body = _error_body(UNAUTHENTICATED_MESSAGE)
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
            body = _error_body("Service temporarily unavailable")
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        if fault == "insufficient_credits":
            body = _limit_body("Insufficient credits", INSUFFICIENT_CREDITS)
        elif fault == "concurrency_limit":
            body = _limit_body("Concurrency limit reached", CONCURRENCY_LIMIT)
        else:  # burst_limit or burst_per_second
            body = _limit_body("Burst rate limit reached", BURST_RATE_LIMIT)
        await JSONResponse(body)(scope, receive, send)

    def _run(self, company: Company, raw: bytes) -> _Outcome:
        """Parse, validate and execute one GraphQL request for ``company``."""
        schema = company.schema
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _Outcome(_error_body("The request body is not JSON"), 400)
        if not isinstance(payload, dict):
            return _Outcome(_error_body("The request body must be a JSON object"))
        query = payload.get("query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if not isinstance(query, str) or not query.strip():
            return _Outcome(_error_body("The request has no query"))
        if variables is not None and not isinstance(variables, dict):
            return _Outcome(_error_body("variables must be a JSON object"))
        if operation_name is not None and not isinstance(operation_name, str):
            return _Outcome(_error_body("operationName must be a string"))
        try:
            document = parse(query)
        except GraphQLError as error:
            return _Outcome({"errors": [_format_error(error)]})
        invalid = validate(schema, document)
        if invalid:
            return _Outcome({"errors": [_format_error(e) for e in invalid]})
        root = _Root(company)
        context = ExecutionContext.build(schema, document, root, None, variables, operation_name)
        if isinstance(context, list):  # bad variables or operation name
            return _Outcome({"errors": [_format_error(e) for e in context]})
        after_commit: str | None = None
        hang_seconds = 0.0
        if context.operation.operation == OperationType.MUTATION:
            count = _input_count(context)
            if count > MAX_INPUTS_PER_MUTATION:
                message = f"At most {MAX_INPUTS_PER_MUTATION} inputs per request; got {count}"
                return _Outcome(_error_body(message))
            after_commit, hang_seconds = company.take_mutation_fault()
        result = execute_sync(
            schema,
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
            keep = spec.get("keep_imported_items", True)
            if not isinstance(keep, bool):
                raise ValueError("keep_imported_items must be true or false")
            company = state.add_company(
                spec.get("token"),
                accounts=spec.get("accounts"),
                employees=spec.get("employees"),
                closed_before=None if closed is None else date.fromisoformat(closed),
                schema_changes=SchemaChanges.from_json(spec.get("schema_changes")),
                keep_imported_items=keep,
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


def create_xledger_app(state: XledgerSandboxState | None = None) -> Starlette:
    """The sandbox ASGI app; its state is also at ``app.state.xledger``."""
    state = state if state is not None else XledgerSandboxState()
    endpoint = _GraphQLEndpoint(state)
    routes = [Route("/graphql", endpoint, methods=["POST"]), *_control_routes(state)]
    app = Starlette(routes=routes)
    app.state.xledger = state
    return app
