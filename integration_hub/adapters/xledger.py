"""Xledger: GraphQL over HTTPS, ``Authorization: token …``, Relay paging, ``addGLImportItems``.

Each expense claim becomes one voucher of two GL import lines (expense debit, the volunteer's
payable credit with the employee as subledger) sharing ``extIdentifier`` = the idempotency key,
which is also how an outcome-unknown request is reconciled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

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
from integration_hub.money import format_amount

if TYPE_CHECKING:
    import pandas as pd

PAGE_SIZE = 1000
LOOKUP_CHUNK = 500

ACCOUNTS_QUERY = """
query Accounts($first: Int!, $after: String) {
  accounts(first: $first, after: $after) {
    edges { cursor node { dbId code description posting } }
    pageInfo { hasNextPage endCursor }
  }
}"""

PROBE_QUERY = "query Probe { accounts(first: 1) { edges { node { code } } } }"

LOOKUP_QUERY = """
query Lookup($first: Int!, $after: String, $keys: [String!]) {
  glImportItems(first: $first, after: $after, filter: {extIdentifier_in: $keys}) {
    edges { node { dbId extIdentifier } }
    pageInfo { hasNextPage endCursor }
  }
}"""

ADD_MUTATION = """
mutation AddVouchers($inputs: [AddGLImportItemsInput!]!) {
  addGLImportItems(inputs: $inputs) { edges { clientId node { dbId extIdentifier } } }
}"""

RETRY_LATER_CODES: dict[str, float] = {
    "BAD_REQUEST.BURST_RATE_LIMIT_REACHED": 5.0,
    "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED": 1.0,
}
"""Documented request-level codes that refuse a request before it is processed, with the wait
Xledger's own sample uses (graphql-samples ProjectSyncer.cs; ``../shared/specs/xledger``)."""
STOP_RUN_CODES = {
    "UNAUTHENTICATED",
    "BAD_REQUEST.INSUFFICIENT_CREDITS",
    "BAD_REQUEST.INVALID_QUERY",
    "BAD_REQUEST.TOO_MANY_INPUTS",
}
"""Request-level codes that refuse the whole request before anything is stored: the run stops
and its records may be sent again later. INSUFFICIENT_CREDITS is documented; the others are
authentication and GraphQL validation, which come before execution. Any other request-level
error on a write is taken as "may have stored" (:class:`OutcomeUnknown`)."""
RECORD_CODE_HINTS = {
    "BAD_REQUEST.INVALID_ACCOUNT": "fix the account in the field mapping, then retry",
    "BAD_REQUEST.PERIOD_CLOSED": "the accounting period is closed in Xledger; reopen it or "
    "post in an open period, then retry",
    "BAD_REQUEST.INVALID_SUBLEDGER": "add the volunteer as an employee in Xledger, then retry",
    "BAD_REQUEST.UNBALANCED_VOUCHER": "the voucher does not balance; report this as a bug",
}


class XledgerConfig(IntegrationConfig):
    base_url: EndpointUrl = "https://www.xledger.net/graphql"
    api_token: SecretStr


