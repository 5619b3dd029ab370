"""The adapter protocol every integration type implements.

An integration type is one class, and every fact about the type lives on it or on its
configuration model: its key and name, its rate limit, its service's own hosts, the data
categories an organisation may leave out, and each configuration field's label, help text and
secret flag (declared once with :func:`setting` and :func:`secret`, singer-sdk style; the secret
flag decides what goes to the vault, what is masked and what is redacted). Pages, the REST API,
the CLI and the pacing read them from the registry, so a new type is one new module.

Three kinds of work, three small contracts (a type implements only what its target does)::

    Adapter              checking a target: configuration, ``probe`` (the connection test),
    |                    ``check_schema`` (the target's own schema against what we send),
    |                    ``choices`` (e.g. Business Central's companies, to pick from a list)
    +-- RecordAdapter    writing records: ``reference_codes``, ``load``, ``lookup`` and
    |                    ``check_imports`` (a target that imports what it accepted later,
    |                    such as Xledger); the generic load engine in
    |                    :mod:`integration_hub.tasks.load` drives them and keeps the ledger
    +-- ReportAdapter    submitting one aggregated report per period: ``submit_report``
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, final

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_core import PydanticUndefined

from integration_hub.adapters.endpoints import guarded_transport
from integration_hub.settings import get_settings
from integration_hub.vault.masking import redact

if TYPE_CHECKING:
    import pandas as pd

CONNECTION_TEST_DEADLINE_S = 10.0
TARGET_TEXT_LIMIT = 1000
"""At most this much of what a target says is kept (a reason, an error): enough to act on."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def setting(default: Any = PydanticUndefined, *, label: str, help: str = "", **rules: Any) -> Any:
    """A configuration field that is not secret: stored in the settings column, shown as typed.
    ``label`` and ``help`` are what the forms and the CLI show (English source text, translated
    by the web app's catalogue); ``rules`` are pydantic's constraints (``min_length``...)."""
    return Field(
        default, title=label, description=help, json_schema_extra={"secret": False}, **rules
    )


def secret(default: Any = PydanticUndefined, *, label: str, help: str = "") -> Any:
    """A secret configuration field (annotated ``SecretStr``, or ``SecretStr | None`` with
    ``default=None``): stored only in the vault, shown only as its mask, redacted from
    everything the adapter lets out."""
    return Field(default, title=label, description=help, json_schema_extra={"secret": True})


def _holds_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


