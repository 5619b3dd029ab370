"""Fault switches shared by the sandboxes: validated setting, count-down faults, a rate window.

Each sandbox keeps its own ``Faults`` dataclass (the field names differ between the fake APIs)
and hands an instance to a :class:`FaultSwitches`, together with the names that matter:

* the whole-request count-down faults, in the order they are checked (at most one fires);
* the commit-then-fail count-down faults, checked for a request that wrote;
* the optional per-second admission limit field (``None`` means unlimited); the fault it
  raises carries that field's name.

Every counter is an ``int >= 0`` except ``hang_seconds`` (a number ``>= 0``, stored as float)
and the per-second limit (an ``int >= 0`` or ``None``). Bad input raises the sandbox's own
error type so each sandbox keeps the errors it has always raised.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

F = TypeVar("F")
"""A sandbox's ``Faults`` dataclass."""

HANG_SECONDS = "hang_seconds"
"""The field holding how long a hanging fault hangs."""


class FaultSwitches(Generic[F]):
    """One tenant's fault switches, guarded by the sandbox state's (re-entrant) lock."""

    def __init__(
        self,
        faults: F,
        request_faults: Sequence[str],
        commit_faults: Sequence[str],
        per_second_field: str,
        *,
        lock: threading.RLock,
        error: type[Exception] = ValueError,
    ) -> None:
        self.faults = faults
        self._request_faults = tuple(request_faults)
        self._commit_faults = tuple(commit_faults)
        self._per_second_field = per_second_field
        self._lock = lock
        self._error = error
        self._names = frozenset(f.name for f in dataclasses.fields(faults))  # type: ignore[arg-type]
        self._admitted: deque[float] = deque()

    def check_value(self, name: str, value: Any) -> Any:
        """Validate one fault field's new value and return it normalised."""
        if name == HANG_SECONDS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise self._error(f"{HANG_SECONDS} must be a number >= 0")
            return float(value)
        if name == self._per_second_field and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._error(f"{name} must be an integer >= 0")
        return value

    def set(self, **changes: Any) -> F:
        """Set fault fields by name (validated first, all or none); returns a copy of the result."""
        unknown = sorted(set(changes) - self._names)
        if unknown:
            raise self._error(f"unknown fault field(s): {', '.join(unknown)}")
        checked = {name: self.check_value(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self.faults, name, value)
            return dataclasses.replace(self.faults)  # type: ignore[type-var]

    def take_request_fault(self) -> str | None:
        """Count down and name the first armed whole-request fault, else apply the rate window.

        Returns the per-second field's name when the request is over the limit; a request let
        through is admitted into the window.
        """
        with self._lock:
            if (name := self._take(self._request_faults)) is not None:
                return name
            limit = getattr(self.faults, self._per_second_field)
            if limit is not None:
                now = time.monotonic()
                while self._admitted and now - self._admitted[0] >= 1.0:
                    self._admitted.popleft()
                if len(self._admitted) >= limit:
                    return self._per_second_field
                self._admitted.append(now)
            return None

    def take_commit_fault(self) -> tuple[str | None, float]:
        """Count down and name the first armed commit-then-fail fault, with the hang length."""
        with self._lock:
            return self._take(self._commit_faults), getattr(self.faults, HANG_SECONDS)

    def _take(self, names: Sequence[str]) -> str | None:
        for name in names:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return name
        return None
