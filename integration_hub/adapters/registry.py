"""The registry of integration types, and which ones an organisation's feature flags offer."""

from __future__ import annotations

from collections.abc import Iterable

from integration_hub.adapters.base import Adapter

_TYPES: dict[str, type[Adapter]] = {}


class UnknownIntegrationType(KeyError):
    def __str__(self) -> str:
        known = ", ".join(sorted(_TYPES)) or "none"
        return f"Unknown integration type {self.args[0]!r} (known: {known})"


def register(adapter: type[Adapter]) -> type[Adapter]:
    """Class decorator: make an adapter available under its ``key``."""
    if adapter.key in _TYPES and _TYPES[adapter.key] is not adapter:
        raise ValueError(f"integration type {adapter.key!r} registered twice")
    _TYPES[adapter.key] = adapter
    return adapter


def _load_builtin() -> None:
    from integration_hub.adapters import bufdir, dynamics, xledger  # noqa: F401


def get_type(key: str) -> type[Adapter]:
    _load_builtin()
    try:
        return _TYPES[key]
    except KeyError:
        raise UnknownIntegrationType(key) from None


def all_types() -> list[type[Adapter]]:
    _load_builtin()
    return [_TYPES[key] for key in sorted(_TYPES)]


def feature_flag(key: str) -> str:
    """The feature flag that offers an integration type to an organisation."""
    return f"integration.{key}"


def offered_types(enabled_flags: Iterable[str]) -> list[type[Adapter]]:
    flags = set(enabled_flags)
    return [adapter for adapter in all_types() if feature_flag(adapter.key) in flags]
