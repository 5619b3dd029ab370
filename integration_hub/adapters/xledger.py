"""Xledger: GraphQL over HTTPS, ``Authorization: token …``, Relay paging, ``addGLImportItems``.

What is sent follows the public material (``../shared/specs/xledger/FINDINGS.md``): each expense
claim is one voucher of two GL import lines (expense debit; the volunteer's payable credit with
the employee as subledger) that carry what every public example carries: a voucher type
(``transactionSource { code }``), a voucher number (``trRegNumber``, which groups the lines
into the voucher) and ``jobLevel { dbSubId }``. ``extIdentifier`` is the idempotency key, by
which an outcome-unknown request is reconciled; it does not group lines.

Import at Xledger is staged: ``addGLImportItems`` stores import items and answers; Xledger then
imports them and records what it refused in ``glImportItemErrors``. So the adapter declares
:attr:`~integration_hub.adapters.base.Adapter.import_is_staged` and answers
:meth:`XledgerAdapter.check_imports`, which the load engine calls once per run.

Our assumptions, to be confirmed on a tenant (``docs/go-live.md``): the voucher numbering
(:func:`voucher_number`), that an import error's ``transactionDbId`` is the import item's
``dbId``, that the filters take the shapes public clients use (``extIdentifier`` equality,
``createdAt_gte``), and that Xledger imports before the run's end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from integration_hub.adapters.base import (
    AccountKind,
    Answer,
    BatchResult,
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
from integration_hub.money import format_amount

if TYPE_CHECKING:
    import pandas as pd

PAGE_SIZE = 1000
"""Items per page when reading a whole list (Xledger allows up to 10,000: "pagination")."""
KEYS_PER_LOOKUP = 100
"""Keys asked about in one lookup request (one aliased field each)."""
ITEMS_PER_KEY = 50
"""Items read per key and page in a lookup: a voucher has two lines."""
VOUCHER_NUMBER_DIGITS = 8
"""Xledger's GL02b file import takes voucher numbers of at most 8 digits (``nnnn``, length 8);
the GraphQL input declares ``trRegNumber`` a string, its read side an integer: digits fit both."""
INPUT_TYPE = "AddGLImportItemsInput"
NODE_TYPE_GUESS = "AddGLImportItemsInputNode"
"""The node's input type as the public Go client (omniboost/go-xledger) names it; asked for in
the schema check's first request so that one request usually reads every type."""
REFUSED_UNRUN = "refused before anything was stored"
"""How a request Xledger refused without running it (no ``data``) is described."""
ITEM_REFERENCE = "glImportItem:"
JOURNAL_REFERENCE = "journalEntry:"

ACCOUNT_KIND_FLAGS: tuple[tuple[str, AccountKind], ...] = (
    ("liabilities", AccountKind.LIABILITY),
    ("equity", AccountKind.EQUITY),
    ("asset", AccountKind.ASSET),
    ("revenue", AccountKind.INCOME),
    ("cost", AccountKind.EXPENSE),
)
"""An account's kind from the flags Xledger's ``Account`` carries, first true flag wins. The
names are in both public clients' account fields (grasp-labs' read metadata lists ``asset``,
``balanceSheet``, ``cost``, ``equity``, ``finance``, ``liabilities``, ``revenue``; omniboost's Go
client reads them as booleans); what each means is not published, so we read them by their names:
``cost`` an expense account, ``revenue`` an income account. ``balanceSheet`` alone (no
``asset``, ``liabilities`` or ``equity``) and ``finance`` alone name no kind: None, no warning."""


def accounts_query(with_kinds: bool = True) -> str:
    """The chart of accounts, page by page; ``with_kinds`` also asks for the kind flags."""
    fields = ["dbId", "code", "description", "posting"]
    if with_kinds:
        fields += [name for name, _ in ACCOUNT_KIND_FLAGS]
    return (
        "query Accounts($first: Int!, $after: String) {\n"
        "  accounts(first: $first, after: $after) {\n"
        f"    edges {{ cursor node {{ {' '.join(fields)} }} }}\n"
        "    pageInfo { hasNextPage }\n"
        "  }\n"
        "}"
    )


ACCOUNTS_QUERY = accounts_query()


def account_kind(node: Mapping[str, Any]) -> AccountKind | None:
    """The kind an Xledger account's flags state (see :data:`ACCOUNT_KIND_FLAGS`)."""
    return next((kind for name, kind in ACCOUNT_KIND_FLAGS if node.get(name) is True), None)


