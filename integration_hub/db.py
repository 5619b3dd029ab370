"""Engines, sessions and migrations for the hub database and the volunteer app's database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from integration_hub.private_files import create_private_file
from integration_hub.settings import get_settings

Side = Literal["hub", "app"]
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseError(RuntimeError):
    """A database that cannot be reached or is not migrated; the message says what to do."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_ENGINES: dict[str, Engine] = {}


def engine_for(url: str) -> Engine:
    """One pooled engine per URL, made on first use."""
    if url not in _ENGINES:
        _ENGINES[url] = _create(url)
    return _ENGINES[url]


def _create(url: str) -> Engine:
    """SQLite gets WAL and a busy timeout so concurrent runs wait instead of failing, and a
    new database file is created 0600 in a 0700 directory (it holds the hub's audit log and
    run history), whatever the process's umask."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            create_private_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def hub_engine() -> Engine:
    return engine_for(get_settings().hub_url)


def app_engine() -> Engine:
    return engine_for(get_settings().app_url)


@contextmanager
def hub_session() -> Iterator[Session]:
    """A session on the hub database that commits on success and rolls back on error."""
    with Session(hub_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def app_session() -> Iterator[Session]:
    with Session(app_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def dispose_engines() -> None:
    """Close every pooled connection (tests switch databases; the demo exits cleanly)."""
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        engine.dispose()


def _alembic_config(url: str, side: Side):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option(
        "version_locations",
        f"{MIGRATIONS_DIR / 'versions' / 'hub'} {MIGRATIONS_DIR / 'versions' / 'app'}",
    )
    config.set_main_option("path_separator", "space")
    config.attributes["url"] = url
    config.attributes["side"] = side
    return config


def upgrade(side: Side, url: str | None = None) -> str:
    """Migrate one side's schema to the newest revision; returns the URL without password."""
    from alembic import command

    settings = get_settings()
    target = url or (settings.hub_url if side == "hub" else settings.app_url)
    command.upgrade(_alembic_config(target, side), f"{side}@head")
    return make_url(target).render_as_string(hide_password=True)
