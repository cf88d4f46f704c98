"""Atomic writes (:func:`write_atomic`), and sweeping the temporaries a dead writer left behind.

Every file of the platform (results, step outputs, the imzML index cache) is written under a temporary name and moved into place, so readers never see half
a file. A writer killed in between (SIGKILL, a lost pod) leaves its temporary file; the next
writer of the same folder removes it. A temporary name carries its writer's host and process id
(``<name>.tmp-<host>-<pid>-<random>``), so a writer can tell at once that one from its own
host is orphaned (that process is gone); temporaries from other hosts (other pods) are
removed once they are older than :data:`ORPHAN_AGE_S`, which no single write takes.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import uuid
from datetime import datetime

import fsspec

#: folders swept in this process already (filesystem id, folder): one ``ls`` per folder
_swept: set[tuple[int, str]] = set()

#: temporaries of another host older than this are orphans (seconds)
ORPHAN_AGE_S = 3600.0
MARK = ".tmp-"
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_PATTERN = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+$")


def token() -> str:
    """A unique temporary suffix naming this host and process."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def temporary_name(name: str) -> str:
    return f".{name.lstrip('.')}{MARK}{token()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age_s(info: dict) -> float | None:
    modified = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if isinstance(modified, datetime):
        modified = modified.timestamp()
    return None if modified is None else time.time() - float(modified)


def is_orphan(name: str, info: dict | None = None) -> bool:
    match = _PATTERN.search(name)
    if match is None:
        return False
    if match["host"] == _HOST:
        return not _alive(int(match["pid"]))
    age = _age_s(info or {})
    return age is not None and age > ORPHAN_AGE_S


def sweep_orphans(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """Remove orphaned temporaries directly in ``folder``; returns what was removed."""
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []
    removed = []
    for info in entries:
        path = info["name"]
        if MARK in path.rsplit("/", 1)[-1] and is_orphan(path, info):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path)
                removed.append(path)
    return removed


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> str:
    """Write ``data`` at ``path`` under a temporary name beside it, then move it into place, so
    a reader never sees half a file; returns ``path``.

    The one atomic writer of bytes: the first write into a folder in a process sweeps what a
    killed writer left there, and a failed write removes its own temporary.
    """
    parent, _, name = path.rpartition("/")
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if (id(fs), parent) not in _swept:
        sweep_orphans(fs, parent or ".")
        _swept.add((id(fs), parent))
    temporary = f"{parent}/{temporary_name(name)}" if parent else temporary_name(name)
    try:
        fs.pipe_file(temporary, data)
        fs.mv(temporary, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(temporary)
        raise
    return path