PROBE_QUERY = "query Probe { accounts(first: 1) { edges { node { code } } } }"

ADD_MUTATION = """
mutation AddVouchers($inputs: [AddGLImportItemsInput!]!) {
  addGLImportItems(inputs: $inputs) {
    edges { clientId node { dbId extIdentifier createdAt } }
  }
}"""

ITEM_FIELDS = "dbId extIdentifier createdAt"
JOURNAL_FIELDS = "dbId extIdentifier"
ERROR_FIELDS = "dbId createdAt transactionDbId message errorLevel { code name }"
"""Fields of ``glImportItemErrors`` as its metadata lists them (``errorLevel_code`` …)."""

DOCUMENTED_BURST = "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"
DOCUMENTED_CONCURRENCY = "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"
DOCUMENTED_CREDITS = "BAD_REQUEST.INSUFFICIENT_CREDITS"
RETRY_LATER_CODES: dict[str, float] = {DOCUMENTED_BURST: 5.0, DOCUMENTED_CONCURRENCY: 1.0}
"""Documented request-level codes that refuse a request before it is processed, with the wait
Xledger's own sample uses (graphql-samples ProjectSyncer.cs; ``../shared/specs/xledger``).
Every other code is undocumented and not relied on: an error is judged by where it points."""
CREDITS_MESSAGE = (
    "Xledger's API credits for this company are used up (INSUFFICIENT_CREDITS); buy more in "
    "Xledger or wait for the next month's allowance, then export again: nothing of this run "
    "needs undoing, the next run sends what is left"
)


class XledgerConfig(IntegrationConfig):
    base_url: EndpointUrl = endpoint_setting("https://www.xledger.net/graphql")
    api_token: SecretStr = secret(
        label="API token", help="An API token created in Xledger for this integration."
    )
    voucher_type: str = setting(
        "GL",
        label="Voucher type",
        help="The voucher type Xledger books the claims as (transactionSource); GL unless your "
        "accountant uses another one.",
        min_length=1,
        max_length=8,
        pattern=r"^\S+$",
    )
    """``transactionSource { code }``: the voucher type the tenant books claims as. "GL" as in
    Xledger's own example; GL02b allows 8 characters."""
    job_level: int = setting(
        1,
        label="Job level",
        help="Xledger's job level for the vouchers (jobLevel); usually 1.",
        ge=0,
    )
    """``jobLevel { dbSubId }``, 1 as in Xledger's own example."""
    voucher_number_start: int = setting(
        0,
        label="Voucher number series start",
        help="Claim number N becomes voucher number start + N, at most 8 digits; choose a range "
        "your accountant keeps free for these vouchers.",
        ge=0,
        lt=10**VOUCHER_NUMBER_DIGITS,
    )
    """The voucher number series: claim N becomes voucher ``voucher_number_start + N``."""


def voucher_number(config: XledgerConfig, record_id: int) -> str | None:
    """The claim's voucher number (``trRegNumber``), or None when it would not fit 8 digits.

    Deterministic per claim, so a voucher sent again after reconciliation carries the same
    number, and unique per claim within a request, so two claims never share a voucher. Our
    assumption, to check on a tenant: Xledger takes the number as given (or renumbers it on
    import from its own series) and accepts that a changed claim's new version reuses it.
    """
    number = config.voucher_number_start + int(record_id)
    return str(number) if 0 < number < 10**VOUCHER_NUMBER_DIGITS else None


def gl_input(row: Any, config: XledgerConfig) -> dict[str, Any]:
    """One ``AddGLImportItemsInput``: ``clientId`` pairs the answer with the line."""
    node: dict[str, Any] = {
        "transactionSource": {"code": config.voucher_type},
        "trRegNumber": voucher_number(config, row.record_id),
        "jobLevel": {"dbSubId": config.job_level},
        "postedDate": str(row.posting_date),
        "account": {"code": str(row.account)},
        "amount": format_amount(row.amount_ore),
        "text": str(row.text),
        "extIdentifier": str(row.idempotency_key),
        "invoiceNumber": str(row.document_number),
    }
    if _present(row.counterparty):
        node["subledger"] = {"code": str(row.counterparty)}
    if _present(row.dimension):
        node["glObject1"] = {"code": str(row.dimension)}
    return {"clientId": f"{row.idempotency_key}:{row.line_no}", "node": node}


