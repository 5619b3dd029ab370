"""A throwaway PostgreSQL cluster for the test suite.

The hub must behave the same on PostgreSQL (production) as on SQLite (the embedded default), so
the suite runs against a real server: ``initdb`` into a temp dir, trust auth on 127.0.0.1 only,
a free TCP port, durability off for speed, and everything removed again on :meth:`stop` (also at
interpreter exit, and for clusters left behind by a killed run, on the next start).

PostgreSQL refuses to run as root, so when we are root the server runs as the ``postgres`` OS
user (created if missing) and the temp dir is handed to that user.

Usage::

    cluster = PostgresCluster()
    cluster.start()
    url = cluster.create_database("t_abc")  # postgresql+psycopg://postgres@127.0.0.1:PORT/t_abc
    cluster.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

OS_USER = "postgres"
"""The OS user the server runs as when we are root (PostgreSQL will not run as root)."""
SUPERUSER = "postgres"
"""The database superuser; ``initdb -U`` names it the same whoever runs ``initdb``."""
DEFAULT_DATABASE = "integration_hub_test"
DIR_PREFIX = "hub-pgcluster-"
"""Temp dirs are named so a later run can find and remove what a killed run left behind."""
OWNER_FILE = "owner.pid"

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    # Durability buys nothing in a cluster that is deleted after the run.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "logging_collector": "off",
    # Whatever the host's TZ, so results never depend on where the suite runs.
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be run on this machine (no binaries, no user to run them as)."""


class PostgresStartError(RuntimeError):
    """The binaries are there but the cluster did not come up; the message has the log tail."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``.

    Looked for in ``$PG_BIN``, then ``PATH``, then ``/usr/lib/postgresql/*/bin`` (newest major
    version first; Debian's packages put the server binaries there, not on ``PATH``), then
    ``/usr/local/pgsql/bin`` and ``/usr/local/bin``.
    """
    override = os.environ.get("PG_BIN")
    if override:
        if _has_binaries(Path(override)):
            return Path(override)
        raise PostgresUnavailable(f"PG_BIN={override} holds no executable initdb and pg_ctl")
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda p: _version_key(Path(p).parent.name), reverse=True)
    candidates += [Path(p) for p in debian]
    candidates += [Path("/usr/local/pgsql/bin"), Path("/usr/local/bin")]
    for candidate in candidates:
        if _has_binaries(candidate):
            return candidate
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, in "
        "/usr/lib/postgresql/*/bin or /usr/local/bin; install them (Debian: "
        "apt-get install postgresql, or run scripts/ensure-postgres.sh) or set PG_BIN"
    )


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl"))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _ensure_os_user() -> pwd.struct_passwd:
    """The ``postgres`` account, created as a system user if this machine has none."""
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresUnavailable(f"running as root, no {OS_USER!r} user and no useradd")
    result = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir",
         "/nonexistent", "--shell", "/bin/sh", OS_USER],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise PostgresUnavailable(f"could not create the {OS_USER!r} user: {result.stderr.strip()}")
    return pwd.getpwnam(OS_USER)