@register
class XledgerAdapter(Adapter):
    key = "xledger"
    display_name = "Xledger"
    config_model = XledgerConfig
    record_type = "expense_claim"
    default_mapping = "xledger_expense_claims.yaml"
    max_lines_per_request = 500
    text_max_length = 255
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

    # -- transport ------------------------------------------------------------------------
    def _post(
        self, query: str, variables: dict[str, Any], *, write: bool = False
    ) -> dict[str, Any]:
        """One GraphQL request; sorts whole-request failures into the adapter error kinds by
        :func:`~integration_hub.adapters.base.classify_status`, then by Xledger's error codes."""
        self.requests_sent += 1
        headers = {"Authorization": f"token {self.config.api_token.get_secret_value()}"}
        try:
            response = self.http.post(
                str(self.config.base_url),
                json={"query": query, "variables": variables},
                headers=headers,
            )
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
        request_errors = [e for e in body.get("errors") or [] if not e.get("clientId")]
        if request_errors:
            error = request_errors[0]
            code = str(error.get("code", ""))
            text = f"Xledger: {error.get('message', 'error')} ({code or 'no code'})"
            if code in RETRY_LATER_CODES:
                raise TransientError(text, RETRY_LATER_CODES[code])
            if code in STOP_RUN_CODES:
                raise RunAbort(text)
            if write:
                # Not documented as coming before processing: the vouchers may be stored.
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
            if code == "UNAUTHENTICATED":
                return ConnectionResult(
                    ConnectionStatus.BAD_CREDENTIALS, "Xledger refused the API token"
                )
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

    def _pages(self, query: str, name: str, variables: dict[str, Any]) -> Iterator[dict[str, Any]]:
        after: str | None = None
        while True:
            body = self._post(query, {**variables, "first": PAGE_SIZE, "after": after})
            connection = (body.get("data") or {}).get(name)
            if not isinstance(connection, dict):
                raise RunAbort(f"Xledger's answer has no {name}")
            for edge in connection["edges"]:
                yield edge["node"]
            page = connection["pageInfo"]
            if not page.get("hasNextPage"):
                return
            after = page["endCursor"]

    def reference_codes(self) -> list[ReferenceCode]:
        return [
            ReferenceCode(
                code=str(node["code"]),
                name=str(node.get("description") or ""),
                postable=bool(node.get("posting", True)),
                note="" if node.get("posting", True) else "not a posting account",
            )
            for node in self._pages(ACCOUNTS_QUERY, "accounts", {})
        ]

    def lookup(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start : start + LOOKUP_CHUNK]
            for node in self._pages(LOOKUP_QUERY, "glImportItems", {"keys": chunk}):
                found.setdefault(str(node["extIdentifier"]), f"glImportItem:{node['dbId']}")
        return found

    def load(self, lines: pd.DataFrame) -> BatchResult:
        if len(lines) > self.max_lines_per_request:
            raise ValueError(f"at most {self.max_lines_per_request} lines per request")
        inputs = [_gl_input(row) for row in lines.itertuples(index=False)]
        before = self.requests_sent
        body = self._post(ADD_MUTATION, {"inputs": inputs}, write=True)
        return BatchResult(_record_results(lines, body), requests=self.requests_sent - before)


def _gl_input(row: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
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


def _record_results(lines: pd.DataFrame, body: dict[str, Any]) -> list[RecordResult]:
    """One result per voucher: exported with the first line's dbId, or rejected with reasons."""
    problems: dict[str, list[str]] = {}
    for error in body.get("errors") or []:
        key = str(error.get("clientId", "")).rsplit(":", 1)[0]
        code = str(error.get("code", ""))
        if code == "BAD_REQUEST.VOUCHER_REJECTED":
            problems.setdefault(key, [])
            continue
        hint = RECORD_CODE_HINTS.get(code, "check the record and retry")
        problems.setdefault(key, []).append(f"Xledger: {error.get('message', code)} ({hint})")
    references: dict[str, str] = {}
    payload = (body.get("data") or {}).get("addGLImportItems") or {}
    for edge in payload.get("edges") or []:
        key = str(edge["clientId"]).rsplit(":", 1)[0]
        references.setdefault(key, f"glImportItem:{edge['node']['dbId']}")
    results = []
    for key in lines["idempotency_key"].drop_duplicates():
        if key in problems:
            reason = "; ".join(dict.fromkeys(problems[key])) or "Xledger rejected the voucher"
            results.append(RecordResult(key, RecordStatus.REJECTED, reason=reason))
        elif key in references:
            results.append(
                RecordResult(key, RecordStatus.EXPORTED, target_reference=references[key])
            )
        else:
            raise OutcomeUnknown(f"Xledger's answer does not mention voucher {key}")
    return results


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