def _present(value: Any) -> bool:
    """A real value: pandas' missing markers (None, NA, NaN) are not strings."""
    return isinstance(value, str) and value != ""


def _sample_row(n: int) -> SimpleNamespace:
    """A line with every optional field, to learn what :func:`gl_input` sends."""
    return SimpleNamespace(
        record_id=n,
        line_no=n,
        idempotency_key=f"IH{n:030d}",
        posting_date=f"2026-01-0{n}",
        account=f"70{n}0",
        amount_ore=100 * n,
        text=f"text {n}",
        document_number=f"UTL-{n}",
        counterparty=f"100{n}",
        dimension=f"D{n}",
    )


@dataclass(frozen=True)
class Sent:
    """A value :func:`gl_input` sends: a sample, and whether it comes from the settings (the
    same for every record) rather than from the record."""

    value: Any
    from_settings: bool


def sent_shape(config: XledgerConfig) -> dict[str, Any]:
    """What :func:`gl_input` sends, as one input with every optional field, each leaf a
    :class:`Sent` (learnt by building the inputs of two different records)."""

    def merge(one: Any, two: Any) -> Any:
        if isinstance(one, dict):
            return {name: merge(value, two[name]) for name, value in one.items()}
        return Sent(one, one == two)

    return merge(gl_input(_sample_row(1), config), gl_input(_sample_row(2), config))


def _literal(value: str | int) -> str:
    """A GraphQL literal: JSON's string syntax is GraphQL's (``\\uXXXX`` escapes included).
    Literals, not variables, keep our documents free of the filter fields' type names."""
    return str(int(value)) if isinstance(value, int) else json.dumps(str(value))


def _filtered(
    field: str,
    alias: str,
    filter_field: str,
    value: str | int,
    after: str | None,
    first: int,
    selection: str,
) -> str:
    """One aliased, filtered and paged connection field with the public clients' shape."""
    after_arg = f", after: {_literal(after)}" if after else ""
    return (
        f"{alias}: {field}(first: {first}{after_arg}, filter: {{{filter_field}: "
        f"{_literal(value)}}}) {{ edges {{ cursor node {{ {selection} }} }} "
        "pageInfo { hasNextPage } }"
    )


def _type_selection(depth: int = 2, wrappers: int = 2) -> str:
    """Introspection of a type: kind, name, enum values, its input fields ``depth`` levels
    down (2: GraphQL servers refuse introspection nested deeper, graphql-js's
    MaxIntrospectionDepthRule among them), through ``wrappers`` NON_NULL/LIST wrappers."""
    text = "kind name enumValues(includeDeprecated: true) { name }"
    if depth > 0:
        text += f" inputFields {{ name defaultValue type {{ {_type_selection(depth - 1)} }} }}"
    if wrappers > 0:
        text += f" ofType {{ {_type_selection(depth, wrappers - 1)} }}"
    return text


def introspection_query(names: Iterable[str]) -> str:
    """``query SchemaCheck`` reading each named type (aliased ``t0``, ``t1``, …)."""
    parts = [
        f"t{i}: __type(name: {_literal(name)}) {{ {_type_selection()} }}"
        for i, name in enumerate(names)
    ]
    return "query SchemaCheck { " + " ".join(parts) + " }"


def schema_check_document(names: Iterable[str], since: str) -> str:
    """One request: the introspection of ``names``, plus (validated by Xledger, not executed)
    the exact read queries the adapter depends on, so that a filter or field Xledger lacks
    shows now, not as records left waiting."""
    key = "IH" + "0" * 30
    reads = (
        ("Lookup", "glImportItems", "extIdentifier", key, ITEM_FIELDS),
        ("LookupJournal", "journalEntries", "extIdentifier", key, JOURNAL_FIELDS),
        ("ImportErrors", "glImportItemErrors", "createdAt_gte", since, ERROR_FIELDS),
    )
    return "\n".join(
        [introspection_query(names)]
        + [
            f"query {name} {{ {_filtered(field, 'k0', on, value, None, 1, selection)} }}"
            for name, field, on, value, selection in reads
        ]
    )


def named_types(*introspected: Any) -> dict[str, Mapping[str, Any]]:
    """Every type in introspection answers whose input fields were read, by name."""
    found: dict[str, Mapping[str, Any]] = {}

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping):
            return
        if node.get("name") and node.get("inputFields") is not None:
            found.setdefault(str(node["name"]), node)
        for field in node.get("inputFields") or []:
            walk(field.get("type"))
        walk(node.get("ofType"))

    for answer in introspected:
        walk(answer)
    return found


