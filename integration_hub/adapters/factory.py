"""Builds a ready adapter for a stored integration: settings from the row, secrets from the vault.

This is the only road from ciphertext to an adapter; it runs inside the task that needs the
adapter, so secrets never travel as flow parameters or results.
"""

from __future__ import annotations

import threading
import time

from pydantic import ValidationError
from sqlmodel import Session

from integration_hub.adapters.base import Adapter, ReferenceCode
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
    missing = [name for name in model.secret_fields() if not secrets.get(name)]
    if missing:
        raise IntegrationNotConfigured(
            f"{adapter_type.display_name} has no {', '.join(missing)} yet; "
            "enter the credentials in the setup wizard"
        )
    try:
        config = model.model_validate({**integration.settings, **secrets})
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise IntegrationNotConfigured(
            f"{adapter_type.display_name} settings are incomplete or invalid: {fields}"
        ) from None
    return adapter_type(config)


_CACHE_LOCK = threading.Lock()
_REFERENCE_CACHE: dict[tuple[int, str], tuple[float, list[ReferenceCode]]] = {}
REFERENCE_TTL_S = 300.0


def cached_reference_codes(
    adapter: Adapter, integration: Integration, *, max_age_s: float = REFERENCE_TTL_S
) -> list[ReferenceCode]:
    """The target's codes, fetched at most once per ``max_age_s`` per integration version."""
    stamp = integration.updated_at.isoformat() if integration.updated_at else ""
    key = (integration.id or 0, stamp)
    now = time.monotonic()
    with _CACHE_LOCK:
        hit = _REFERENCE_CACHE.get(key)
        if hit and now - hit[0] < max_age_s:
            return hit[1]
    codes = adapter.reference_codes()
    with _CACHE_LOCK:
        _REFERENCE_CACHE[key] = (now, codes)
    return codes


def forget_reference_codes(integration_id: int | None = None) -> None:
    with _CACHE_LOCK:
        for key in [k for k in _REFERENCE_CACHE if integration_id in (None, k[0])]:
            del _REFERENCE_CACHE[key]
