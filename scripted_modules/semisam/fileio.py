"""Crash-safe file writes used across the core: fsync'd temporary file + one atomic rename.

A reader never sees a half-written file: data goes to a hidden temporary name in the destination's
folder (same file system, so the rename is atomic), is fsync'd, renamed over the destination, and the
folder is fsync'd so the rename itself survives a power cut. Temporary names start with
:data:`TMP_PREFIX`; the store's clean-up removes such leftovers of killed writers.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Prefix of every temporary / staging name; readers skip names starting with ".".
TMP_PREFIX = ".tmp-"


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename is durable only after this). No-op where unsupported."""
    if sys.platform == "win32":  # Windows cannot open a folder for fsync; NTFS journals renames
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cache_root() -> Path:
    """The user's SemiSAM cache: ``$SEMISAM_CACHE_DIR`` or ``~/.cache/semisam`` (sample scans, ONNX exports)."""
    return Path(os.environ.get("SEMISAM_CACHE_DIR") or Path.home() / ".cache" / "semisam")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tmp_name(folder: Path, stem: str = "") -> Path:
    """A fresh hidden name in ``folder`` (same file system, so a later rename is atomic)."""
    return folder / f"{TMP_PREFIX}{stem}{'-' if stem else ''}{secrets.token_hex(6)}"


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a fsync'd temporary file and a rename (then fsync the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path.parent, path.name)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def replace(src: Path, dest: Path) -> None:
    if sys.platform != "win32":
        os.replace(src, dest)
        return
    # Windows refuses to replace a file another process has open (a reader of case.json, a virus
    # scanner); such holds last milliseconds, so retry for up to ~2 s before giving up.
    for attempt in range(100):  # pragma: no cover - Windows only
        try:
            os.replace(src, dest)
            return
        except PermissionError:
            if attempt == 99:
                raise
            time.sleep(0.02)


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (readable by a person) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` for a writer that needs a file name (SimpleITK, ONNX export).

    When the block ends normally the file is fsync'd and renamed over ``dest``; on any exception
    (KeyboardInterrupt included) it is removed and ``dest`` is untouched. ``suffix`` is appended to
    the temporary name for writers that choose their format by extension (e.g. ``".nii.gz"``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(tmp_name(dest.parent, dest.name)) + suffix)
    try:
        yield tmp
        fsync_file(tmp)
        replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string with microseconds (``2026-01-31T12:00:00.000000Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
