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
    page = client.get("/sign-in")
    assert "Etter 5 feil passord for én konto fra adressen din" in page.text  # the rules, up front
    assert "settes kontoen på pause for alle i 5 minutter" in page.text
    for _ in range(accounts.PER_ACCOUNT_AND_CLIENT.limit):
        assert (
            client.post("/sign-in", data={"email": ADMIN_B, "password": "nope"}).status_code == 401
        )
    locked = client.post("/sign-in", data={"email": ADMIN_B, "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "900"
    assert "for mange feil passord for denne kontoen fra adressen din" in locked.text
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
        {"role": "admin", "org": ORG_A, "exp": datetime.now(UTC) + timedelta(hours=25)},
        {"role": "admin", "org": ORG_A, "iss": "https://another.idp.test"},
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


def test_a_token_may_live_as_long_as_the_setting_allows(
    web: Any, idp_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration_hub.settings import reset_settings

    day = _token(idp_key, role="operator", exp=datetime.now(UTC) + timedelta(hours=23))
    week = _token(idp_key, role="operator", exp=datetime.now(UTC) + timedelta(days=6))
    assert web.client().get("/api/v1/me", headers={"Authorization": f"Bearer {day}"}).is_success
    refused = web.client().get("/api/v1/me", headers={"Authorization": f"Bearer {week}"})
    assert refused.status_code == 401 and "more than 24 hours" in refused.json()["error"]
    monkeypatch.setenv("INTEGRATIONS_IDP_MAX_TOKEN_HOURS", "168")
    reset_settings()
    assert web.client().get("/api/v1/me", headers={"Authorization": f"Bearer {week}"}).is_success


def test_an_identity_provider_without_an_issuer_stops_startup(
    hub_env: str, idp_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from integration_hub.cli import app
    from integration_hub.services.errors import InvalidInput
    from integration_hub.settings import reset_settings
    from integration_hub.web.app import create_app

    monkeypatch.delenv("INTEGRATIONS_IDP_ISSUER")
    reset_settings()
    with pytest.raises(InvalidInput) as refused:
        create_app()
    assert "INTEGRATIONS_IDP_ISSUER is required" in refused.value.problems[0]
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # never listen here
    served = CliRunner().invoke(app, ["web"])
    assert served.exit_code == 2 and "Traceback" not in served.output
    assert "INTEGRATIONS_IDP_ISSUER is required" in served.output


# -- sign-in throttling under concurrency ------------------------------------------------------
RACERS = 30


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at 64 MiB in 30 threads at once would need 2 GB; the races are about counting."""
    from argon2 import PasswordHasher

    from integration_hub.services import accounts

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", cheap)


def _race(attempts: list[tuple[str, str, str]]) -> list[Any]:
    """Every (email, password, client) signs in at the same moment, each in its own thread;
    returns what each got: a SignedIn or the exception."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from integration_hub.services import accounts

    start = threading.Barrier(len(attempts))

    def attempt(email: str, password: str, client: str) -> Any:
        start.wait()
        try:
            return accounts.sign_in(email, password, client=client)
        except Exception as exc:  # every outcome is collected, none is lost
            return exc

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(lambda args: attempt(*args), attempts))


def _throttle_counts() -> dict[str, int]:
    from sqlmodel import select

    from integration_hub.db import hub_session
    from integration_hub.models import SignInThrottle

    with hub_session() as session:
        return {row.key: row.failures for row in session.exec(select(SignInThrottle))}


def _kinds(outcomes: list[Any]) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(type(outcome).__name__ for outcome in outcomes))


def test_thirty_concurrent_wrong_passwords_are_counted_exactly(
    hub_env: str, cheap_hashes: None
) -> None:
    from integration_hub.services import accounts
    from integration_hub.services.configuration import Actor
    from integration_hub.services.errors import TooManyAttempts

    email = "race@hub.test"
    accounts.add_user(email, PASSWORD, role="operator", actor=Actor("test"))
    outcomes = _race([(email, f"wrong guess {i:04}", "203.0.113.9") for i in range(RACERS)])
    # Exactly five guesses reach the password check; the other 25 are refused before it.
    assert _kinds(outcomes) == {"Unauthorized": 5, "TooManyAttempts": RACERS - 5}
    counts = _throttle_counts()
    assert counts[f"pair:203.0.113.9 {email}"] == RACERS  # every attempt counted, none lost
    assert counts[f"account:{email}"] == 5  # only what the pair let through
    assert counts["client:203.0.113.9"] == 5
    with pytest.raises(TooManyAttempts, match="from your address"):
        accounts.sign_in(email, PASSWORD, client="203.0.113.9")
    # One address cannot lock the owner out elsewhere.
    assert accounts.sign_in(email, PASSWORD, client="198.51.100.7").actor.name == email


def test_wrong_passwords_from_many_addresses_pause_the_account_for_five_minutes(
    hub_env: str, cheap_hashes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from integration_hub.models import utcnow
    from integration_hub.services import accounts
    from integration_hub.services.configuration import Actor
    from integration_hub.services.errors import TooManyAttempts

    email = "target@hub.test"
    accounts.add_user(email, PASSWORD, role="operator", actor=Actor("test"))
    clients = [f"203.0.113.{i // 5}" for i in range(RACERS)]  # six addresses, five guesses each
    outcomes = _race([(email, f"wrong guess {i:04}", c) for i, c in enumerate(clients)])
    assert _kinds(outcomes) == {"Unauthorized": 20, "TooManyAttempts": 10}
    counts = _throttle_counts()
    assert counts[f"account:{email}"] == RACERS
    # The ten refused by the account's counter never reached a password: their pairs got them back.
    assert sum(n for key, n in counts.items() if key.startswith("pair:")) == 20
    with pytest.raises(TooManyAttempts, match="paused for everyone") as paused:
        accounts.sign_in(email, PASSWORD, client="198.51.100.7")
    assert 0 < paused.value.retry_after_s <= 300
    later = utcnow() + timedelta(minutes=5, seconds=1)
    monkeypatch.setattr(accounts, "utcnow", lambda: later)
    assert accounts.sign_in(email, PASSWORD, client="198.51.100.7").actor.name == email


def test_x_forwarded_for_counts_only_from_a_named_proxy(
    web: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over real HTTP on 127.0.0.1: uvicorn must not believe the header on its own either."""
    import httpx

    from integration_hub.sandbox.server import start_server
    from integration_hub.settings import reset_settings

    def attempts(server_url: str) -> list[int]:
        with httpx.Client(base_url=server_url) as client:
            return [
                client.post(
                    "/sign-in",
                    data={"email": ADMIN_A, "password": "wrong"},
                    headers={"X-Forwarded-For": f"192.0.2.{i}"},
                ).status_code
                for i in range(7)
            ]

    with start_server(web.app) as server:
        assert attempts(server.url) == [401] * 5 + [429] * 2  # a new header each time: no help
        monkeypatch.setenv("INTEGRATIONS_WEB_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
        reset_settings()
        assert attempts(server.url) == [401] * 7  # each forwarded client is counted on its own


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", "192.0.2.1", "192.0.2.1"),
        ("127.0.0.1", "192.0.2.66, 192.0.2.1", "192.0.2.1"),  # the client wrote the first
        ("127.0.0.1", "192.0.2.1, 10.1.2.3", "192.0.2.1"),  # through two proxies of ours
        ("127.0.0.1", "not an address", "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        ("198.51.100.4", "192.0.2.1", "198.51.100.4"),  # not a proxy of ours: header ignored
    ],
)
def test_the_client_behind_trusted_proxies(
    peer: str, forwarded: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.requests import Request

    from integration_hub.settings import reset_settings
    from integration_hub.web.security import client_address

    monkeypatch.setenv("INTEGRATIONS_WEB_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")
    reset_settings()
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    request = Request({"type": "http", "client": (peer, 5000), "headers": headers})
    try:
        assert client_address(request) == expected
    finally:
        monkeypatch.delenv("INTEGRATIONS_WEB_TRUSTED_PROXIES")
        reset_settings()


# -- passwords ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short phrase", None),
        ("eleven char", "at least 12 characters"),
        ("x" * 257, "at most 256 characters"),
        ("Passord2024!", "most common passwords"),
        ("sommer2024!!", "most common passwords"),
        ("P@ssw0rd12345", "most common passwords"),
        ("qwertyuiopå1", "most common passwords"),
        ("kari.nordmann@hlf.test", "e-mail address"),
        ("kari.nordmann 1985", "e-mail address"),
        ("aaaaaaaaaaaaaa", "repeated or sequential"),
        ("abcdefghijklmn", "repeated or sequential"),
        ("98765432109876", "repeated or sequential"),
        ("blue whale harbour morning", None),
    ],
)
def test_password_rules(password: str, problem: str | None) -> None:
    from integration_hub.services.passwords import password_problems

    found = password_problems(password, "Kari.Nordmann@HLF.test")
    if problem is None:
        assert found == []
    else:
        assert any(problem in text for text in found), found


def test_the_common_password_list_is_vendored_and_lower_case() -> None:
    from integration_hub.services.passwords import common_passwords

    listed = common_passwords()
    assert len(listed) > 1000 and {"123456", "passord", "qwerty", "sommer2024"} <= listed
    assert all(entry == entry.casefold() for entry in listed)


# -- accounts at the command line and in the web app -------------------------------------------
def test_users_disable_reset_password_and_revoke_sessions(hub_env: str) -> None:
    from typer.testing import CliRunner

    from integration_hub.cli import app
    from integration_hub.services import accounts
    from integration_hub.services.configuration import Actor
    from integration_hub.services.errors import Unauthorized

    runner = CliRunner()
    email, new = "ops@hub.test", "a brand new passphrase"
    accounts.add_user(email, PASSWORD, role="operator", actor=Actor("test"))
    tokens = [accounts.sign_in(email, PASSWORD, client="test").token for _ in range(2)]

    weak = runner.invoke(app, ["users", "reset-password", email], input="passord12345\n")
    assert weak.exit_code == 2 and "most common passwords" in weak.output
    reset = runner.invoke(
        app, ["users", "reset-password", email], env={"INTEGRATIONS_NEW_PASSWORD": new}
    )
    assert reset.exit_code == 0, reset.output
    assert "ended 2 session(s)" in reset.output and new not in reset.output
    assert all(accounts.session_for(token) is None for token in tokens)
    with pytest.raises(Unauthorized):
        accounts.sign_in(email, PASSWORD, client="test")

    kept = accounts.sign_in(email, new, client="test").token
    revoked = runner.invoke(app, ["users", "revoke-sessions", email])
    assert revoked.exit_code == 0 and "Ended 1 session(s)" in revoked.output
    assert accounts.session_for(kept) is None

    kept = accounts.sign_in(email, new, client="test").token
    disabled = runner.invoke(app, ["users", "disable", email])
    assert disabled.exit_code == 0 and "ended 1 session(s)" in disabled.output
    assert accounts.session_for(kept) is None
    assert "(disabled)" in runner.invoke(app, ["users", "list"]).output
    with pytest.raises(Unauthorized):
        accounts.sign_in(email, new, client="test")
    assert runner.invoke(app, ["users", "enable", email]).exit_code == 0
    assert accounts.sign_in(email, new, client="test").actor.name == email

    unknown = runner.invoke(app, ["users", "disable", "nobody@hub.test"])
    assert unknown.exit_code == 2 and "there is no account for nobody@hub.test" in unknown.output


def test_an_admin_changes_their_own_password(web: Any) -> None:
    from integration_hub.services.accounts import session_for

    client, elsewhere = web.client(ADMIN_A), web.client(ADMIN_A)
    dashboard = client.get(f"/orgs/{ORG_A}")
    assert 'href="/account/password"' in dashboard.text  # linked from the header
    page = client.get("/account/password")
    assert page.status_code == 200 and "Bytt passordet ditt" in page.text
    csrf = hidden_csrf(page.text)
    new = "a brand new passphrase"
    form = {"current_password": PASSWORD, "new_password": new, "new_password_again": new}

    assert client.post("/account/password", data=form).status_code == 403  # no CSRF token
    wrong = client.post(
        "/account/password", data={**form, "current_password": "not it", "csrf_token": csrf}
    )
    assert wrong.status_code == 422 and "det nåværende passordet er feil" in wrong.text
    weak_form = {**form, "new_password": "passord12345", "new_password_again": "x"}
    weak = client.post("/account/password", data={**weak_form, "csrf_token": csrf})
    assert weak.status_code == 422
    assert "vanligste passordene" in weak.text and "de to nye passordene er ikke like" in weak.text
    assert new not in weak.text and PASSWORD not in weak.text  # never echoed back

    changed = client.post("/account/password", data={**form, "csrf_token": csrf})
    assert changed.status_code == 303
    assert changed.headers["location"] == "/account/password?changed=1"
    assert "andre nettlesere ble logget ut" in client.get(changed.headers["location"]).text
    assert session_for(client.cookies.get("ih_session")) is not None  # this browser stays
    assert session_for(elsewhere.cookies.get("ih_session")) is None  # every other one ends
    fresh = web.client()
    assert fresh.post("/sign-in", data={"email": ADMIN_A, "password": PASSWORD}).status_code == 401
    assert fresh.post("/sign-in", data={"email": ADMIN_A, "password": new}).status_code == 303
