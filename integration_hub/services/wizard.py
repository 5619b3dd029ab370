"""The setup wizard's steps and where a person left off, so the wizard can be resumed.

The resume point is ``Integration.setup_step``; it only moves forward as steps are completed, and
becomes None when the integration is activated. Each step's own work (credentials, connection
test, mapping, schedule, exclusions) is done by the configuration services; this module only
keeps the order.
"""

from __future__ import annotations

from integration_hub.adapters.registry import get_type
from integration_hub.db import hub_session
from integration_hub.models import Integration, IntegrationStatus, Organisation, utcnow
from integration_hub.services import configuration as config
from integration_hub.services.configuration import Actor
from integration_hub.services.errors import NotFound

ALL_STEPS = ("credentials", "test", "mapping", "schedule", "exclusions", "review")


def steps_for(type_key: str) -> tuple[str, ...]:
    """The wizard's steps for a type (Bufdir maps no fields and is reported per closed period,
    so it has neither a mapping nor a schedule step)."""
    adapter_type = get_type(type_key)
    skipped = {
        "mapping": adapter_type.default_mapping is None,
        "schedule": not adapter_type.runs_on_schedule,
    }
    return tuple(s for s in ALL_STEPS if not skipped.get(s, False))


def check_step(type_key: str, step: str) -> None:
    if step not in steps_for(type_key):
        raise NotFound(f"the setup of {get_type(type_key).display_name} has no step {step!r}")


def planned(org_slug: str, type_key: str, actor: Actor) -> tuple[Organisation, Integration]:
    """What the wizard shows: the organisation and its integration of ``type_key``, or, while
    there is none, an unsaved draft (no id) standing at the first step.

    Opening the wizard is a GET and must change nothing, so the draft is only stored by
    :func:`start` when the first step is posted. Who may not set the type up (an operator, an
    organisation the type is not offered to) is refused here already, as :func:`start` would.
    """
    org = config.organisation(org_slug, actor)
    config.integration_type(type_key)  # an unknown type is not found, not "not set up yet"
    try:
        return org, config.integration(org, type_key, actor)
    except NotFound:
        actor.check_change(org.id or 0)
    draft = Integration(
        organisation_id=org.id or 0, type_key=type_key, setup_step=steps_for(type_key)[0]
    )
    return org, draft


def start(org_slug: str, type_key: str, actor: Actor) -> Integration:
    """The organisation's integration of ``type_key``, created (in draft) when it is new: by
    the wizard's first post and ``POST .../integrations/{type}`` of the API, never a GET."""
    org = config.organisation(org_slug, actor)
    try:
        return config.integration(org, type_key, actor)
    except NotFound:
        pass
    row = config.integration(org, type_key, actor, create=True)
    return _set_step(row, steps_for(type_key)[0])


def resume_step(row: Integration) -> str:
    """Where the wizard continues: the stored step, or the first step of a finished setup."""
    steps = steps_for(row.type_key)
    return row.setup_step if row.setup_step in steps else steps[0]


def complete(row: Integration, step: str, actor: Actor) -> str:
    """Mark ``step`` done and return the next step (the resume point never moves back)."""
    actor.check_change(row.organisation_id)
    steps = steps_for(row.type_key)
    check_step(row.type_key, step)
    following = steps[min(steps.index(step) + 1, len(steps) - 1)]
    current = row.setup_step
    if current is not None and current in steps and steps.index(current) >= steps.index(following):
        return following
    if current is None and row.status != IntegrationStatus.DRAFT:
        return following  # an activated integration being edited keeps no resume point
    _set_step(row, following)
    return following


def activate(row: Integration, actor: Actor) -> None:
    """The wizard's last step: the integration goes active and the wizard is finished.

    Done by the setup service (:func:`integration_hub.services.setup.activate`), as every
    setup is: the last test must have passed, the connection is tested again, and the status,
    the test and the finished wizard are stored together, then the schedule is pushed."""
    from integration_hub.services import setup  # setup builds on this module

    setup.activate(row, actor)


def _set_step(row: Integration, step: str | None) -> Integration:
    with hub_session() as session:
        stored = session.get(Integration, row.id)
        assert stored is not None
        stored.setup_step = step
        stored.updated_at = utcnow()
        session.add(stored)
        session.flush()
        session.refresh(stored)
        session.expunge(stored)
    return stored
