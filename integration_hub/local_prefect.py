"""The hub's local Prefect server for CLI commands: started once, shared, stopped when idle.

Why not Prefect's own temporary server (started inside every command): it costs ~10 s per
command, and it runs in the command's process group, so the Ctrl-C a person presses reaches it
too. It then dies under the run it serves, and the command hangs for minutes retrying a server
that is gone before it can record that it was stopped. This server instead:

* lives in its own session (no terminal signal reaches it), behind a small keeper process
  (``python -m integration_hub.local_prefect``) that starts ``prefect server start`` through
  :func:`integration_hub.serving.start_local_server` (the same environment allow-list as
  ``integrations serve``: the server never holds the vault keys);
* is shared: commands find it through ``var/prefect/local-server.json`` (one start at a time,
  under a file lock) and register themselves as its users while they run;
* stops by itself once no user has been alive for ``INTEGRATIONS_PREFECT_SERVER_IDLE_SECONDS``
  (default 300 s; 0 stops it as soon as the last user exits). A user killed with SIGKILL is
  noticed by its process id, so nothing is left behind for long.

``integrations serve`` runs its own server for the scheduler and the UI; while it runs, commands
use that one (it writes the same state file). ``PREFECT_API_URL`` set by an operator wins over
both.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

STATE_NAME = "local-server.json"
USERS_NAME = "local-server.users"
LOCK_NAME = "local-server.lock"
START_TIMEOUT_S = 120.0
POLL_S = 0.5


def _state_path(home: Path) -> Path:
    return home / STATE_NAME


def read_state(home: Path) -> dict[str, object] | None:
    try:
        state = json.loads(_state_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(home: Path, api_url: str, owner_pid: int) -> None:
    """Say where the server is (the keeper, or ``integrations serve``, calls this)."""
    path = _state_path(home)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"api_url": api_url, "owner_pid": owner_pid}), encoding="utf-8")
    tmp.replace(path)


def clear_state(home: Path, owner_pid: int) -> None:
    state = read_state(home)
    if state is not None and state.get("owner_pid") == owner_pid:
        with contextlib.suppress(OSError):
            _state_path(home).unlink()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def healthy(api_url: str, timeout_s: float = 1.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    with (home / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _running(home: Path) -> str | None:
    state = read_state(home)
    if state is None:
        return None
    url, pid = state.get("api_url"), state.get("owner_pid")
    if isinstance(url, str) and isinstance(pid, int) and alive(pid) and healthy(url):
        return url
    return None


def api_url_for_command(home: Path, idle_s: float, log_path: Path) -> str:
    """The shared server's API URL, started if needed; this process is one of its users until
    it exits. Raises ``RuntimeError`` (with where to look) when it cannot be started."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(home):
        url = _running(home)
        if url is None:
            url = _start_keeper(home, idle_s, log_path)
        _register_user(home)
    return url


def _start_keeper(home: Path, idle_s: float, log_path: Path) -> str:
    from integration_hub.private_files import open_private_append

    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open_private_append(log_path) as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "integration_hub.local_prefect", str(home), str(idle_s)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no terminal signal reaches it
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if keeper.poll() is not None:
            raise RuntimeError(f"the local Prefect server did not start; see {log_path}")
        state = read_state(home)
        if state is not None and state.get("owner_pid") == keeper.pid:
            return str(state["api_url"])
        time.sleep(0.1)
    keeper.terminate()
    raise RuntimeError(f"the local Prefect server did not start in time; see {log_path}")


def _register_user(home: Path) -> None:
    users = home / USERS_NAME
    users.mkdir(exist_ok=True, mode=0o700)
    mine = users / str(os.getpid())
    mine.touch()
    atexit.register(lambda: mine.unlink(missing_ok=True))


def live_users(home: Path) -> int:
    """Commands using the server now; files of dead ones are removed."""
    count = 0
    for entry in (home / USERS_NAME).glob("*"):
        if entry.name.isdigit() and alive(int(entry.name)):
            count += 1
        else:
            entry.unlink(missing_ok=True)
    return count


def keep(home: Path, idle_s: float) -> int:
    """The keeper: start the server, say where it is, stop it once idle (or on SIGTERM)."""
    from integration_hub.serving import free_port, start_local_server

    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)
    server = start_local_server(free_port(), home)
    write_state(home, server.api_url, os.getpid())
    last_used = time.monotonic()
    try:
        while not stopping and server.process.poll() is None:
            time.sleep(POLL_S)
            if live_users(home):
                last_used = time.monotonic()
            elif time.monotonic() - last_used >= idle_s:
                break
    finally:
        clear_state(home, os.getpid())
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The hub's shared local Prefect server.")
    parser.add_argument("home", type=Path)
    parser.add_argument("idle_s", type=float)
    args = parser.parse_args(argv)
    return keep(args.home, args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
