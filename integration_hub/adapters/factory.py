"""Builds a ready adapter for a stored integration: settings from the row, secrets from the vault.

This is the only road from ciphertext to an adapter; it runs inside the task that needs the
adapter, so secrets never travel as flow parameters or results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from sqlmodel import Session

from integration_hub.adapters.base import Adapter, RecordAdapter, ReferenceCode, SchemaDrift
from integration_hub.adapters.endpoints import binding
from integration_hub.adapters.registry import get_type
from integration_hub.models import Integration


class IntegrationNotConfigured(RuntimeError):
    """The integration lacks settings or credentials; the message names them, never values."""


def build_adapter(
    session: Session, integration: Integration, *, purpose: str, actor: str = "system"
) -> Adapter:
    from integration_hub.vault import CredentialVault, VaultEndpointMismatch

    adapter_type = get_type(integration.type_key)
    model = adapter_type.config_model
    try:
        secrets = CredentialVault.from_settings().reveal_all(
            session,
            organisation_id=integration.organisation_id,
            integration_id=integration.id or 0,
            purpose=purpose,
            actor=actor,
            endpoint=binding(model, integration.settings),
        )
    except VaultEndpointMismatch as exc:
        raise IntegrationNotConfigured(str(exc)) from None
    return _configured(adapter_type, integration.settings, secrets)


def build_candidate_adapter(
    session: Session,
    integration: Integration,
    settings: dict[str, Any],
    new_secrets: Mapping[str, str],
    *,
    purpose: str,
    actor: str = "system",
) -> Adapter:
    """An adapter for a configuration that is not stored yet, so that the setup service can
    test it before it stores anything: ``settings`` replace the stored ones and
    ``new_secrets`` (just entered) the stored secrets of the same name. Every other secret is
    the stored one, revealed only when it was entered for the endpoint ``settings`` name, as
    :func:`build_adapter` does. ``integration`` may be a draft not stored yet (no id)."""
    from integration_hub.vault import CredentialVault, VaultEndpointMismatch

    adapter_type = get_type(integration.type_key)
    model = adapter_type.config_model
    secrets = {name: value for name, value in new_secrets.items() if value}
    if integration.id is not None:
        vault = CredentialVault.from_settings()
        stored = vault.masked(session, integration_id=integration.id)
        try:
            for name in model.secret_fields():
                if name in stored and name not in secrets:
                    secrets[name] = vault.reveal(
                        session,
                        organisation_id=integration.organisation_id,
                        integration_id=integration.id,
                        field=name,
                        purpose=purpose,
                        actor=actor,
                        endpoint=binding(model, settings),
                    )
        except VaultEndpointMismatch as exc:
            raise IntegrationNotConfigured(str(exc)) from None
    return _configured(adapter_type, settings, secrets)


def _configured(
    adapter_type: type[Adapter], settings: dict[str, Any], secrets: dict[str, str]
) -> Adapter:
    """The adapter of ``settings`` and ``secrets``; what is missing or invalid is named (never
    a value)."""
    model = adapter_type.config_model
    missing = [name for name in model.secret_fields() if not secrets.get(name)]
    if missing:
        raise IntegrationNotConfigured(
            f"{adapter_type.display_name} has no {', '.join(missing)} yet; "
            "enter the credentials in the setup wizard"
        )
    try:
        config = model.model_validate({**settings, **secrets})
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise IntegrationNotConfigured(
            f"{adapter_type.display_name} settings are incomplete or invalid: {fields}"
        ) from None
    return adapter_type(config)


_CACHE_LOCK = threading.Lock()
_CACHE: dict[tuple[str, int, str], tuple[float, Any]] = {}
REFERENCE_TTL_S = 300.0
SCHEMA_TTL_S = 6 * 3600.0
"""A schema changes rarely: checked once for a nightly run, or a whole backfill, not per chunk;
a change to the integration's settings starts afresh."""

T = TypeVar("T")


def _cached(kind: str, integration: Integration, max_age_s: float, fetch: Callable[[], T]) -> T:
    """``fetch()``, at most once per ``max_age_s`` per integration version (its ``updated_at``:
    new settings or credentials ask again). A fetch that raises is not remembered."""
    stamp = integration.updated_at.isoformat() if integration.updated_at else ""
    key = (kind, integration.id or 0, stamp)
    now = time.monotonic()
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit and now - hit[0] < max_age_s:
            return cast(T, hit[1])
    value = fetch()
    with _CACHE_LOCK:
        _CACHE[key] = (now, value)
    return value


def cached_reference_codes(
    adapter: RecordAdapter, integration: Integration, *, max_age_s: float = REFERENCE_TTL_S
) -> list[ReferenceCode]:
    """The target's codes, fetched at most once per ``max_age_s`` per integration version."""
    return _cached("codes", integration, max_age_s, adapter.reference_codes)


def cached_schema_drift(
    adapter: Adapter, integration: Integration, *, max_age_s: float = SCHEMA_TTL_S
) -> list[SchemaDrift]:
    """:meth:`Adapter.check_schema`, asked at most once per ``max_age_s`` per integration
    version, so that a nightly run costs one extra request and a backfill not one per chunk."""
    return _cached("schema", integration, max_age_s, adapter.check_schema)


def forget_reference_codes(integration_id: int | None = None) -> None:
    """Forget what :func:`cached_reference_codes` and :func:`cached_schema_drift` remember."""
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if integration_id in (None, k[1])]:
            del _CACHE[key]