class IntegrationConfig(BaseModel):
    """Typed configuration of one integration type; every field declared with :func:`setting`
    or :func:`secret`, so its secret flag is explicit and its form text lives beside it."""

    model_config = ConfigDict(hide_input_in_errors=True, extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A field without an explicit flag, or a ``SecretStr`` not flagged secret (a
        ``SecretStr | None`` once was, and its mask was stored as the setting), stops the
        class at import, not an admin's secret at runtime."""
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if "secret" not in extra or not info.title:
                raise TypeError(f"{cls.__name__}.{name}: declare it with setting() or secret()")
            if bool(extra["secret"]) != _holds_secret(info.annotation):
                raise TypeError(
                    f"{cls.__name__}.{name}: secret() is for SecretStr fields, and only them"
                )

    @classmethod
    def secret_fields(cls) -> tuple[str, ...]:
        return tuple(name for name, info in cls.model_fields.items() if _is_secret(info))

    @classmethod
    def field_text(cls, name: str) -> tuple[str, str]:
        """A field's label and help text (English source text); the name for an unknown one."""
        info = cls.model_fields.get(name)
        return (info.title or name, info.description or "") if info else (name, "")

    @classmethod
    def setting_fields(cls) -> tuple[str, ...]:
        return tuple(name for name in cls.model_fields if name not in cls.secret_fields())

    def settings(self) -> dict[str, Any]:
        """The non-secret part, safe for the database, pages, logs and Prefect parameters."""
        return self.model_dump(mode="json", include=set(self.setting_fields()))

    def secrets(self) -> dict[str, str]:
        """The secret part in plaintext: only for the vault's ``store`` (an optional secret
        left out is absent)."""
        values = {name: getattr(self, name) for name in self.secret_fields()}
        return {name: value.get_secret_value() for name, value in values.items() if value}

    def secret_values(self) -> list[str]:
        """Values to scrub from any text that might leave the adapter."""
        return [value for value in self.secrets().values() if value]


def _is_secret(info: Any) -> bool:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return bool(extra.get("secret"))


def endpoint_setting(
    default: str,
    *,
    label: str = "Service address (URL)",
    help: str = "Where the service answers. Keep the suggested address unless your supplier "
    "gave you another one.",
) -> Any:
    """An endpoint field (annotate it :data:`~integration_hub.adapters.endpoints.EndpointUrl`)."""
    return setting(default, label=label, help=help)


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` requests per ``per_s`` seconds to one target host, across every run
    (kept by :mod:`integration_hub.tasks.pacing`)."""

    requests: int
    per_s: float = 1.0

    @property
    def interval_us(self) -> int:
        return max(1, int(self.per_s * 1_000_000 / self.requests))


@dataclass(frozen=True)
class Choice:
    """Something the target offers to pick for a configuration field (a Business Central
    company or journal), so that an admin picks from a list instead of pasting a GUID."""

    id: str
    name: str
    code: str = ""
    note: str = ""
    """Why it cannot be used as it is ("" when it can)."""


class ConnectionStatus(StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    UNREACHABLE = "unreachable"
    TIMED_OUT = "timed_out"
    THROTTLED = "throttled"
    UNEXPECTED_RESPONSE = "unexpected_response"


@dataclass(frozen=True)
class ConnectionResult:
    status: ConnectionStatus
    detail: str
    elapsed_ms: int = 0
    warnings: tuple[str, ...] = ()
    """What the target's own schema says differs from what the hub sends (see
    :meth:`Adapter.check_schema`), for a person to read before saving; never a failure."""

    @property
    def ok(self) -> bool:
        return self.status is ConnectionStatus.OK


class AccountKind(StrEnum):
    """What an account is, where the target's chart says it (:attr:`ReferenceCode.kind`)."""

    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"


@dataclass(frozen=True)
class ReferenceCode:
    """A code the target accepts (e.g. an account), with whether it can be posted to."""

    code: str
    name: str
    postable: bool = True
    note: str = ""
    kind: AccountKind | None = None
    """The account's kind as the target's chart of accounts states it; None where the target
    does not say (then the mapping validator cannot warn about an account of the wrong kind)."""


@dataclass(frozen=True)
class TargetField:
    """A field a mapping fills; ``reference`` fields are checked against the target's codes."""

    name: str
    label: str
    required: bool = True
    reference: bool = False
    help: str = ""


@dataclass(frozen=True)
class SchemaDrift:
    """One difference between what an adapter sends and what the target's schema declares.

    ``error``: a request as we build it would be refused or misread (a field we send that the
    target lacks, a changed type, a required field we do not send): exports stop until it is
    fixed. ``warning``: it may still work (e.g. a value we send is not among an enum's values).
    """

    severity: Literal["error", "warning"]
    field: str
    """Where, e.g. ``AddGLImportItemsInput.node.trRegNumber``."""
    message: str
    """What differs and what to do, for an admin."""

    # One wording per kind of drift, shared by every adapter (and translated by its shape).
    @classmethod
    def missing(cls, target: str, field: str) -> SchemaDrift:
        return cls("error", field, f"{target} does not have {field}, which the hub sends; {_STOP}")

    @classmethod
    def changed(cls, target: str, field: str, expected: str, sent: str) -> SchemaDrift:
        return cls(
            "error",
            field,
            f"{target} expects {expected} for {field}, which the hub sends as {sent}; {_STOP}",
        )

    @classmethod
    def required(cls, target: str, field: str) -> SchemaDrift:
        return cls(
            "error", field, f"{target} requires {field}, which the hub does not send; {_STOP}"
        )

    @classmethod
    def refused(cls, target: str, request: str, reason: str) -> SchemaDrift:
        return cls(
            "error",
            request,
            f"{target} refused the hub's {request} request: {reason}; {_STOP}",
        )

    @classmethod
    def unknown_value(cls, target: str, field: str, values: str, value: str | None) -> SchemaDrift:
        """``value`` None: the value comes from the field mapping, record by record."""
        if value is None:
            message = (
                f"{target} accepts only {values} for {field}, and the hub sends what the field "
                "mapping gives; check that the mapping gives only these values"
            )
        else:
            message = (
                f"{target} accepts only {values} for {field}, and the hub sends {value}; "
                "check the integration's settings"
            )
        return cls("warning", field, message)


_STOP = "exports stop until the hub is updated for it (tell the hub's operators)"


class RecordStatus(StrEnum):
    EXPORTED = "exported"
    REJECTED = "rejected"  # the target refused this record; retrying unchanged will not help


@dataclass(frozen=True)
class RecordResult:
    idempotency_key: str
    status: RecordStatus
    target_reference: str | None = None
    reason: str | None = None


@dataclass
class BatchResult:
    """What the target said about one request's records, plus how many requests it took."""

    results: list[RecordResult] = field(default_factory=list)
    requests: int = 1


class AdapterError(Exception):
    """Base of the errors the load engine sorts. The tree, and what the engine does::

        AdapterError
        +-- TransientError     nothing was stored: wait (Retry-After wins) and send again
        +-- OutcomeUnknown     the request may have been stored: keep the ledger rows pending,
        |                      wait the target's settle time, look the keys up, send what is absent
        +-- RunAbort           nothing more can succeed in this run, and the request that met
                               it stored nothing: stop, release its records, say why

    Which answer is which lives in one table, :func:`classify_status` and
    :func:`classify_transport_error`; an adapter overrides it only where its target differs.
    """


class TransientError(AdapterError):
    """Nothing was stored (rate limit, 5xx before processing): safe to send again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeUnknown(AdapterError):
    """The request may or may not have been stored (timeout, dropped connection, a gateway
    error or an unreadable answer to a write)."""


class RunAbort(AdapterError):
    """Nothing more can succeed in this run (bad token, credits used up): stop and say why.

    Raised on a write, it also says the target stored nothing of that request (it refused it
    before processing), so the records may be released and sent by a later run."""


class Answer(StrEnum):
    """What an answer to one request means, before the adapter reads any body."""

    OK = "ok"
    RETRY = "retry"  # refused before processing: TransientError
    UNKNOWN = "unknown"  # may have been processed: OutcomeUnknown
    STOP = "stop"  # refused, nothing processed, and retrying cannot help: RunAbort


def classify_status(status: int, *, write: bool) -> Answer:
    """The status -> action table every adapter shares (Airbyte-CDK style).

    ========================  ==========  ================================================
    HTTP status               read        write
    ========================  ==========  ================================================
    2xx                       OK          OK (the body decides per record)
    401, 403                  STOP        STOP (authentication comes before processing)
    429                       RETRY       RETRY (throttling comes before processing)
    other 4xx                 STOP        STOP (a definitive refusal)
    5xx, 408, anything else   RETRY       UNKNOWN: a gateway or load balancer answers 502/504
                                          (and a backend 500/503) after the backend may have
                                          committed, so the keys are looked up, never re-sent
    ========================  ==========  ================================================
    """
    if 200 <= status < 300:
        return Answer.OK
    if status in (401, 403):
        return Answer.STOP
    if status == 429:
        return Answer.RETRY
    if 400 <= status < 500 and status != 408:
        return Answer.STOP
    return Answer.UNKNOWN if write else Answer.RETRY


def classify_transport_error(exc: httpx.TransportError, *, write: bool) -> Answer:
    """A request that got no answer: only a connection never made (refused, no route, DNS, a
    connect timeout, no free connection) proves the request never left; everything else (read
    timeout, reset, a truncated or malformed answer) may have been processed."""
    never_sent = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.UnsupportedProtocol,
    )
    if isinstance(exc, never_sent) or not write:
        return Answer.RETRY
    return Answer.UNKNOWN


def _cleaned_results(adapter: Adapter, items: list[Any]) -> list[Any]:
    """Record reasons and schema drift pass :meth:`Adapter.clean`; anything else is kept."""
    cleaned: list[Any] = []
    for item in items:
        if isinstance(item, RecordResult) and item.reason:
            item = replace(item, reason=adapter.clean(item.reason))
        elif isinstance(item, SchemaDrift):
            item = replace(
                item, field=adapter.clean(item.field), message=adapter.clean(item.message)
            )
        cleaned.append(item)
    return cleaned


def _cleaning(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def cleaned(self: Adapter, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except AdapterError as exc:
            exc.args = (self.clean(str(exc)),)
            raise
        if isinstance(result, BatchResult):
            result.results = _cleaned_results(self, result.results)
        elif isinstance(result, list):
            result = _cleaned_results(self, result)
        return result

    cleaned._cleans = True  # type: ignore[attr-defined]
    return cleaned


_CLEANED = ("load", "lookup", "reference_codes", "check_imports", "check_schema", "choices")


class Adapter(ABC):
    """Checking one integration type's target. Subclasses set the class variables and implement
    :meth:`probe`; a type that writes records or submits reports extends
    :class:`RecordAdapter` or :class:`ReportAdapter` instead."""

    key: ClassVar[str]
    display_name: ClassVar[str]
    config_model: ClassVar[type[IntegrationConfig]]
    record_type: ClassVar[str] = "expense_claim"
    default_mapping: ClassVar[str | None] = None
    """File name of the mapping template under ``integration_hub/mappings/``; None for a type
    that maps no fields."""
    runs_on_schedule: ClassVar[bool] = False
    """Whether the hub exports on a schedule (Bufdir is reported per closed period instead)."""
    exclusion_choices: ClassVar[tuple[str, ...]] = (
        "mileage",
        "travel",
        "meals",
        "materials",
        "parking",
        "toll",
    )
    """The data categories an organisation may opt out of (default: the claim categories,
    :class:`integration_hub.models.ClaimCategory`)."""
    rate_limit: ClassVar[RateLimit] = RateLimit(5, 1.0)
    """Requests to one target host, kept across every run (:mod:`integration_hub.tasks.pacing`);
    a cautious default for a target that publishes no number."""
    choice_fields: ClassVar[tuple[str, ...]] = ()
    """Configuration fields whose values the target lists for an admin to pick (:meth:`choices`)."""

    vendor_hosts: ClassVar[tuple[str, ...]] = ()
    """The service's own hosts: endpoints may point there over https without an operator's
    say (:mod:`integration_hub.adapters.endpoints`)."""
    connect_timeout_s: ClassVar[float] = 3.0
    read_timeout_s: float = 30.0
    """Default wait for an answer; an operator overrides it per type
    (``INTEGRATIONS_TARGETS__<TYPE>__READ_TIMEOUT_SECONDS``)."""

    def __init__(
        self, config: IntegrationConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        if not isinstance(config, self.config_model):
            raise TypeError(f"{self.key} needs a {self.config_model.__name__}")
        self.config = config
        self._transport = transport
        self._http: httpx.Client | None = None
        self.requests_sent = 0
        target = get_settings().target(self.key)
        if target.read_timeout_seconds is not None:
            self.read_timeout_s = target.read_timeout_seconds

    @property
    def http(self) -> httpx.Client:
        """One pooled client per adapter: a new client per request costs an SSL context and a
        TCP handshake (~20 ms each; 8 s over a 100,000-claim export)."""
        if self._http is None or self._http.is_closed:
            timeout = httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
            self._http = self.new_client(timeout=timeout)
        return self._http

    def new_client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client whose every connection passes the endpoint guard (no private or
        metadata addresses unless an operator allowed them); a test's ``transport`` replaces
        the network altogether."""
        transport = self._transport or guarded_transport()
        return httpx.Client(transport=transport, follow_redirects=False, **kwargs)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def redact(self, text: str) -> str:
        return redact(text, self.config.secret_values())

    def clean(self, text: str, limit: int = TARGET_TEXT_LIMIT) -> str:
        """What may leave the adapter of a text that may hold the target's words: secrets
        redacted, control characters dropped, at most ``limit`` characters."""
        text = _CONTROL.sub("", self.redact(text))
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every adapter's ``load``, ``lookup``, ``reference_codes``, ``check_imports``,
        ``check_schema`` and ``choices`` pass :meth:`clean` at the boundary, once: an error
        message, a record's reason or a schema's field name may echo a header (the token) or
        anything else the far end chose to say."""
        super().__init_subclass__(**kwargs)
        for name in _CLEANED:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_cleans", False):
                setattr(cls, name, _cleaning(method))

    @final
    def check_connection(self, deadline_s: float = CONNECTION_TEST_DEADLINE_S) -> ConnectionResult:
        """Probe the target and, when that works, compare its schema with what we send
        (:meth:`check_schema`, shown as warnings); always answers within ``deadline_s``."""
        started = time.monotonic()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        future = pool.submit(self._probe_classified, deadline_s)
        warnings: tuple[str, ...] = ()
        try:
            result = future.result(timeout=deadline_s)
            if result.ok:
                left = deadline_s - (time.monotonic() - started)
                warnings = self._schema_warnings(pool, left)
        except concurrent.futures.TimeoutError:
            result = ConnectionResult(
                ConnectionStatus.TIMED_OUT,
                f"{self.display_name} did not answer within {deadline_s:.0f} seconds",
            )
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        elapsed = int((time.monotonic() - started) * 1000)
        return ConnectionResult(
            result.status,
            self.clean(result.detail, 300),
            elapsed,
            tuple(self.clean(w, 300) for w in warnings),
        )

    def _schema_warnings(
        self, pool: concurrent.futures.ThreadPoolExecutor, left_s: float
    ) -> tuple[str, ...]:
        """:meth:`check_schema` in what is left of the connection test's time. A check that
        cannot run is itself a warning, never a failed test: the credentials work, and the
        check runs again before every export."""
        later = "the hub checks again before each export"
        if left_s <= 0.2:
            return (f"There was no time left to compare {self.display_name}'s schema; {later}",)
        future = pool.submit(self.check_schema)
        try:
            drift = future.result(timeout=left_s)
        except concurrent.futures.TimeoutError:
            return (f"{self.display_name}'s schema could not be read in time; {later}",)
        except Exception as exc:  # a check that breaks must not break the connection test
            return (f"{self.display_name}'s schema could not be compared ({exc}); {later}",)
        return tuple(d.message for d in drift)

    def _probe_classified(self, deadline_s: float) -> ConnectionResult:
        try:
            return self.probe(deadline_s)
        except httpx.TimeoutException:
            return ConnectionResult(
                ConnectionStatus.TIMED_OUT, f"{self.display_name} did not answer in time"
            )
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            return ConnectionResult(
                ConnectionStatus.UNREACHABLE,
                f"Could not reach {self.display_name}: {type(exc).__name__}",
            )
        except httpx.HTTPError as exc:
            return ConnectionResult(
                ConnectionStatus.UNREACHABLE, f"Could not reach {self.display_name}: {exc}"
            )

    @abstractmethod
    def probe(self, deadline_s: float) -> ConnectionResult:
        """One cheap authenticated request; map the answer to a :class:`ConnectionResult`.

        Transport errors may propagate: :meth:`check_connection` classifies them. Must not wait
        on a Retry-After; a throttled answer is itself the result.
        """

    def check_schema(self) -> list[SchemaDrift]:
        """Compare what this adapter sends with the target's own schema (introspection,
        ``$metadata``): fields we send that it lacks, changed types, required fields we do not
        send, enum values it does not know. The default has nothing to compare."""
        return []

    def choices(self, field: str, within: str | None = None) -> list[Choice]:
        """What the target offers for configuration field ``field`` (one of
        :attr:`choice_fields`), read with the stored credentials; ``within`` names the choice
        it depends on when not the configured one (a journal's company). The default offers
        nothing."""
        return []


class RecordAdapter(Adapter):
    """Writing records to a target: the generic load engine drives these operations and keeps
    the export ledger, so an adapter only speaks its target's protocol."""

    runs_on_schedule: ClassVar[bool] = True
    target_fields: ClassVar[tuple[TargetField, ...]] = ()
    """The fields a mapping fills."""
    reference_label: ClassVar[str] = "account"
    max_lines_per_request: ClassVar[int] = 100
    text_max_length: ClassVar[int] = 250
    import_is_staged: ClassVar[bool] = False
    """True when the target answers a write before it has checked and booked it (Xledger's GL
    import). The load engine then confirms accepted records only after :meth:`check_imports`
    said none of them failed, once per run."""
    settle_s: float = 600.0
    """How long records whose request got no clear answer wait before they are looked up at the
    target (``INTEGRATIONS_TARGETS__<TYPE>__SETTLE_SECONDS``). A lookup right after a timeout
    cannot see a commit the target makes later, and re-sending then books the claim twice. No
    target publishes how late a commit can land; ten minutes is our assumption, long against
    the seconds a request takes, and the next nightly run settles whatever is left."""

    def __init__(
        self, config: IntegrationConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(config, transport=transport)
        settle = get_settings().target(self.key).settle_seconds
        if settle is not None:
            self.settle_s = settle

    @abstractmethod
    def reference_codes(self) -> list[ReferenceCode]:
        """Every code a mapping may use (e.g. the whole chart of accounts, all pages)."""

    @abstractmethod
    def load(self, lines: pd.DataFrame) -> BatchResult:
        """Send one request's worth of lines (whole records only) and say per record what
        happened. Raise :class:`TransientError`, :class:`OutcomeUnknown` or :class:`RunAbort`
        for whole-request problems."""

    @abstractmethod
    def lookup(self, keys: list[str]) -> dict[str, str]:
        """Which of these idempotency keys the target already has: key -> target reference."""

    def check_imports(self, accepted: dict[str, str]) -> list[RecordResult]:
        """Of records the target accepted or holds (key -> target reference, from ``load`` or
        ``lookup``), those it refused to import, as rejected results with the target's reason.

        Only called when :attr:`import_is_staged`; a target that checks everything before it
        answers refuses nothing here."""
        return []


class ReportAdapter(Adapter):
    """Submitting one aggregated report per period (Bufdir): no records, no field mapping, no
    schedule."""

    @abstractmethod
    def submit_report(self, org_number: str, csv_bytes: bytes, summary: str) -> Any:
        """Deliver one period's report; answers what the target says of the submission."""
