"""Adapters speak each target's protocol; the registry says which types exist and are offered."""

from integration_hub.adapters.base import (
    Adapter,
    AdapterError,
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
)
from integration_hub.adapters.registry import (
    all_types,
    feature_flag,
    get_type,
    offered_types,
    register,
)

__all__ = [
    "Adapter",
    "AdapterError",
    "BatchResult",
    "ConnectionResult",
    "ConnectionStatus",
    "IntegrationConfig",
    "OutcomeUnknown",
    "RecordResult",
    "RecordStatus",
    "ReferenceCode",
    "RunAbort",
    "TargetField",
    "TransientError",
    "all_types",
    "feature_flag",
    "get_type",
    "offered_types",
    "register",
]
