"""Sign-in, sessions, CSRF, throttling, bearer tokens and the actor roles behind them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from webworld import ADMIN_A, ADMIN_B, OPERATOR, ORG_A, ORG_B, PASSWORD, hidden_csrf


def test_pages_need_sign_in_and_remember_where_you_were_going(web: Any) -> None:
    anonymous = web.client()
    response = anonymous.get(f"/orgs/{ORG_A}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/sign-in?next=%2Forgs%2F{ORG_A}"
    assert anonymous.get("/api/v1/me").status_code == 401


def test_sign_in_sets_a_secure_http_only_cookie_and_lands_on_the_own_dashboard(web: Any) -> None:
    client = web.client()
    response = client.post("/sign-in", data={"email": ADMIN_A, "password": PASSWORD})
    assert response.status_code == 303
    assert response.headers["location"] == f"/orgs/{ORG_A}"
    cookie = response.headers["set-cookie"]
    assert "ih_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "SameSite=strict" in cookie
    page = client.get(f"/orgs/{ORG_A}")
    assert page.status_code == 200
    assert "Xledger" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_stored_session_is_a_hash_not_the_cookie(web: Any) -> None:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import User, WebSession

    client = web.client(ADMIN_A)
    token = client.cookies.get("ih_session")
    with hub_session() as session:
        stored = session.exec(select(WebSession)).all()
        hashes = [row.token_hash for row in stored]
        user = session.exec(select(User).where(User.email == ADMIN_A)).one()
    assert token not in hashes and len(hashes) == 1
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


def test_wrong_password_is_refused_in_the_chosen_language(web: Any) -> None:
    client = web.client()
    response = client.post("/sign-in", data={"email": ADMIN_A, "password": "wrong password!"})
    assert response.status_code == 401
    assert "e-postadressen eller passordet er feil" in response.text  # bokmål is the default
    assert "ih_session" not in response.headers.get("set-cookie", "")
    english = web.client()
    english.cookies.set("ih_lang", "en")
    response = english.post("/sign-in", data={"email": ADMIN_A, "password": "wrong password!"})
    assert "the e-mail address or the password is wrong" in response.text


def test_repeated_failures_lock_the_address_even_for_the_right_password(web: Any) -> None:
    from integration_hub.services import accounts

    client = web.client()
    for _ in range(accounts.MAX_FAILURES_PER_ADDRESS):
        assert (
            client.post("/sign-in", data={"email": ADMIN_B, "password": "nope"}).status_code == 401
        )
    locked = client.post("/sign-in", data={"email": ADMIN_B, "password": PASSWORD})
    assert locked.status_code == 429
    assert "prøv igjen om 15 minutt" in locked.text
    # Other people are not locked out by it.
    assert client.post("/sign-in", data={"email": ADMIN_A, "password": PASSWORD}).status_code == 303


def test_form_posts_need_the_sessions_csrf_token(web: Any) -> None:
    from integration_hub.services.accounts import session_for

    client = web.client(ADMIN_A)
    kept = client.cookies.get("ih_session")
    client.post("/sign-out", data={"csrf_token": "forged"})
    assert session_for(kept) is not None  # a forged sign-out ends no session (only the cookie)
    others_token = hidden_csrf(web.client(ADMIN_A).get(f"/orgs/{ORG_A}").text)
    third = web.client(ADMIN_A)
    third.post("/language", data={"language": "en", "next": "/", "csrf_token": others_token})
    third_session = session_for(third.cookies.get("ih_session"))
    assert third_session is not None and third_session.language == "nb"  # not changed

    client2 = web.client(ADMIN_A)
    token = client2.cookies.get("ih_session")
    page = client2.get(f"/orgs/{ORG_A}")
    client2.post("/sign-out", data={"csrf_token": hidden_csrf(page.text)})
    assert session_for(token) is None


def test_language_choice_sticks_to_the_session(web: Any) -> None:
    client = web.client(ADMIN_A)
    page = client.get(f"/orgs/{ORG_A}")
    assert 'lang="nb"' in page.text and "Integrasjoner for" in page.text
    client.post(
        "/language",
        data={"language": "en", "next": f"/orgs/{ORG_A}", "csrf_token": hidden_csrf(page.text)},
    )
    page = client.get(f"/orgs/{ORG_A}")
    assert 'lang="en"' in page.text and "Integrations for" in page.text


def test_sign_in_never_redirects_to_another_site(web: Any) -> None:
    client = web.client()
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = client.post(
            "/sign-in", data={"email": ADMIN_A, "password": PASSWORD, "next": target}
        )
        assert response.headers["location"] == f"/orgs/{ORG_A}"


def test_operator_reads_every_organisation_but_changes_nothing(web: Any) -> None:
    from integration_hub.services import configuration as config
    from integration_hub.services.accounts import actor_for
    from integration_hub.services.errors import Forbidden

    client = web.client(OPERATOR)
    assert client.get("/").headers["location"] == "/orgs"
    assert {o["slug"] for o in client.get("/api/v1/me").json()["organisations"]} == {ORG_A, ORG_B}
    from integration_hub.models import User

    operator = actor_for(User(email=OPERATOR, password_hash="", role="operator"))
    org = config.organisation(ORG_B, operator)
    with pytest.raises(Forbidden):
        config.integration(org, "xledger", operator, create=True)


def test_users_add_refuses_bad_input_and_changes_nothing(hub_env: str) -> None:
    from integration_hub.services import accounts
    from integration_hub.services.configuration import Actor
    from integration_hub.services.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        accounts.add_user("not-an-address", "short", organisation_slug=None, actor=Actor("t"))
    assert len(refused.value.problems) == 3  # address, password length, admin without org
    assert accounts.list_users() == []


# -- bearer tokens -----------------------------------------------------------------------------
@pytest.fixture
def idp_key(monkeypatch: pytest.MonkeyPatch) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from integration_hub.settings import reset_settings

    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("INTEGRATIONS_IDP_PUBLIC_KEY", public_pem.decode())
    monkeypatch.setenv("INTEGRATIONS_IDP_ISSUER", "https://idp.frivillig.test")
    reset_settings()
    return private


def _token(private: Any, **claims: Any) -> str:
    import jwt

    body = {
        "sub": "user-17",
        "iss": "https://idp.frivillig.test",
        "aud": "integration-hub",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        **claims,
    }
    return jwt.encode(body, private, algorithm="ES256")


def test_bearer_token_speaks_for_its_organisation_only(web: Any, idp_key: Any) -> None:
    client = web.client()
    headers = {"Authorization": f"Bearer {_token(idp_key, role='admin', org=ORG_B)}"}
    me = client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    assert [o["slug"] for o in me.json()["organisations"]] == [ORG_B]
    assert me.json()["name"] == "idp:user-17"


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "admin"},  # no organisation
        {"role": "admin", "org": "no-such-org"},
        {"role": "superuser", "org": ORG_A},
        {"role": "admin", "org": ORG_A, "aud": "someone-else"},
        {"role": "admin", "org": ORG_A, "exp": datetime.now(UTC) - timedelta(minutes=1)},
    ],
)
def test_bad_bearer_tokens_are_refused(web: Any, idp_key: Any, claims: dict[str, Any]) -> None:
    response = web.client().get(
        "/api/v1/me", headers={"Authorization": f"Bearer {_token(idp_key, **claims)}"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_token_signed_with_another_key_or_hs256_is_refused(web: Any, idp_key: Any) -> None:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    forged = _token(other, role="admin", org=ORG_A)
    symmetric = jwt.encode(
        {"sub": "x", "role": "operator", "exp": datetime.now(UTC) + timedelta(minutes=5)},
        "guess",
        algorithm="HS256",
    )
    for token in (forged, symmetric):
        response = web.client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


def test_users_add_on_the_command_line_then_sign_in(hub_env: str) -> None:
    from factories import seed_organisation
    from typer.testing import CliRunner

    from integration_hub.cli import app

    seed_organisation("hlf", [])
    runner = CliRunner()
    created = runner.invoke(
        app, ["users", "add", "Kari@HLF.test", "--org", "hlf"], input=f"{PASSWORD}\n"
    )
    assert created.exit_code == 0, created.output
    assert "Created admin kari@hlf.test of hlf." in created.output
    assert PASSWORD not in created.output
    refused = runner.invoke(app, ["users", "add", "kari@hlf.test", "--org", "hlf"], input="short\n")
    assert refused.exit_code == 2
    assert "at least 12 characters" in refused.output and "already an account" in refused.output
    listed = runner.invoke(app, ["users", "list"])
    assert "kari@hlf.test\tadmin" in listed.output and "$argon2" not in listed.output

    from integration_hub.services import accounts

    signed_in = accounts.sign_in("kari@hlf.test", PASSWORD, client="test")
    assert signed_in.actor.role == "admin" and signed_in.actor.organisation_id is not None
