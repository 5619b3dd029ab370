"""The web app's test world: two organisations, their admins and an operator, a signed-in client
per person, and Xledger sandbox companies to point integrations at.

Used by the API, page and browser tests (through the ``web`` fixture in conftest).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from factories import seed_organisation
from fastapi import FastAPI
from fastapi.testclient import TestClient

PASSWORD = "correct horse battery staple"
ORG_A, ORG_B = "hlf", "blindeforbundet"
ADMIN_A, ADMIN_B, OPERATOR = "admin@hlf.test", "admin@blind.test", "ops@hub.test"
BASE_URL = "https://testserver"  # session cookies are Secure
CLAIMS = [
    {"category": "travel", "amount_ore": 45_000, "employee_number": "1001"},
    {"category": "toll", "amount_ore": 5_600, "employee_number": "1001"},
    {"category": "toll", "amount_ore": 4_300, "employee_number": "1002"},
    {"category": "toll", "amount_ore": 3_900, "employee_number": "1002"},
    {"category": "meals", "amount_ore": 18_950, "employee_number": "1002"},
]


@dataclass
class WebWorld:
    app: FastAPI
    sandbox_state: Any
    sandbox_url: str
    organisation_ids: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, email: str | None = None) -> TestClient:
        """A client signed in as ``email`` (None: anonymous). Redirects are not followed."""
        client = TestClient(self.app, base_url=BASE_URL, follow_redirects=False)
        if email is not None:
            response = client.post("/sign-in", data={"email": email, "password": PASSWORD})
            assert response.status_code == 303, response.text
        return client

    @staticmethod
    def csrf(client: TestClient) -> str:
        """The session's CSRF token, as a form or the X-CSRF-Token header carries it."""
        from integration_hub.services.accounts import session_for

        signed_in = session_for(client.cookies.get("ih_session"))
        assert signed_in is not None, "the client is not signed in"
        return signed_in.csrf_token

    def xledger_company(self, org_slug: str, **company: Any) -> str:
        """A sandbox company for ``org_slug``; returns its API token."""
        token = secrets.token_hex(16)
        company.setdefault("employees", [{"code": "1001"}, {"code": "1002"}])
        company.setdefault("closed_before", date(2024, 1, 1))
        self.sandbox_state.add_company(token, **company)
        self.tokens[org_slug] = token
        return token


def build_world(sandbox_state: Any, sandbox_url: str) -> WebWorld:
    from integration_hub.adapters.registry import all_types, feature_flag
    from integration_hub.services import accounts
    from integration_hub.services import configuration as config
    from integration_hub.web.app import create_app

    ids = {}
    for slug in (ORG_A, ORG_B):
        ids[slug] = seed_organisation(slug, CLAIMS)
        for adapter_type in all_types():
            config.set_feature_flag(
                ids[slug], feature_flag(adapter_type.key), True, config.OPERATOR
            )
    cli = config.Actor("test")
    accounts.add_user(ADMIN_A, PASSWORD, organisation_slug=ORG_A, actor=cli)
    accounts.add_user(ADMIN_B, PASSWORD, organisation_slug=ORG_B, actor=cli)
    accounts.add_user(OPERATOR, PASSWORD, role="operator", actor=cli)
    return WebWorld(create_app(), sandbox_state, sandbox_url, ids)


def hidden_csrf(html: str) -> str:
    """The CSRF token a rendered form carries."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)
