"""The hub's files are its own: ``var/`` is 0700, and what the hub writes there is 0600.

Why: ``var/`` holds the hub's SQLite databases (credentials' ciphertext, the audit log, run
history with volunteers' names and amounts), the Bufdir report files, Prefect's database and
logs, and by default the vault's key ring. Under the usual umask (022) every local user of the
machine could read all of it but the key file. So every ``integrations`` command sets a umask of
0o077 before it does anything (:func:`restrict_new_files`): whatever creates a file (SQLite,
Prefect, the report writer, a flow run in a child process) creates it private, without each
writer having to remember. A ``var/`` left open by an older version is made private once, and
the command says so (:func:`make_private`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

PRIVATE_UMASK = 0o077
"""Group and others get no permission bits on anything created."""
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def restrict_new_files() -> int:
    """Set this process's umask to :data:`PRIVATE_UMASK` (inherited by the processes it
    starts: the Prefect server, flow runs); returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def make_private(directory: Path) -> str | None:
    """Take group and other permissions off ``directory`` and everything under it, when the
    directory itself allows them; returns what was done (to tell the operator, once: the next
    call finds the directory private and does nothing), or None.

    Only the hub's own state directory is passed here, never a directory the hub merely writes
    into. Symbolic links are not followed, and entries the hub cannot change are left as they
    are (the directory's own mode already keeps others out of them).
    """
    try:
        mode = stat.S_IMODE(directory.stat().st_mode)
    except FileNotFoundError:
        return None
    if not mode & PRIVATE_UMASK:
        return None
    directory.chmod(mode & ~PRIVATE_UMASK)
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            entry = Path(root) / name
            try:
                entry_mode = entry.lstat().st_mode
                if not stat.S_ISLNK(entry_mode) and entry_mode & PRIVATE_UMASK:
                    entry.chmod(stat.S_IMODE(entry_mode) & ~PRIVATE_UMASK)
            except OSError:
                continue
    return (
        f"{directory} was open to other users (mode {mode:04o}); made it and everything in "
        f"it private ({PRIVATE_DIR_MODE:04o} for directories, no group or other access to "
        "files)"
    )


def open_private_append(path: Path) -> BinaryIO:
    """``path`` opened for appending, created 0600 if new (a log the hub writes)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, PRIVATE_FILE_MODE), "ab")


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (before SQLite opens a new
    database there: SQLite gives its journal files the database file's mode)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
