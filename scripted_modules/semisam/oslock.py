"""OS file locks on an open file (``flock`` on POSIX, ``msvcrt.locking`` on Windows): held until released
or until the owner dies (the kernel drops them, also on SIGKILL). The store's lock and the trainer's lock
both use them."""

from __future__ import annotations

import sys
import time

if sys.platform == "win32":  # pragma: no cover - exercised only on Windows
    import msvcrt

    def lock_fh(fh, blocking: bool, timeout_s: float | None) -> bool:
        """Lock ``fh`` exclusively; ``False`` when it is held elsewhere and ``blocking`` is off or
        ``timeout_s`` seconds passed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking or (deadline is not None and time.monotonic() > deadline):
                    return False
                time.sleep(0.05)

    def unlock_fh(fh) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def lock_fh(fh, blocking: bool, timeout_s: float | None) -> bool:
        if blocking and timeout_s is None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not blocking or (deadline is not None and time.monotonic() > deadline):
                    return False
                time.sleep(0.02)

    def unlock_fh(fh) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
