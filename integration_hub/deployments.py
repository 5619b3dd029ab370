"""The one list of flows Integration Hub deploys, and how deployments are built from it.

Two ways to run them share this list: ``integrations serve`` (a Prefect Runner on one machine,
see :mod:`integration_hub.serving`) and ``prefect deploy --all`` with ``prefect.yaml`` for a
process work pool and workers on many hosts. A test keeps ``prefect.yaml`` equal to this list.

Flow modules are imported only when a deployment is built, so importing this module is cheap
and a flow that is not installed yet is reported, not fatal.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

WORK_POOL = "integration-hub"
"""The process work pool ``prefect.yaml`` deploys to; workers run ``--pool integration-hub``."""


@dataclass(frozen=True)
class DeployableFlow:
    """A flow and the deployment made of it; parameters carry ids and dates, never secrets."""

    name: str
    """The deployment's name."""
    entrypoint: str
    """``package.module:function``."""
    flow_name: str
    """The flow's own name (``@flow(name=...)``); with ``name`` it addresses the deployment."""
    description: str
    work_queue: str
    tags: tuple[str, ...] = ("integration-hub",)
    parameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Defaults stored on the deployment (a run or a schedule may override them)."""

    @property
    def module(self) -> str:
        return self.entrypoint.partition(":")[0]

    @property
    def function(self) -> str:
        return self.entrypoint.partition(":")[2]

    @property
    def full_name(self) -> str:
        """``flow-name/deployment-name``, how Prefect's API looks a deployment up."""
        return f"{self.flow_name}/{self.name}"

    @property
    def file_entrypoint(self) -> str:
        """The entrypoint as ``prefect.yaml`` writes it: a path from the project root."""
        return f"{self.module.replace('.', '/')}.py:{self.function}"

    def is_available(self) -> bool:
        """Whether the flow's module is installed (it may be written after this list)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def load(self) -> Flow[Any, Any]:
        module = importlib.import_module(self.module)
        return getattr(module, self.function)

    def to_runner_deployment(self) -> RunnerDeployment:
        """A deployment a Runner serves: module entrypoint, so no working directory matters."""
        from prefect.types.entrypoint import EntrypointType

        return self.load().to_deployment(
            name=self.name,
            description=self.description,
            tags=list(self.tags),
            parameters=dict(self.parameters),
            paused=False,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )


EXPORT_EXPENSE_CLAIMS = DeployableFlow(
    name="export-expense-claims",
    entrypoint="integration_hub.flows.export_expense_claims:export_expense_claims",
    flow_name="export-expense-claims",
    description=(
        "Approved expense claims of one integration to its accounting system. Parameters: "
        "integration_id, since, until, dry_run, trigger. Each integration's schedule is a "
        "schedule of this deployment (slug integration-<id>), pushed by the hub."
    ),
    work_queue="exports",
    tags=("integration-hub", "export"),
    parameters=MappingProxyType({"trigger": "manual"}),
)
RETRY_FAILED_RECORDS = DeployableFlow(
    name="retry-failed-records",
    entrypoint="integration_hub.flows.retry_failed_records:retry_failed_records",
    flow_name="retry-failed-records",
    description="Re-send only the failed records of one export run. Parameter: run_id.",
    work_queue="exports",
    tags=("integration-hub", "retry"),
)
BACKFILL = DeployableFlow(
    name="backfill",
    entrypoint="integration_hub.flows.backfill:backfill_exports",
    flow_name="backfill-exports",
    description=(
        "Export a date range chunk by chunk, skipping what was already exported. Parameters: "
        "integration_id, start, end, chunk (month by default)."
    ),
    work_queue="backfills",
    tags=("integration-hub", "backfill"),
)

DEPLOYABLE_FLOWS: tuple[DeployableFlow, ...] = (
    EXPORT_EXPENSE_CLAIMS,
    RETRY_FAILED_RECORDS,
    BACKFILL,
)


def deployable(name: str) -> DeployableFlow:
    for spec in DEPLOYABLE_FLOWS:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in DEPLOYABLE_FLOWS)
    raise KeyError(f"no deployable flow {name!r} (known: {known})")


def runner_deployments(
    flows: Iterable[DeployableFlow] = DEPLOYABLE_FLOWS,
) -> tuple[list[RunnerDeployment], list[DeployableFlow]]:
    """(deployments to serve, flows skipped because their module is not installed)."""
    built, missing = [], []
    for spec in flows:
        if spec.is_available():
            built.append(spec.to_runner_deployment())
        else:
            missing.append(spec)
    return built, missing
