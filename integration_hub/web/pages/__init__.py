"""Server-rendered pages, one module a screen."""

from integration_hub.web.pages import (
    alerts,
    audit,
    auth,
    credentials,
    dashboard,
    exclusions,
    health,
    mapping,
    operators,
    runs,
    schedule,
    wizard,
)

routers = [
    auth.router,
    dashboard.router,
    wizard.router,
    credentials.router,
    mapping.router,
    schedule.router,
    exclusions.router,
    health.router,
    alerts.router,
    runs.router,
    audit.router,
    operators.router,
]
