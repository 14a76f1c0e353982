"""One trainer per store: ``STORE/training/train.lock`` holds the owner's pid and host.

The lock is an OS file lock (``flock``; ``msvcrt.locking`` on Windows) on that file, held for the whole
run, so the kernel releases it when the owner dies, also on SIGKILL: a lock left by a dead process is
simply taken over. The file's content (pid, host, start time) is only for the message that refuses a
second trainer.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from semisam.fileio import utc_now
from semisam.oslock import lock_fh, unlock_fh
from semisam.training.errors import TrainError

LOCK_NAME = "train.lock"


class TrainLock:
    """Exclusive training lock of a store (``path``: the lock file)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`TrainError` (``locked``) naming the running trainer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while locked
        if not lock_fh(fh, blocking=False, timeout_s=None):
            fh.seek(0)
            try:
                owner = json.loads(fh.read() or "{}")
            except ValueError:
                owner = {}
            fh.close()
            raise TrainError(
                "locked",
                f"{self.path}: another trainer is running on this store (pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}, since {owner.get('started', '?')}); wait for it or cancel it",
            )
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now()}))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            unlock_fh(fh)
        finally:
            fh.close()

    def __enter__(self) -> TrainLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
