"""Configuration from the environment (prefix ``INTEGRATIONS_``), with embedded defaults.

Defaults keep everything under ``var/`` so a fresh clone runs with SQLite and a local key file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    web_host: str = "127.0.0.1"
    web_port: int = 8300
    web_secure_cookies: bool = True
    """Session cookies only over HTTPS (browsers treat http://127.0.0.1 and localhost as secure)."""
    web_session_hours: int = 8
    idp_public_key: str | None = None
    """PEM public key of the volunteer app's identity provider, for bearer tokens on the API."""
    idp_public_key_file: Path | None = None
    idp_issuer: str | None = None
    idp_audience: str = "integration-hub"
    targets: dict[str, TargetSettings] = Field(default_factory=dict)
    """Per integration type (its key, lower case): see :class:`TargetSettings`."""

    def target(self, type_key: str) -> TargetSettings:
        return self.targets.get(type_key.lower(), TargetSettings())

    @property
    def hub_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'hub.db'}"

    @property
    def app_url(self) -> str:
        return self.app_database_url or self.hub_url

    @property
    def key_file(self) -> Path:
        return self.vault_key_file or self.var_dir / "vault.key"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the demo change the environment)."""
    get_settings.cache_clear()
