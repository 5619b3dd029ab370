"""Server-rendered pages, one module a screen."""

from integration_hub.web.pages import (
    auth,
    credentials,
    dashboard,
    exclusions,
    health,
    mapping,
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
]
