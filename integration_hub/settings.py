"""Configuration from the environment (prefix ``INTEGRATIONS_``), with embedded defaults.

Defaults keep everything under ``var/`` so a fresh clone runs with SQLite and a local key file.
"""

from __future__ import annotations

import json
import tomllib
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_var_dir() -> Path:
    return PROJECT_ROOT / "var"


class TargetSettings(BaseModel):
    """An operator's settings for one integration type's target, e.g.
    ``INTEGRATIONS_TARGETS__XLEDGER__SETTLE_SECONDS=600``. Unset fields take the adapter's
    default (a class variable of the same name on the adapter, where the reason is written)."""

    model_config = ConfigDict(extra="forbid")

    settle_seconds: float | None = Field(default=None, ge=0)
    """How long a request whose answer was lost is left alone before the hub looks its records
    up at the target: a commit can land after the client gave up."""
    read_timeout_seconds: float | None = Field(default=None, gt=0)
    """How long the hub waits for an answer from the target."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INTEGRATIONS_", extra="ignore", env_nested_delimiter="__"
    )

    var_dir: Path = Field(default_factory=default_var_dir)
    database_url: str | None = None
    """The hub's own database. Default: SQLite file ``var/hub.db``."""
    app_database_url: str | None = None
    """The volunteer app's database that claims and activities are read from. Default: same."""
    vault_key_file: Path | None = None
    """Key ring file written by ``integrations vault init``. Default: ``var/vault.key``."""
    vault_keys: str | None = None
    """Alternative to the key file: ``"1:<base64>,2:<base64>"``, the highest version primary."""
    prefect_ui_url: str | None = None
    public_base_url: str | None = None
    """The admin web app's address as people reach it (``https://hub.example.org``): alerts
    link to an integration's health page there. Unset: alerts carry no such link, as the hub
    cannot know the address a reverse proxy gives it."""
    web_host: str = "127.0.0.1"
    web_port: int = 8300
    web_secure_cookies: bool = True
    """Session cookies only over HTTPS (browsers treat http://127.0.0.1 and localhost as secure)."""
    web_session_hours: int = 8
    web_max_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    """The largest request body the web app reads, checked before sign-in (413 above it). A
    mapping upload (at most 256 KiB) fits well within the default 1 MiB."""
    idp_public_key: str | None = None
    """PEM public key of the volunteer app's identity provider, for bearer tokens on the API."""
    idp_public_key_file: Path | None = None
    idp_issuer: str | None = None
    idp_audience: str = "integration-hub"
    # -- sign-in hardening: whose X-Forwarded-For is believed, how long a bearer token may live
    web_trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    """Reverse proxies (addresses or networks, comma-separated) whose ``X-Forwarded-For`` names
    the client. Anyone can send that header, so by default it is ignored and the client is the
    socket's peer; otherwise one client could pose as many and dodge sign-in throttling."""
    request_retry_attempts: int = Field(default=5, ge=1)
    """How often one request refused before processing (no connection, 5xx on a read, 429) is
    sent before the run treats the target as unreachable."""
    request_retry_base_delay_seconds: float = Field(default=0.5, ge=0)
    """The first wait between those tries (doubling, with jitter, at most 30 s; a target's
    Retry-After wins)."""
    run_retry_seconds: float = Field(default=1800, ge=0)
    """How long a scheduled or backfill run keeps trying a target it cannot reach (connect
    errors, 5xx, throttling beyond a request's own retries) before it fails with that reason
    and an alert. No target publishes its outages' length: 30 minutes is our assumption, long
    against a restart or a failover at 02:00, short against the next night."""
    manual_run_retry_seconds: float = Field(default=60, ge=0)
    """The same for a run a person started and watches (CLI, web): they can start it again."""
    run_retry_first_wait_seconds: float = Field(default=15, ge=0)
    """The first wait before trying an unreachable target again; each next wait doubles (at
    most 5 minutes)."""
    prefect_server_idle_seconds: float = Field(default=300, ge=0)
    """How long the CLI's shared local Prefect server stays up after its last command ended
    (integration_hub/local_prefect.py): the next command within it starts in a second."""
    idp_max_token_hours: float = Field(default=24, gt=0)
    """Bearer tokens whose ``exp`` is further ahead than this are refused: the hub cannot revoke
    a token, so a leaked long-lived one would work for that long."""

    @field_validator("web_trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    allowed_hosts: str | None = None
    """Hosts, addresses or networks (comma-separated: ``127.0.0.1,10.0.0.0/8,erp.example``)
    the hub may send to besides each service's own hosts; added to those the operator stored
    in ``var/operator.toml`` (``integrations endpoints allow``). Never set by an organisation."""
    targets: dict[str, TargetSettings] = Field(default_factory=dict)
    """Per integration type (its key, lower case): see :class:`TargetSettings`."""

    def target(self, type_key: str) -> TargetSettings:
        return self.targets.get(type_key.lower(), TargetSettings())

    @property
    def operator_file(self) -> Path:
        """The operator's own settings under ``var/`` (read by every command)."""
        return self.var_dir / "operator.toml"

    @property
    def env_allowed_hosts(self) -> list[str]:
        """The entries of ``INTEGRATIONS_ALLOWED_HOSTS``."""
        return [e.strip() for e in (self.allowed_hosts or "").split(",") if e.strip()]

    @cached_property
    def stored_allowed_hosts(self) -> list[str]:
        """The entries of ``var/operator.toml``, read once per settings object: the allow-list
        is consulted on every new connection, and :func:`write_operator_file` resets the
        settings, so a change made by this process is seen at once."""
        return read_operator_file(self.operator_file).get("allowed_hosts", [])

    def allowed_host_entries(self) -> list[str]:
        return self.env_allowed_hosts + self.stored_allowed_hosts

    @property
    def hub_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'hub.db'}"

    @property
    def app_url(self) -> str:
        return self.app_database_url or self.hub_url

    @property
    def key_file(self) -> Path:
        return self.vault_key_file or self.var_dir / "vault.key"


def read_operator_file(path: Path) -> dict[str, list[str]]:
    """``allowed_hosts = ["127.0.0.1"]`` and the like; a missing file is no settings."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path} is not readable TOML: {exc}") from None
    hosts = data.get("allowed_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ValueError(f"{path}: allowed_hosts must be a list of strings")
    return {"allowed_hosts": hosts}


def write_operator_file(path: Path, allowed_hosts: list[str]) -> None:
    """Write the operator file atomically (0600: it says what the hub may reach)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# Written by `integrations endpoints`; hosts the hub may send to besides each\n"
    body += "# service's own. Only operators edit this file.\n"
    body += "allowed_hosts = [" + ", ".join(json.dumps(h) for h in allowed_hosts) + "]\n"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(body, encoding="utf-8")
    temporary.chmod(0o600)
    temporary.replace(path)
    reset_settings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the demo change the environment)."""
    get_settings.cache_clear()
