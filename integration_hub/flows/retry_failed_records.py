"""``retry_failed_records``: re-send only the failed records of one export run.

Typical use: the admin fixed the mapping (or the volunteer's employee number, or reopened the
period) and retries. The retry is a run of its own (trigger ``retry``, linked to the run it
retries), extracts the *current* versions of exactly those records and goes through the same
pipeline, so attempts are counted and nothing already exported is sent again. Starting it twice,
or retrying its Prefect flow run from the UI, sends nothing twice: the export ledger sees to it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from integration_hub.flows.pipeline import final_state, run_name, run_pipeline
from integration_hub.tasks.record import NothingToRetry, failed_records


@flow(name="retry-failed-records", flow_run_name=run_name, log_prints=False)
def retry_failed_records(run_id: int) -> Any:
    """Re-send the failed records of hub run ``run_id``; returns the new run's summary."""
    integration_id, records = failed_records(run_id)
    if not records:
        raise NothingToRetry(f"run {run_id} has no failed records to retry")
    return final_state(
        run_pipeline(integration_id, trigger="retry", record_ids=records, retry_of_run_id=run_id)
    )
