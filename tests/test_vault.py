"""The credential vault: encryption binding, masks, key ring sources, rotation, audit, no leaks."""

from __future__ import annotations

import json
import os
import pickle
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, create_engine, select

import integration_hub.models  # noqa: F401  (registers every table on SQLModel.metadata)
from integration_hub.models.hub import AuditEntry, Credential, Integration
from integration_hub.settings import Settings
from integration_hub.vault import (
    BULLET,
    CredentialNotSet,
    CredentialVault,
    KeyRing,
    VaultDecryptError,
    VaultError,
    VaultKeyExists,
    VaultKeyInvalid,
    VaultKeyMissing,
    add_key_version,
    encode_key,
    generate_key,
    init_key_file,
    is_mask,
    load_key_ring,
    mask,
    redact,
    rotate_key_file,
)

SECRET = "xl-token-0123456789abcdef"  # 25 characters: long enough for a hint ("cdef")
SECRET_MIDDLE = SECRET[3:-4]


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide the key source themselves."""
    monkeypatch.delenv("INTEGRATIONS_VAULT_KEYS", raising=False)
    monkeypatch.delenv("INTEGRATIONS_VAULT_KEY_FILE", raising=False)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine("sqlite:///" + str(tmp_path / "t.db"))
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine):  # type: ignore[no-untyped-def]
    """Like ``hub_session``: commits on success, rolls back on error."""

    @contextmanager
    def factory() -> Iterator[Session]:
        with Session(engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    return factory


@pytest.fixture
def integration_id(session_factory) -> int:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        integration = Integration(organisation_id=1, type_key="xledger")
        session.add(integration)
        session.flush()
        assert integration.id is not None
        return integration.id


def _add_integration(session_factory, organisation_id: int, type_key: str) -> int:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        integration = Integration(organisation_id=organisation_id, type_key=type_key)
        session.add(integration)
        session.flush()
        assert integration.id is not None
        return integration.id


@pytest.fixture
def vault() -> CredentialVault:
    return CredentialVault(KeyRing.generate())


def _store(vault, session_factory, integration_id, field="api_token", value=SECRET) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        vault.store(
            session,
            organisation_id=1,
            integration_id=integration_id,
            field=field,
            plaintext=value,
            actor="admin@hlf",
            endpoint=None,
        )


def _reveal(vault, session_factory, integration_id, field="api_token", org=1) -> str:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        return vault.reveal(
            session,
            organisation_id=org,
            integration_id=integration_id,
            field=field,
            purpose="test",
        )


def _row(session: Session, integration_id: int, field: str = "api_token") -> Credential:
    row = session.exec(
        select(Credential).where(
            Credential.integration_id == integration_id, Credential.field == field
        )
    ).one()
    return row


def _audit(session_factory) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        return list(session.exec(select(AuditEntry).order_by(AuditEntry.id)).all())


def _settings(tmp_path: Path, vault_keys: str | None = None) -> Settings:
    return Settings(var_dir=tmp_path, vault_key_file=tmp_path / "vault.key", vault_keys=vault_keys)


# -- encryption ---------------------------------------------------------------------------------


def test_round_trip(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    assert _reveal(vault, session_factory, integration_id) == SECRET
    with session_factory() as session:
        row = _row(session, integration_id)
        assert row.key_version == 1
        assert len(row.nonce) == 12
        assert row.hint == "cdef"
        assert SECRET.encode() not in row.ciphertext


def test_round_trip_unicode_and_secretstr(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        vault.store(
            session,
            organisation_id=1,
            integration_id=integration_id,
            field="client_secret",
            plaintext=SecretStr("blåbærsyltetøy-æøå-🔑-42"),
            actor="admin",
            endpoint=None,
        )
    assert (
        _reveal(vault, session_factory, integration_id, "client_secret")
        == "blåbærsyltetøy-æøå-🔑-42"
    )


def test_same_plaintext_encrypts_differently(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        first = _row(session, integration_id)
        nonce1, ct1 = first.nonce, first.ciphertext
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        second = _row(session, integration_id)
        assert second.nonce != nonce1
        assert second.ciphertext != ct1
    assert _reveal(vault, session_factory, integration_id) == SECRET


@pytest.mark.parametrize("column", ["ciphertext", "nonce"])
def test_tampering_fails(vault, session_factory, integration_id, column) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id)
        data = bytearray(getattr(row, column))
        data[0] ^= 0x01
        setattr(row, column, bytes(data))
        session.add(row)
    with pytest.raises(VaultDecryptError) as caught:
        _reveal(vault, session_factory, integration_id)
    assert "api_token" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_truncated_nonce_fails(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id)
        row.nonce = row.nonce[:8]
        session.add(row)
    with pytest.raises(VaultDecryptError):
        _reveal(vault, session_factory, integration_id)


def test_row_moved_to_another_organisation_fails(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id)
        row.organisation_id = 2
        session.add(row)
    with pytest.raises(VaultDecryptError):
        _reveal(vault, session_factory, integration_id, org=2)
    # ... and the original organisation no longer finds it either.
    with pytest.raises(CredentialNotSet):
        _reveal(vault, session_factory, integration_id, org=1)


def test_row_copied_to_another_integration_fails(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    other = _add_integration(session_factory, 1, "dynamics")
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id)
        session.add(
            Credential(
                organisation_id=1,
                integration_id=other,
                field="api_token",
                key_version=row.key_version,
                nonce=row.nonce,
                ciphertext=row.ciphertext,
                hint=row.hint,
            )
        )
    with pytest.raises(VaultDecryptError):
        _reveal(vault, session_factory, other)
    assert _reveal(vault, session_factory, integration_id) == SECRET


def test_row_copied_to_another_field_fails(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id)
        session.add(
            Credential(
                organisation_id=1,
                integration_id=integration_id,
                field="client_secret",
                key_version=row.key_version,
                nonce=row.nonce,
                ciphertext=row.ciphertext,
            )
        )
    with pytest.raises(VaultDecryptError):
        _reveal(vault, session_factory, integration_id, "client_secret")


def test_editing_key_version_fails(session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    # The same key under two versions: only the associated data can tell them apart.
    vault = CredentialVault(KeyRing({1: key, 2: key}))
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id)
        assert row.key_version == 2
        row.key_version = 1
        session.add(row)
    with pytest.raises(VaultDecryptError):
        _reveal(vault, session_factory, integration_id)

    with session_factory() as session:
        row = _row(session, integration_id)
        row.key_version = 9
        session.add(row)
    with pytest.raises(VaultDecryptError, match="key version 9, which is not in the key ring"):
        _reveal(vault, session_factory, integration_id)


def test_wrong_key_ring_fails(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with pytest.raises(VaultDecryptError, match="does not match or the row was altered"):
        _reveal(CredentialVault(KeyRing.generate()), session_factory, integration_id)


def test_plaintext_never_in_sqlite_file(  # type: ignore[no-untyped-def]
    tmp_path, vault, session_factory, engine, integration_id
) -> None:
    _store(vault, session_factory, integration_id)
    _store(vault, session_factory, integration_id, field="client_secret", value=SECRET + "-2")
    _reveal(vault, session_factory, integration_id)
    engine.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("t.db*"))
    assert b"api_token" in raw  # the file really is the database
    assert SECRET.encode() not in raw
    assert SECRET_MIDDLE.encode() not in raw
    assert SECRET.encode("utf-16-le") not in raw


# -- masks ----------------------------------------------------------------------------------------


def test_masked_shows_hint_only_and_never_decrypts(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    _store(vault, session_factory, integration_id, field="password", value="short-pw")
    wrong = CredentialVault(KeyRing.generate())
    with session_factory() as session:
        masks = wrong.masked(session, integration_id=integration_id)
    assert masks == {"api_token": BULLET * 6 + "cdef", "password": BULLET * 8}
    assert all(SECRET_MIDDLE not in m for m in masks.values())
    assert all(is_mask(m) for m in masks.values())


def test_hint_needs_twelve_characters(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id, value="abcdefghijk")  # 11
    with session_factory() as session:
        assert _row(session, integration_id).hint == ""
    _store(vault, session_factory, integration_id, value="abcdefghijkl")  # 12
    with session_factory() as session:
        assert _row(session, integration_id).hint == "ijkl"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("••••••3f9a", True),
        ("••••••••", True),
        ("•", True),
        (" ••••••3f9a ", True),
        ("••••••ab•c", True),
        ("••••••3f9a1", False),
        ("3f9a", False),
        ("", False),
        ("new-secret-value", False),
        ("abc••••", False),
    ],
)
def test_is_mask(value: str, expected: bool) -> None:
    assert is_mask(value) is expected


def test_mask_format() -> None:
    assert mask("3f9a") == "••••••3f9a"
    assert mask("") == "••••••••"


def test_store_refuses_a_mask_or_empty_value(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    for bad in (mask("cdef"), mask(""), ""):
        with pytest.raises(ValueError), session_factory() as session:
            vault.store(
                session,
                organisation_id=1,
                integration_id=integration_id,
                field="api_token",
                plaintext=bad,
                actor="admin",
                endpoint=None,
            )
    assert _reveal(vault, session_factory, integration_id) == SECRET


def test_store_checks_the_integration_belongs_to_the_organisation(  # type: ignore[no-untyped-def]
    vault, session_factory, integration_id
) -> None:
    belongs = "does not belong to organisation 2"
    with pytest.raises(VaultError, match=belongs), session_factory() as s:
        vault.store(
            s,
            organisation_id=2,
            integration_id=integration_id,
            field="api_token",
            plaintext=SECRET,
            actor="admin",
            endpoint=None,
        )
    with pytest.raises(VaultError, match="does not exist"), session_factory() as s:
        vault.store(
            s,
            organisation_id=1,
            integration_id=999,
            field="x",
            plaintext=SECRET,
            actor="a",
            endpoint=None,
        )
    with pytest.raises(ValueError), session_factory() as s:
        vault.store(
            s,
            organisation_id=1,
            integration_id=integration_id,
            field="api|token",
            plaintext=SECRET,
            actor="a",
            endpoint=None,
        )


def test_redact() -> None:
    text = f"401 for token {SECRET} and pw abc and again {SECRET}"
    assert redact(text, [SECRET, "abc", None]) == (
        "401 for token [REDACTED] and pw abc and again [REDACTED]"
    )
    assert redact("a=abcd b=abcdefgh", ["abcd", SecretStr("abcdefgh")]) == (
        "a=[REDACTED] b=[REDACTED]"
    )
    assert redact("nothing", []) == "nothing"


# -- reveal, delete, audit ------------------------------------------------------------------------


def test_reveal_missing_field(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CredentialNotSet, match="settings page"):
        _reveal(vault, session_factory, integration_id)
    assert isinstance(CredentialNotSet(field="f", integration_id=1, organisation_id=1), VaultError)


def test_reveal_needs_a_purpose(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with pytest.raises(ValueError), session_factory() as session:
        vault.reveal(
            session, organisation_id=1, integration_id=integration_id, field="api_token", purpose=""
        )


def test_reveal_all(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    _store(vault, session_factory, integration_id, field="client_secret", value="other-secret")
    with session_factory() as session:
        values = vault.reveal_all(
            session, organisation_id=1, integration_id=integration_id, purpose="nightly export"
        )
    assert values == {"api_token": SECRET, "client_secret": "other-secret"}
    used = [e for e in _audit(session_factory) if e.action == "credential.used"]
    assert sorted(e.details["field"] for e in used) == ["api_token", "client_secret"]
    assert all(e.details["purpose"] == "nightly export" for e in used)


def test_delete(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        assert vault.delete(session, integration_id=integration_id, field="api_token", actor="a")
    with session_factory() as session:
        gone = vault.delete(session, integration_id=integration_id, field="api_token", actor="a")
        assert not gone
        assert vault.masked(session, integration_id=integration_id) == {}
    assert [e.action for e in _audit(session_factory)][-1] == "credential.deleted"


def test_audit_entries_without_secrets(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    _store(vault, session_factory, integration_id)
    _store(vault, session_factory, integration_id, value=SECRET + "-new")
    _reveal(vault, session_factory, integration_id)
    rotated = CredentialVault(KeyRing({1: vault.ring.key(1), 2: generate_key()}))
    rotated.rotate(session_factory, actor="operator")

    entries = _audit(session_factory)
    assert [e.action for e in entries] == [
        "credential.set",
        "credential.replaced",
        "credential.used",
        "vault.rotated",
    ]
    assert entries[0].details == {"field": "api_token"}
    assert entries[0].actor == "admin@hlf"
    assert entries[0].organisation_id == 1 and entries[0].integration_id == integration_id
    assert entries[2].details == {"field": "api_token", "purpose": "test"}
    assert entries[3].details["rotated"] == 1
    dumped = json.dumps([e.model_dump(mode="json") for e in entries])
    assert SECRET_MIDDLE not in dumped
    assert encode_key(vault.ring.key(1)) not in dumped


# -- rotation -------------------------------------------------------------------------------------


def _three_rows(vault, session_factory, integration_id) -> dict[str, str]:  # type: ignore[no-untyped-def]
    values = {f"field_{i}": f"secret-value-number-{i}" for i in range(3)}
    for name, value in values.items():
        _store(vault, session_factory, integration_id, field=name, value=value)
    return values


def test_rotation_reencrypts_under_new_primary(vault, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    values = _three_rows(vault, session_factory, integration_id)
    with session_factory() as session:
        old = {row.field: row.ciphertext for row in session.exec(select(Credential)).all()}
    ring2 = KeyRing({1: vault.ring.key(1), 2: generate_key()})
    vault2 = CredentialVault(ring2)

    report = vault2.rotate(session_factory, actor="operator", batch_size=2)
    assert (report.primary_version, report.rotated, report.already_current) == (2, 3, 0)
    assert report.complete
    with session_factory() as session:
        rows = session.exec(select(Credential)).all()
        assert {row.key_version for row in rows} == {2}
        assert all(row.ciphertext != old[row.field] for row in rows)
    for name, value in values.items():
        assert _reveal(vault2, session_factory, integration_id, name) == value
    # The new primary is really needed now: the old ring alone cannot read the rows.
    with pytest.raises(VaultDecryptError):
        _reveal(vault, session_factory, integration_id, "field_0")

    again = vault2.rotate(session_factory, actor="operator")
    assert (again.rotated, again.already_current) == (0, 3)


def test_interrupted_rotation_can_be_rerun(  # type: ignore[no-untyped-def]
    vault, session_factory, integration_id, monkeypatch
) -> None:
    values = _three_rows(vault, session_factory, integration_id)
    vault2 = CredentialVault(KeyRing({1: vault.ring.key(1), 2: generate_key()}))
    real_batch = CredentialVault._rotate_batch
    calls = {"n": 0}

    def crashing_batch(self, session, after_id, batch_size):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real_batch(self, session, after_id, batch_size)

    monkeypatch.setattr(CredentialVault, "_rotate_batch", crashing_batch)
    with pytest.raises(RuntimeError, match="power cut"):
        vault2.rotate(session_factory, actor="operator", batch_size=1)
    monkeypatch.setattr(CredentialVault, "_rotate_batch", real_batch)

    with session_factory() as session:
        versions = sorted(row.key_version for row in session.exec(select(Credential)).all())
    assert versions == [1, 1, 2]  # the first batch committed, the rest untouched
    for name, value in values.items():  # every row still decrypts mid-rotation
        assert _reveal(vault2, session_factory, integration_id, name) == value
    assert not any(e.action == "vault.rotated" for e in _audit(session_factory))

    report = vault2.rotate(session_factory, actor="operator", batch_size=1)
    assert (report.rotated, report.already_current) == (2, 1)
    with session_factory() as session:
        assert {row.key_version for row in session.exec(select(Credential)).all()} == {2}
    for name, value in values.items():
        assert _reveal(vault2, session_factory, integration_id, name) == value


def test_rotation_skips_and_reports_undecryptable_rows(  # type: ignore[no-untyped-def]
    vault, session_factory, integration_id
) -> None:
    _three_rows(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id, "field_1")
        row.ciphertext = bytes(len(row.ciphertext))
        session.add(row)
    vault2 = CredentialVault(KeyRing({1: vault.ring.key(1), 2: generate_key()}))
    report = vault2.rotate(session_factory, actor="operator", batch_size=1)
    assert report.rotated == 2
    assert [str(failure) for failure in report.failed] == [
        f"organisation 1, integration {integration_id} (xledger), field field_1, key version 1"
    ]
    assert report.failed[0].reason == "the key ring does not match or the row was altered"
    assert not report.complete


def test_rotate_key_file(tmp_path, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(tmp_path)
    init_key_file(settings.key_file)
    vault = CredentialVault.from_settings(settings)
    values = _three_rows(vault, session_factory, integration_id)

    report = rotate_key_file(settings, session_factory=session_factory, actor="operator")
    assert (report.primary_version, report.rotated) == (2, 3)
    assert load_key_ring(settings).versions == (1, 2)
    # The vault built before the rotation reloads the ring when it meets version 2.
    for name, value in values.items():
        assert _reveal(vault, session_factory, integration_id, name) == value

    report = rotate_key_file(settings, new_key=False, session_factory=session_factory)
    assert (report.primary_version, report.rotated, report.already_current) == (2, 0, 3)


def test_rotate_key_file_with_environment_keys(tmp_path, session_factory, integration_id) -> None:  # type: ignore[no-untyped-def]
    k1, k2 = encode_key(generate_key()), encode_key(generate_key())
    vault = CredentialVault.from_settings(_settings(tmp_path, f"1:{k1}"))
    _store(vault, session_factory, integration_id)

    with pytest.raises(VaultError, match="INTEGRATIONS_VAULT_KEYS") as caught:
        rotate_key_file(_settings(tmp_path, f"1:{k1},2:{k2}"), session_factory=session_factory)
    assert "--no-new-key" in str(caught.value)
    assert k1 not in str(caught.value) and k2 not in str(caught.value)
    assert not (tmp_path / "vault.key").exists()

    settings = _settings(tmp_path, f"1:{k1},2:{k2}")
    report = rotate_key_file(settings, new_key=False, session_factory=session_factory)
    assert (report.primary_version, report.rotated) == (2, 1)
    assert _reveal(CredentialVault.from_settings(settings), session_factory, integration_id) == (
        SECRET
    )


# -- key ring sources -----------------------------------------------------------------------------


def test_init_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "var" / "vault.key"
    old_umask = os.umask(0)  # even a permissive umask must not widen the file
    try:
        assert init_key_file(path) == path
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    ring = KeyRing.from_file(path)
    assert ring.versions == (1,) and ring.primary_version == 1

    with pytest.raises(VaultKeyExists, match="already exists") as caught:
        init_key_file(path)
    assert isinstance(caught.value, VaultError)
    assert path.read_bytes() == before


def test_add_key_version_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "vault.key"
    init_key_file(path)
    first = KeyRing.from_file(path)
    os.chmod(path, 0o644)  # replaced by a fresh 0600 file, whatever the old mode was
    assert add_key_version(path) == 2
    assert add_key_version(path) == 3
    ring = KeyRing.from_file(path)
    assert ring.versions == (1, 2, 3) and ring.primary_version == 3
    assert ring.key(1) == first.key(1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["vault.key"]  # no temp file left
    document = json.loads(path.read_text())
    assert document["primary"] == 3


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(VaultKeyMissing, match="integrations vault init") as caught:
        CredentialVault.from_settings(_settings(tmp_path))
    assert "vault.key" in str(caught.value)
    with pytest.raises(VaultKeyMissing):
        add_key_version(tmp_path / "vault.key")


def test_environment_wins_over_file(tmp_path: Path) -> None:
    init_key_file(tmp_path / "vault.key")
    key = generate_key()
    ring = load_key_ring(_settings(tmp_path, f" 3:{encode_key(key)} , "))
    assert ring.versions == (3,) and ring.key(3) == key
    assert ring.source == "INTEGRATIONS_VAULT_KEYS"
    assert load_key_ring(_settings(tmp_path, "  ")).versions == (1,)  # blank means unset


def test_environment_accepts_standard_and_unpadded_base64(tmp_path: Path) -> None:
    import base64

    key = bytes(range(250, 256)) + bytes(26)  # encodes with '+' or '/' in standard base64
    standard = base64.b64encode(key).decode()
    unpadded = encode_key(key).rstrip("=")
    ring = KeyRing.from_env_value(f"1:{standard},2:{unpadded}")
    assert ring.key(1) == key and ring.key(2) == key


BAD_KEY = encode_key(generate_key())[:-6]  # 28ish bytes: wrong length but looks like a key


@pytest.mark.parametrize(
    "value",
    [
        "nonsense",
        f"x:{encode_key(generate_key())}",
        f"0:{encode_key(generate_key())}",
        f"1:{BAD_KEY}",
        "1:not*base64*at*all!!",
        f"1:{encode_key(generate_key())},1:{encode_key(generate_key())}",
        f"{encode_key(generate_key())}",
        ",",
    ],
)
def test_malformed_environment(tmp_path: Path, value: str) -> None:
    with pytest.raises(VaultKeyInvalid, match="INTEGRATIONS_VAULT_KEYS") as caught:
        CredentialVault.from_settings(_settings(tmp_path, value))
    assert caught.value.__context__ is None
    for part in value.replace(":", ",").split(","):
        if len(part) >= 8:
            assert part not in str(caught.value)


def _key_file_cases() -> list[bytes]:
    good = encode_key(generate_key())
    return [
        b"",
        b"\xff\xfe",
        b"{not json",
        json.dumps([good]).encode(),
        json.dumps({"keys": {}}).encode(),
        json.dumps({"keys": {"1": BAD_KEY}}).encode(),
        json.dumps({"keys": {"one": good}}).encode(),
        json.dumps({"keys": {good: "1"}}).encode(),
        json.dumps({"keys": {"1": 12345}}).encode(),
        json.dumps({"keys": {"1": good, "2": good}, "primary": 1}).encode(),
        json.dumps({"keys": {"1": good}, "primary": "1"}).encode(),
    ]


@pytest.mark.parametrize("content", _key_file_cases())
def test_malformed_key_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "vault.key"
    path.write_bytes(content)
    with pytest.raises(VaultKeyInvalid, match=r"vault\.key") as caught:
        CredentialVault.from_settings(_settings(tmp_path))
    message = str(caught.value)
    for chunk in content.decode("utf-8", "replace").split('"'):
        if len(chunk) >= 16:
            assert chunk not in message
    # Nothing from the file rides along in the exception chain either.
    assert caught.value.__context__ is None


def test_key_ring_requires_32_byte_keys() -> None:
    with pytest.raises(VaultKeyInvalid):
        KeyRing({1: b"short"})
    with pytest.raises(VaultKeyInvalid):
        KeyRing({})


# -- nothing leaks ------------------------------------------------------------------------------


def test_no_secret_in_messages_reprs_or_pickles(  # type: ignore[no-untyped-def]
    vault, session_factory, integration_id, caplog
) -> None:
    key_text = encode_key(vault.ring.key(1))
    _store(vault, session_factory, integration_id)
    with session_factory() as session:
        row = _row(session, integration_id)
        row.ciphertext = row.ciphertext[:-1] + bytes([row.ciphertext[-1] ^ 1])
        ciphertext = row.ciphertext
        session.add(row)
    with pytest.raises(VaultDecryptError) as caught:
        _reveal(vault, session_factory, integration_id)
    texts = [
        str(caught.value),
        repr(caught.value),
        repr(vault),
        str(vault.ring),
        repr(vault.ring),
        caplog.text,
    ]
    assert "api_token" in texts[0] and str(integration_id) in texts[0]
    for text in texts:
        assert SECRET_MIDDLE not in text
        assert key_text not in text
        assert ciphertext.hex() not in text
        assert repr(ciphertext) not in text
    assert caught.value.__cause__ is None
    for obj in (vault, vault.ring):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)
