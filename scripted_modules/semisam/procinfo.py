"""Which process is which: a process is named by its pid *and* its start time, never by a pid alone.

A pid is reused once its process has ended, so a pid written into a file yesterday (a job-state file
left by a crash) may name an unrelated process today. :func:`identity` reads the start time from the
process table; :func:`is_same` checks both, and :func:`may_signal_group` refuses a process group that
holds the caller, so nothing here can stop a process that is not the one it was given.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_WINDOWS = sys.platform == "win32"


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as the process table names it: ``pid`` and ``start`` (an opaque start-time text:
    Linux boot id + start ticks, the ``ps`` start time elsewhere, FILETIME on Windows)."""

    pid: int
    start: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ProcessIdentity | None:
        """From ``{"pid": int, "start": str}``; ``None`` when the data is not that."""
        if not isinstance(data, dict):
            return None
        pid, start = data.get("pid"), data.get("start")
        if (
            isinstance(pid, int)
            and not isinstance(pid, bool)
            and pid > 0
            and isinstance(start, str)
            and start
        ):
            return cls(pid, start)
        return None


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` as an opaque text, or ``None`` when there is no such process
    (or it is a zombie: ended, not yet reaped)."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    if _WINDOWS:
        return _windows_start(pid)
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        if fields[0] in ("Z", "X"):  # a zombie has ended
            return None
        return f"{_boot_id()}:{fields[19]}"  # field 22 of stat: start time in clock ticks after boot
    try:
        out = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text or None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "boot"


def _windows_start(pid: int) -> str | None:  # pragma: no cover - Windows only
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return None
    try:
        code = wintypes.DWORD()
        if kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) and code.value != 259:  # STILL_ACTIVE
            return None
        times = [wintypes.FILETIME() for _ in range(4)]
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        return f"{times[0].dwHighDateTime}:{times[0].dwLowDateTime}"
    finally:
        kernel32.CloseHandle(handle)


def identity(pid: int | None = None) -> ProcessIdentity | None:
    """The identity of ``pid`` (default: this process), or ``None`` when it does not run."""
    pid = os.getpid() if pid is None else pid
    start = start_time(pid)
    return None if start is None else ProcessIdentity(pid, start)


#: Whether this system's process table shows command lines (Linux ``/proc``).
_SHOWS_COMMAND_LINES = Path("/proc/self/cmdline").is_file()


def command_line(pid: int) -> list[str] | None:
    """The argument vector of process ``pid`` where the process table shows it (Linux ``/proc``), else
    ``None`` (not readable here: callers then rely on pid and start time alone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]] or None


def is_same(ident: ProcessIdentity | None, argv: list[str] | None = None) -> bool:
    """Whether the process ``ident`` names still runs: its pid exists and started when recorded, and,
    when ``argv`` is given and the process table shows command lines, it runs that command (as the tail
    of what the table shows: a script started through its ``#!`` line has the interpreter in front)."""
    if ident is None or start_time(ident.pid) != ident.start:
        return False
    if argv:
        seen = command_line(ident.pid)
        if seen is None and _SHOWS_COMMAND_LINES:
            return False  # shown here, but not for it now (a process between fork and exec): unverified
        if seen is not None and seen[-len(argv) :] != list(argv):
            return False
    return True


def may_signal_group(pid: int) -> bool:
    """Whether signalling the process group of ``pid`` is safe: the group exists and is not the
    caller's own (a group holding the caller would stop the application itself)."""
    if _WINDOWS:
        return False
    try:
        pgid = os.getpgid(pid)
    except OSError:
        return False
    return pgid != os.getpgrp() and pgid > 1
