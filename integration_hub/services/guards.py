"""Guards as people meet them: which export is running now, and a refusal that says so.

The mechanisms live below (the export lease in :mod:`integration_hub.tasks.lease`, request pacing
in :mod:`integration_hub.tasks.pacing`), because the flows take them; this module only turns
them into what pages and the CLI show.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from integration_hub.models import Integration, utcnow
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import InvalidInput, NotFound, RunFailed, ServiceError
from integration_hub.tasks import lease
from integration_hub.tasks.context import ExportNotReady, IntegrationNotFound
from integration_hub.tasks.failures import RunStopped
from integration_hub.tasks.record import NothingToRetry


class ExportRunning(ServiceError):
    """Another export of the integration is running; the message names it and when it began."""


@contextmanager
def refused_when_busy() -> Iterator[None]:
    """Turn what a flow refuses to do (another export running, no mapping yet, nothing to
    retry) and a run that stopped (:class:`RunStopped`, recorded with its reason) into service
    errors, which pages and the CLI show as they are."""
    try:
        yield
    except RunStopped as exc:
        raise RunFailed(exc.run_id, exc.failure.value, exc.reason) from None
    except lease.ExportBusy as exc:
        raise ExportRunning(str(exc)) from None
    except (ExportNotReady, NothingToRetry) as exc:
        raise InvalidInput(str(exc)) from None
    except IntegrationNotFound as exc:
        raise NotFound(str(exc)) from None


def running_export(integration: Integration, actor: Actor) -> dict[str, Any] | None:
    """The export holding the integration's lease now, or None (an expired lease is no run)."""
    actor.check(integration.organisation_id)
    holder = lease.holder(integration.id or 0)
    if holder is None or holder.expires_at <= utcnow():
        return None
    return {
        "run_id": holder.run_id,
        "owner": holder.owner,
        "started_at": holder.acquired_at.isoformat(),
    }