# -- comparing what we send with the introspected input type ---------------------------------
_STRINGLESS = {"Int", "Float", "Boolean"}
_INTLESS = {"String", "Boolean"}


def _named(type_ref: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool, bool]:
    """(the named type, whether it is NON_NULL, whether a LIST wraps it)."""
    required = type_ref.get("kind") == "NON_NULL"
    listed = False
    while type_ref.get("kind") in ("NON_NULL", "LIST") and type_ref.get("ofType"):
        listed = listed or type_ref["kind"] == "LIST"
        type_ref = type_ref["ofType"]
    return type_ref, required, listed


def _sent_as(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, Sent) and isinstance(value.value, int | float):
        return "a number"
    return "text"


def unread_types(
    sent: Mapping[str, Any], type_name: str, types: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """Input object types on the way of ``sent`` whose fields no answer has read yet."""
    introspected = types.get(type_name)
    if introspected is None:
        return {type_name}
    fields = {f["name"]: f for f in introspected.get("inputFields") or []}
    missing: set[str] = set()
    for name, value in sent.items():
        if isinstance(value, dict) and name in fields:
            named, _, _ = _named(fields[name]["type"])
            if named.get("kind") == "INPUT_OBJECT" and named.get("name"):
                missing |= unread_types(value, str(named["name"]), types)
    return missing


def compare_input(
    types: Mapping[str, Mapping[str, Any]],
    sent: Mapping[str, Any],
    *,
    type_name: str = INPUT_TYPE,
    target: str = "Xledger",
    where: str = INPUT_TYPE,
) -> list[SchemaDrift]:
    """What the introspected input types (by name, see :func:`named_types`) say about ``sent``
    (from :func:`sent_shape`): every field we send must exist and take what we send (errors),
    every NON_NULL field without a default must be sent (error), and an enum must know a value
    we send from the settings (warning; a value from the mapping cannot be judged here)."""
    introspected = types.get(type_name)
    if not introspected or introspected.get("kind") != "INPUT_OBJECT":
        return [SchemaDrift.missing(target, where)]
    fields = {f["name"]: f for f in introspected.get("inputFields") or []}
    drift: list[SchemaDrift] = []
    for name, info in fields.items():
        _, required, _ = _named(info["type"])
        if required and info.get("defaultValue") is None and name not in sent:
            drift.append(SchemaDrift.required(target, f"{where}.{name}"))
    for name, value in sent.items():
        path = f"{where}.{name}"
        if name not in fields:
            drift.append(SchemaDrift.missing(target, path))
            continue
        named, _, listed = _named(fields[name]["type"])
        kind, named_as = named.get("kind"), str(named.get("name") or "?")
        sent_as = _sent_as(value)
        if listed:
            drift.append(SchemaDrift.changed(target, path, f"a list of {named_as}", sent_as))
        elif kind == "INPUT_OBJECT" and isinstance(value, dict):
            drift += compare_input(types, value, type_name=named_as, target=target, where=path)
        elif kind == "INPUT_OBJECT" or isinstance(value, dict):
            drift.append(SchemaDrift.changed(target, path, named_as, sent_as))
        elif kind == "ENUM":
            values = [str(v["name"]) for v in named.get("enumValues") or []]
            if not value.from_settings or str(value.value) not in values:
                shown = ", ".join(values) or "no values"
                known = str(value.value) if value.from_settings else None
                drift.append(SchemaDrift.unknown_value(target, path, shown, known))
        elif (
            kind != "SCALAR"
            or (sent_as == "a number" and named_as in _INTLESS)
            or (sent_as == "text" and named_as in _STRINGLESS)
        ):
            drift.append(SchemaDrift.changed(target, path, named_as, sent_as))
    return drift


@register
class XledgerAdapter(RecordAdapter):
    key = "xledger"
    display_name = "Xledger"
    config_model = XledgerConfig
    record_type = "expense_claim"
    default_mapping = "xledger_expense_claims.yaml"
    rate_limit = RateLimit(10, 1.0)
    """Xledger publishes no number for its burst limit (``BURST_RATE_LIMIT_REACHED``); 10
    requests a second of up to 500 lines each is far below what throttles a tenant in practice,
    and a throttled request is retried anyway. Check against a real tenant."""
    max_lines_per_request = 500
    text_max_length = 255
    import_is_staged = True
    vendor_hosts = ("www.xledger.net", "demo.xledger.net")
    """Production and Xledger's demo environment (``../shared/specs/xledger/FINDINGS.md``)."""
    target_fields = (
        TargetField(
            "expense_account",
            "Expense account (debit)",
            reference=True,
            help="Usually chosen per expense category through a value map",
        ),
        TargetField(
            "payable_account",
            "Payable account (credit)",
            reference=True,
            help="The account that holds what the organisation owes the volunteer",
        ),
        TargetField(
            "counterparty",
            "Employee subledger code",
            help="Identifies the volunteer in Xledger's employee subledger",
        ),
        TargetField("posting_date", "Posting date"),
        TargetField("document_number", "Invoice/document number"),
        TargetField("dimension", "Department (glObject1)", required=False),
        TargetField("text", "Line text"),
    )

    config: XledgerConfig

    def __init__(self, config: XledgerConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._staged_since: str | None = None
        """The earliest ``createdAt`` of an import item this adapter posted or found: its
        import errors cannot be older (Xledger's own clock, passed back verbatim)."""

    # -- transport ------------------------------------------------------------------------
    def _post(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        write: bool = False,
        operation: str | None = None,
        tolerate_errors: bool = False,
    ) -> dict[str, Any]:
        """One GraphQL request; sorts whole-request failures into the adapter error kinds by
        :func:`~integration_hub.adapters.base.classify_status`, then by what the errors are.

        Errors that point at an input (``clientId``, or an index in ``path``) are the caller's
        to read. Of the rest, only documented codes are trusted; an error Xledger answered
        before executing anything (no ``data`` at all, as the GraphQL spec has it for parse
        and validation errors) stored nothing; any other one may have stored the vouchers.
        ``tolerate_errors`` returns such errors to the caller instead (documented codes are
        still raised)."""
        self.requests_sent += 1
        headers = {"Authorization": f"token {self.config.api_token.get_secret_value()}"}
        payload: dict[str, Any] = {"query": query, "variables": dict(variables or {})}
        if operation:
            payload["operationName"] = operation
        try:
            response = self.http.post(str(self.config.base_url), json=payload, headers=headers)
        except httpx.TransportError as exc:
            if classify_transport_error(exc, write=write) is Answer.RETRY:
                raise TransientError(
                    f"Xledger could not be reached ({type(exc).__name__})"
                ) from None
            raise OutcomeUnknown(
                f"No complete answer from Xledger ({type(exc).__name__})"
            ) from None
        status = response.status_code
        answer = classify_status(status, write=write)
        if status in (401, 403):
            raise RunAbort("Xledger refused the API token; enter a valid token and retry")
        if status == 429:
            raise TransientError("Xledger is throttling requests", _retry_after(response))
        if answer is Answer.RETRY:
            raise TransientError(f"Xledger is unavailable (HTTP {status})", _retry_after(response))
        if answer is Answer.UNKNOWN:
            raise OutcomeUnknown(f"Xledger answered HTTP {status}; it may have stored the vouchers")
        if answer is Answer.STOP:
            raise RunAbort(f"Xledger refused the request (HTTP {status})")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if write:
                raise OutcomeUnknown("Xledger's answer to the vouchers is unreadable") from None
            raise TransientError("Xledger's answer is unreadable (not a JSON object)") from None
        errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
        request_errors = [e for e in errors if _pointed_input(e) is None or not write]
        for error in request_errors:
            code = str(error.get("code", ""))
            if code in RETRY_LATER_CODES:
                raise TransientError(_error_text(error), RETRY_LATER_CODES[code])
            if code == DOCUMENTED_CREDITS:
                raise RunAbort(CREDITS_MESSAGE)
        if request_errors and not tolerate_errors:
            text = _error_text(request_errors[0])
            if "data" not in body:
                raise RunAbort(f"{text} ({REFUSED_UNRUN})")
            if write:
                raise OutcomeUnknown(f"{text}; it may have stored the vouchers")
            raise TransientError(text)
        return body

    # -- operations -----------------------------------------------------------------------
    def probe(self, deadline_s: float) -> ConnectionResult:
        timeout = httpx.Timeout(min(5.0, deadline_s), connect=min(3.0, deadline_s))
        headers = {"Authorization": f"token {self.config.api_token.get_secret_value()}"}
        with self.new_client(timeout=timeout) as client:
            response = client.post(
                str(self.config.base_url), json={"query": PROBE_QUERY}, headers=headers
            )
        if response.status_code in (401, 403):
            return ConnectionResult(
                ConnectionStatus.BAD_CREDENTIALS, "Xledger refused the API token"
            )
        if response.status_code == 429:
            wait = _retry_after(response)
            hint = f"; it asks to wait {wait:.0f} s" if wait else ""
            return ConnectionResult(ConnectionStatus.THROTTLED, f"Xledger is throttling{hint}")
        if response.status_code != 200:
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                f"Xledger answered HTTP {response.status_code}",
            )
        try:
            body = response.json()
        except ValueError:
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                "Xledger's answer is not JSON (is the URL right?)",
            )
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            code = str(errors[0].get("code", ""))
            if code in RETRY_LATER_CODES:
                return ConnectionResult(
                    ConnectionStatus.THROTTLED, "Xledger's burst rate limit is reached"
                )
            if code == DOCUMENTED_CREDITS:
                return ConnectionResult(ConnectionStatus.UNEXPECTED_RESPONSE, CREDITS_MESSAGE)
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE, f"Xledger answered with error {code or '?'}"
            )
        if not isinstance(body.get("data"), dict) or "accounts" not in body["data"]:
            return ConnectionResult(
                ConnectionStatus.UNEXPECTED_RESPONSE,
                "Xledger's answer has no accounts (is the URL right?)",
            )
        return ConnectionResult(
            ConnectionStatus.OK, "Connected to Xledger; the token can read accounts"
        )

    def _pages(
        self, query: str, name: str, variables: Mapping[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every node of a connection, page by page, after the last edge's ``cursor`` (the
        public clients' way; ``pageInfo`` has no end cursor in the public templates)."""
        after: str | None = None
        while True:
            body = self._post(query, {**variables, "first": PAGE_SIZE, "after": after})
            connection = (body.get("data") or {}).get(name)
            if not isinstance(connection, dict):
                raise RunAbort(f"Xledger's answer has no {name}")
            edges = connection.get("edges") or []
            for edge in edges:
                yield edge["node"]
            if not edges or not (connection.get("pageInfo") or {}).get("hasNextPage"):
                return
            after = edges[-1]["cursor"]

    def _by_value(
        self,
        field: str,
        filter_field: str,
        values: Iterable[str | int],
        selection: str,
    ) -> dict[str | int, list[dict[str, Any]]]:
        """Nodes of ``field`` per value of an equality filter, many values per request (one
        aliased field each), each paged with its last edge's cursor until it has no more."""
        found: dict[str | int, list[dict[str, Any]]] = {}
        wanted = list(dict.fromkeys(values))
        for start in range(0, len(wanted), KEYS_PER_LOOKUP):
            pending: dict[str, tuple[str | int, str | None]] = {
                f"k{i}": (value, None)
                for i, value in enumerate(wanted[start : start + KEYS_PER_LOOKUP])
            }
            while pending:
                parts = [
                    _filtered(field, alias, filter_field, value, after, ITEMS_PER_KEY, selection)
                    for alias, (value, after) in pending.items()
                ]
                data = self._post("query Lookup { " + " ".join(parts) + " }").get("data") or {}
                more: dict[str, tuple[str | int, str | None]] = {}
                for alias, (value, _after) in pending.items():
                    connection = data.get(alias)
                    if not isinstance(connection, dict):
                        raise TransientError(f"Xledger's answer has no {field}")
                    edges = connection.get("edges") or []
                    found.setdefault(value, []).extend(edge["node"] for edge in edges)
                    if edges and (connection.get("pageInfo") or {}).get("hasNextPage"):
                        more[alias] = (value, edges[-1]["cursor"])
                pending = more
        return found

    def reference_codes(self) -> list[ReferenceCode]:
        """The whole chart, each account with its kind where Xledger's flags state one. A
        tenant whose schema refuses the flags (Xledger validates a query before running it, and
        refuses it whole) is asked once more without them: kinds unknown, nothing else lost."""
        try:
            nodes = list(self._pages(ACCOUNTS_QUERY, "accounts", {}))
        except RunAbort as exc:
            if REFUSED_UNRUN not in str(exc):
                raise
            nodes = list(self._pages(accounts_query(with_kinds=False), "accounts", {}))
        return [
            ReferenceCode(
                code=str(node["code"]),
                name=str(node.get("description") or ""),
                postable=bool(node.get("posting", True)),
                note="" if node.get("posting", True) else "not a posting account",
                kind=account_kind(node),
            )
            for node in nodes
        ]

    def lookup(self, keys: list[str]) -> dict[str, str]:
        """Keys Xledger holds: as GL import items (``extIdentifier`` equality, the filter shape
        public clients use), else as journal entries, which also carry ``extIdentifier`` (if
        Xledger drops import items once it has imported them). A found item may still have
        failed its import: :meth:`check_imports` says."""
        found: dict[str, str] = {}
        items = self._by_value("glImportItems", "extIdentifier", keys, ITEM_FIELDS)
        for key, nodes in items.items():
            if nodes:
                found[str(key)] = self._item_reference(nodes)
        rest = [key for key in keys if key not in found]
        if rest:
            entries = self._by_value("journalEntries", "extIdentifier", rest, JOURNAL_FIELDS)
            for key, nodes in entries.items():
                if nodes:
                    found[str(key)] = f"{JOURNAL_REFERENCE}{nodes[0]['dbId']}"
        return found

    def _item_reference(self, nodes: list[Mapping[str, Any]]) -> str:
        """``glImportItem:<dbId>,<dbId>``: every line's item, for :meth:`check_imports`."""
        for node in nodes:
            created = node.get("createdAt")
            if created and (self._staged_since is None or str(created) < self._staged_since):
                self._staged_since = str(created)
        return ITEM_REFERENCE + ",".join(str(node["dbId"]) for node in nodes)

    def check_imports(self, accepted: dict[str, str]) -> list[RecordResult]:
        """Accepted vouchers whose import Xledger refused: an import error whose
        ``transactionDbId`` is one of the voucher's items (our assumption of how an error
        points at its item). One request per run (more only past 1,000 errors since the
        first item): errors created since the earliest item (``createdAt_gte``, a ``_gte``
        filter as public clients use on ``modifiedAt``); without that time, by
        ``transactionDbId`` equality, 100 items per request."""
        owner: dict[int, str] = {}
        for key, reference in accepted.items():
            if reference.startswith(ITEM_REFERENCE):
                for db_id in reference.removeprefix(ITEM_REFERENCE).split(","):
                    if db_id.strip().isdigit():
                        owner[int(db_id)] = key
        if not owner:
            return []
        if self._staged_since is not None:
            since = _literal(self._staged_since)
            query = (
                "query ImportErrors($first: Int!, $after: String) { glImportItemErrors(first: "
                f"$first, after: $after, filter: {{createdAt_gte: {since}}}) {{ edges {{ cursor "
                f"node {{ {ERROR_FIELDS} }} }} pageInfo {{ hasNextPage }} }} }}"
            )
            errors: Iterable[Mapping[str, Any]] = self._pages(query, "glImportItemErrors", {})
        else:
            by_item = self._by_value("glImportItemErrors", "transactionDbId", owner, ERROR_FIELDS)
            errors = [node for nodes in by_item.values() for node in nodes]
        reasons: dict[str, list[str]] = {}
        for error in errors:
            item = error.get("transactionDbId")
            key = owner.get(int(item)) if str(item).isdigit() else None
            if key is not None:
                reasons.setdefault(key, []).append(_import_error_text(error))
        return [
            RecordResult(
                key,
                RecordStatus.REJECTED,
                reason=(
                    f"Xledger could not import the voucher: {'; '.join(dict.fromkeys(texts))}. "
                    "It stays in Xledger's GL import: correct it there (the hub then confirms "
                    "it), or delete it there and fix the cause here (the hub then sends it again)"
                ),
            )
            for key, texts in reasons.items()
        ]

    def check_schema(self) -> list[SchemaDrift]:
        """Introspect ``AddGLImportItemsInput``, its node and the nested inputs under it, and
        compare them with what :func:`gl_input` sends; in the same request Xledger validates
        the read queries the adapter depends on. One request when the node's type has the
        name the public Go client gives it; one more for types not read by then (or when
        Xledger refused the read queries, which fails the whole document)."""
        since = self._staged_since or "2000-01-01T00:00:00Z"
        sent = sent_shape(self.config)
        first = [INPUT_TYPE, NODE_TYPE_GUESS]
        body = self._post(
            schema_check_document(first, since), operation="SchemaCheck", tolerate_errors=True
        )
        drift = [
            SchemaDrift.refused("Xledger", "lookup and import check", _error_text(error))
            for error in body.get("errors") or []
            if isinstance(error, dict)
        ]
        types = named_types(*(body.get("data") or {}).values())
        asked = set(first) if isinstance(body.get("data"), dict) else set()
        for _ in range(3):  # the input, the node, the nested objects: each asked for once
            unread = unread_types(sent, INPUT_TYPE, types) - asked
            if not unread:
                break
            if INPUT_TYPE in unread:
                unread.add(NODE_TYPE_GUESS)
            body = self._post(introspection_query(sorted(unread)), tolerate_errors=True)
            if not isinstance(body.get("data"), dict):
                raise TransientError(f"Xledger did not answer the introspection of {INPUT_TYPE}")
            types.update(named_types(*body["data"].values()))
            asked |= unread
        return drift + compare_input(types, sent)

    def load(self, lines: pd.DataFrame) -> BatchResult:
        if len(lines) > self.max_lines_per_request:
            raise ValueError(f"at most {self.max_lines_per_request} lines per request")
        before = self.requests_sent
        rows = list(lines.itertuples(index=False))
        unnumbered = {
            str(row.idempotency_key)
            for row in rows
            if voucher_number(self.config, row.record_id) is None
        }
        refused = [
            RecordResult(
                key,
                RecordStatus.REJECTED,
                reason=(
                    f"the voucher number would exceed {VOUCHER_NUMBER_DIGITS} digits; lower "
                    "the voucher number series start in the integration's settings, then retry"
                ),
            )
            for key in sorted(unnumbered)
        ]
        inputs = [
            gl_input(row, self.config) for row in rows if str(row.idempotency_key) not in unnumbered
        ]
        if not inputs:
            return BatchResult(refused, requests=0)
        body = self._post(ADD_MUTATION, {"inputs": inputs}, write=True)
        results = self._record_results(inputs, body)
        return BatchResult(results + refused, requests=self.requests_sent - before)

    def _record_results(
        self, inputs: list[dict[str, Any]], body: Mapping[str, Any]
    ) -> list[RecordResult]:
        """One result per voucher: exported with every line's item, or rejected with what
        Xledger said about the lines it pointed at."""
        key_of = {item["clientId"]: item["node"]["extIdentifier"] for item in inputs}
        order = list(dict.fromkeys(key_of.values()))
        problems: dict[str, list[str]] = {}
        for error in body.get("errors") or []:
            pointed = _pointed_input(error)
            if isinstance(pointed, int) and 0 <= pointed < len(inputs):
                pointed = inputs[pointed]["clientId"]
            key = key_of.get(str(pointed)) if pointed is not None else None
            if key is not None:
                problems.setdefault(key, []).append(str(error.get("message") or "no reason"))
        nodes: dict[str, list[dict[str, Any]]] = {}
        payload = (body.get("data") or {}).get("addGLImportItems") or {}
        for edge in payload.get("edges") or []:
            node = edge.get("node") or {}
            key = key_of.get(str(edge.get("clientId"))) or node.get("extIdentifier")
            if key in order:
                nodes.setdefault(str(key), []).append(node)
        results = []
        for key in order:
            if key in problems:
                reason = f"Xledger refused the voucher: {'; '.join(dict.fromkeys(problems[key]))}"
                results.append(RecordResult(key, RecordStatus.REJECTED, reason=reason))
            elif key in nodes:
                reference = self._item_reference(nodes[key])
                results.append(RecordResult(key, RecordStatus.EXPORTED, reference))
            else:
                raise OutcomeUnknown(f"Xledger's answer does not mention voucher {key}")
        return results


def _pointed_input(error: Mapping[str, Any]) -> str | int | None:
    """Which input an error is about: its ``clientId`` (top level or in ``extensions``), else
    an index in its ``path``; None when it is about the whole request."""
    extensions = error.get("extensions")
    client_id = error.get("clientId") or (
        extensions.get("clientId") if isinstance(extensions, dict) else None
    )
    if client_id:
        return str(client_id)
    for part in error.get("path") or []:
        if isinstance(part, int) and not isinstance(part, bool):
            return part
    return None


def _error_text(error: Mapping[str, Any]) -> str:
    code = error.get("code")
    suffix = f" ({code})" if code else ""
    return f"Xledger: {error.get('message') or 'error'}{suffix}"


def _import_error_text(error: Mapping[str, Any]) -> str:
    level = error.get("errorLevel") if isinstance(error.get("errorLevel"), dict) else {}
    name = (level or {}).get("name") or (level or {}).get("code")
    message = str(error.get("message") or "no reason given")
    return f"{message} ({name})" if name else message


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
