"""Crash-safe file primitives: fsync'd atomic writes, directory commits by rename, a process lock.

Every change to a store becomes visible through exactly one ``rename`` (of a file or of a whole
staging folder), done after the new data and its folder have been fsync'd. A process killed at any
moment therefore leaves either the old state or the new one, plus hidden leftovers (names starting
with ``.``) that readers ignore and :func:`remove_leftovers` deletes.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from semisam.fileio import (  # noqa: F401 - re-exported for the store's modules
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    fsync_file,
    replace,
    tmp_name,
    utc_now,
)
from semisam.oslock import lock_fh, unlock_fh


def copy_file_synced(src: Path, dest: Path) -> Path:
    """Copy bytes of ``src`` to ``dest`` (a fresh name in a staging folder) and fsync it."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    return dest


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder below ``folder`` (files first, then folders bottom-up)."""
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for f in filenames:
            fsync_file(Path(dirpath) / f)
        fsync_dir(Path(dirpath))


def commit_dir(staging: Path, dest: Path) -> Path:
    """Make a fully written staging folder visible as ``dest`` in one rename.

    ``dest`` must not exist (``os.rename`` of a folder onto a non-empty folder fails on POSIX and
    onto any existing folder on Windows, so a clash is an error, never a merge).
    """
    fsync_tree(staging)
    os.rename(staging, dest)
    fsync_dir(dest.parent)
    return dest


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the hidden temporary names (``.tmp-*`` and SimpleITK writer temps) directly in ``folder``.

    Call only while holding the store's lock: every writer holds it while its temporaries exist.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(TMP_PREFIX) or (p.name.startswith(".") and ".tmp" in p.name):
            remove_path(p)
            removed.append(p)
    return removed


# ------------------------------------------------------------------------- lock
class StoreLock:
    """An exclusive, re-entrant, inter-process lock on ``<root>/.lock``.

    POSIX ``flock`` locks belong to an *open file description*: two ``open()`` calls of the same file,
    even in one process, conflict with each other. So one :class:`StoreLock` object opens the file once
    per outermost acquisition and counts nested acquisitions (a ``threading.RLock`` makes it safe across
    threads of one process). Two processes, or two :class:`StoreLock` objects, exclude each other.
    The kernel drops the lock when the process dies (also on SIGKILL), so a killed writer never leaves
    the store locked. On Windows ``msvcrt.locking`` on the first byte plays the same role.
    """

    def __init__(self, path: Path, timeout_s: float | None = None):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fh = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` return False at once when another holder has it."""
        # Threads of one process wait on the RLock, honouring the same timeout as other processes.
        timeout = -1 if (not blocking or self.timeout_s is None) else self.timeout_s
        if not self._thread_lock.acquire(blocking=blocking, timeout=timeout):
            return False
        if self._depth:
            self._depth += 1
            return True
        try:
            fh = open(self.path, "a+b")  # noqa: SIM115 - kept open while locked
        except BaseException:
            self._thread_lock.release()
            raise
        try:
            ok = lock_fh(fh, blocking, self.timeout_s)
        except BaseException:
            fh.close()
            self._thread_lock.release()
            raise
        if not ok:
            fh.close()
            self._thread_lock.release()
            return False
        self._fh = fh
        self._depth = 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fh, self._fh = self._fh, None
            try:
                unlock_fh(fh)
            finally:
                fh.close()
        self._thread_lock.release()

    def __enter__(self) -> StoreLock:
        if not self.acquire():
            raise TimeoutError(f"{self.path}: could not take the store lock")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