def _free_port() -> int:
    """A port free right now; the start retries if someone else takes it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _traversable_by_others(path: Path) -> bool:
    """Whether another user (``postgres``) can reach ``path`` through all its parents."""
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _temp_base() -> Path:
    """Where to make the cluster dir: the usual temp dir, or /tmp if postgres cannot reach it."""
    base = Path(tempfile.gettempdir())
    if _running_as_root() and not _traversable_by_others(base):
        return Path("/tmp")
    return base


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class PostgresCluster:
    """One throwaway cluster: start it, make databases in it, stop it (dir and all)."""

    def __init__(self, database: str = DEFAULT_DATABASE, bin_dir: Path | None = None) -> None:
        self.database = _checked_name(database)
        self._bin_dir = bin_dir
        self.host = "127.0.0.1"
        self.port = 0
        self.base_dir: Path | None = None
        self._as_root = _running_as_root()
        self._started = False

    # ---------------------------------------------------------------- public API

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default database made at start."""
        return self.url_for(self.database)

    def url_for(self, name: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{name}"

    def start(self) -> PostgresCluster:
        """``initdb``, configure, ``pg_ctl -w start`` and create the default database.

        Raises :class:`PostgresUnavailable` when PostgreSQL cannot be run here at all, and
        :class:`PostgresStartError` when it can but did not come up.
        """
        if self._started:
            return self
        bin_dir = self._bin_dir or find_pg_bin()
        self._bin_dir = bin_dir
        self._check_runner()
        _reap_stale(_temp_base(), self._as_root)
        self.base_dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=_temp_base()))
        atexit.register(self.stop)
        _install_signal_handlers()
        try:
            (self.base_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
            (self.base_dir / "sock").mkdir()
            if self._as_root:
                user = _ensure_os_user()
                for path in (self.base_dir, self.base_dir / "sock"):
                    os.chown(path, user.pw_uid, user.pw_gid)
            self._initdb()
            self._configure()
            self._start_server()
            self._started = True
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_checked_name(name))))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still holds a connection to it."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(_checked_name(name))
                )
            )

    def stop(self) -> None:
        """Stop the server (however it is doing) and delete the temp dir. Safe to call twice."""
        base, self.base_dir = self.base_dir, None
        self._started = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if base is None:
            return
        _stop_server(base, self._bin_dir, self._as_root)
        shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- internals

    def _admin(self) -> psycopg.Connection[TupleRow]:
        """An autocommit connection to the ``postgres`` database (CREATE DATABASE needs one)."""
        if not self._started:
            raise RuntimeError("the cluster is not running; call start() first")
        return psycopg.connect(
            host=self.host, port=self.port, user=SUPERUSER, dbname="postgres",
            autocommit=True, connect_timeout=10,
        )  # fmt: skip

    def _check_runner(self) -> None:
        if self._as_root and not (shutil.which("runuser") or shutil.which("su")):
            raise PostgresUnavailable("running as root but neither runuser nor su is available")

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary as the cluster's owner, from inside the cluster dir."""
        assert self.base_dir is not None
        return subprocess.run(
            _as_owner(list(cmd), self._as_root), cwd=self.base_dir, capture_output=True,
            text=True, check=False, stdin=subprocess.DEVNULL, timeout=timeout,
        )  # fmt: skip

    def _initdb(self) -> None:
        assert self.base_dir is not None and self._bin_dir is not None
        result = self._run(
            str(self._bin_dir / "initdb"), "-D", str(self.base_dir / "data"), "-U", SUPERUSER,
            "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresStartError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _configure(self) -> None:
        """Trust on 127.0.0.1 and the private socket only; durability off; socket in our dir."""
        assert self.base_dir is not None
        data = self.base_dir / "data"
        lines = [f"{key} = {value}" for key, value in _SETTINGS.items()]
        lines.append(f"unix_socket_directories = '{self.base_dir / 'sock'}'")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# integration hub test cluster\n" + "\n".join(lines) + "\n")
        (data / "pg_hba.conf").write_text(
            "# integration hub test cluster: trust, loopback and private socket only\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
        )

    def _start_server(self) -> None:
        """``pg_ctl -w start`` on a free port, retrying if the port was taken meanwhile."""
        assert self.base_dir is not None and self._bin_dir is not None
        log = self.base_dir / "server.log"
        last = ""
        for _attempt in range(5):
            self.port = _free_port()
            result = self._run(
                str(self._bin_dir / "pg_ctl"), "-D", str(self.base_dir / "data"), "-l", str(log),
                "-o", f"-p {self.port}", "-w", "-t", "60", "start",
            )  # fmt: skip
            if result.returncode == 0:
                return
            last = f"{result.stdout}\n{result.stderr}\n{_tail(log)}"
            if "could not bind" not in last and "already in use" not in last:
                break
        raise PostgresStartError(f"pg_ctl start failed:\n{last}")


def _checked_name(name: str) -> str:
    """Database names become identifiers and URL path parts; keep them plain."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def _as_owner(cmd: list[str], as_root: bool) -> list[str]:
    """Prefix a command so it runs as the ``postgres`` user when we are root."""
    if not as_root:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", OS_USER, "--", *cmd]
    su = shutil.which("su") or "su"
    return [su, "-s", "/bin/sh", OS_USER, "-c", shlex.join(cmd)]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop_server(base: Path, bin_dir: Path | None, as_root: bool) -> None:
    """Stop the postmaster of the cluster in ``base``: ``pg_ctl stop``, then SIGKILL if needed."""
    data = base / "data"
    pid_file = data / "postmaster.pid"
    pid = _read_pid(pid_file)
    if pid is None:
        return
    if bin_dir is not None and _has_binaries(bin_dir):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                           "-w", "-t", "30", "stop"], as_root),
                cwd=base, capture_output=True, check=False, stdin=subprocess.DEVNULL,
                timeout=60,
            )  # fmt: skip
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid) and pid_file.exists():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _reap_stale(base: Path, as_root: bool) -> None:
    """Remove clusters whose owning test process is gone (a run killed with SIGKILL)."""
    for path in base.glob(f"{DIR_PREFIX}*"):
        owner = _read_pid(path / OWNER_FILE)
        if owner is None or _pid_alive(owner):
            continue
        try:
            bin_dir: Path | None = find_pg_bin()
        except PostgresUnavailable:
            bin_dir = None
        _stop_server(path, bin_dir, as_root)
        shutil.rmtree(path, ignore_errors=True)


_handlers_installed = False


def _install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into a normal exit so atexit still stops the cluster.

    Only where the signal still has its default action (which would skip atexit); a handler
    someone else installed is left alone.
    """
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _exit)
