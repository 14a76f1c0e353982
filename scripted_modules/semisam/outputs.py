"""The one output guard every command uses: nothing the user gave is overwritten, nothing half-written.

:func:`plan_outputs` runs before any work (before a model is even loaded) and refuses, with one line
naming the option and the file:

* an output that **is** one of the call's inputs or another output of the same call: compared by real
  path and by ``(device, inode)``, so a different spelling, a symlink or a hard link to the scan is
  caught too; an output inside an input folder (a DICOM series) is refused as well;
* an output with a suffix the writer cannot produce (``--output m.xyz``), an output that is an
  existing folder, or one whose folder does not exist or is not writable.

:func:`commit_outputs` then writes: every output goes to a hidden temporary file beside its destination,
and only when **all** of them are written are they renamed over their destinations (each rename is
atomic). A failure or an interrupt before that leaves every existing file byte-identical.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from semisam.fileio import fsync_dir, fsync_file, replace, tmp_name

#: Output kinds -> accepted suffixes (lower case). Images: what :mod:`semisam.scan.volume` writes atomically.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".nii.gz", ".nii", ".nrrd", ".mha"),
    "json": (".json",),
    "png": (".png",),
}


class OutputError(ValueError):
    """An output path is unusable or would overwrite an input or another output of the same call."""


@dataclass(frozen=True)
class Output:
    """One checked output: the option that named it (for messages), the path as given and its kind."""

    option: str
    path: Path
    kind: str

    @property
    def suffix(self) -> str:
        return _suffix(self.path, self.kind)


def _suffix(path: Path, kind: str) -> str:
    name = path.name.lower()
    for s in sorted(SUFFIXES.get(kind, ()), key=len, reverse=True):
        if name.endswith(s) and len(name) > len(s):
            return s
    return ""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a link to the scan has the scan's identity
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def writable_folder(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (created later by the writer), if it is a writable dir."""
    p = folder
    while not p.exists():
        if p.parent == p:
            return None
        p = p.parent
    if not p.is_dir():
        return None
    # Probe by creating a file: os.access says yes for root on read-only mounts and /proc.
    probe = tmp_name(p, "probe")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError:
        return None
    os.close(fd)
    probe.unlink(missing_ok=True)
    return p


def plan_outputs(
    inputs: Mapping[str, str | os.PathLike | None],
    outputs: Mapping[str, tuple[str | os.PathLike | None, str]],
) -> dict[str, Output]:
    """Check a call's outputs against its inputs and each other; return the usable ones by option.

    Args:
        inputs: option/argument name -> input path (file or folder; ``None`` = not given).
        outputs: option name -> ``(path or None, kind)`` with kind ``"image"``, ``"json"`` or ``"png"``.

    Raises:
        OutputError: ``"--output x.nii.gz: is the input IMAGE (same file); choose another name"`` etc.
    """
    given_inputs = {k: Path(v) for k, v in inputs.items() if v is not None}
    in_ids = {k: _identity(p) for k, p in given_inputs.items()}
    in_real = {k: _real(p) for k, p in given_inputs.items()}
    checked: dict[str, Output] = {}
    seen: list[tuple[str, Path, tuple[int, int] | None]] = []
    for option, (value, kind) in outputs.items():
        if value is None or value == "":
            continue
        path = Path(value)
        out = Output(option, path, kind)
        if kind not in SUFFIXES:
            raise ValueError(f"unknown output kind {kind!r}")
        if path.is_dir():
            raise OutputError(
                f"{option} {path}: is a folder; give a file name such as {path / ('out' + SUFFIXES[kind][0])}"
            )
        real, ident = _real(path), _identity(path)
        for name, p in given_inputs.items():
            same = (ident is not None and ident == in_ids[name]) or real == in_real[name]
            inside = p.is_dir() and in_real[name] in real.parents
            if same or inside:
                how = "lies inside the input folder" if inside and not same else "is the input"
                raise OutputError(
                    f"{option} {path}: {how} {name} ({p}); writing it would destroy the input; choose another name"
                )
        for other, p, other_id in seen:
            if real == _real(p) or (ident is not None and ident == other_id):
                raise OutputError(
                    f"{option} {path}: is the same file as {other} ({p}); give each output its own name"
                )
        if not out.suffix:
            raise OutputError(
                f"{option} {path}: cannot write this file type; use a name ending in {', '.join(SUFFIXES[kind])}"
            )
        if writable_folder(real.parent) is None:
            raise OutputError(f"{option} {path}: folder {path.parent} is not a writable folder")
        seen.append((option, path, ident))
        checked[option] = out
    return checked


@contextmanager
def commit_outputs(outputs: Mapping[str, Output]) -> Iterator[dict[str, Path]]:
    """Yield option -> temporary path for each output; rename them all into place when the block succeeds.

    The temporary names keep each output's suffix (writers choose the format by it) and lie in the
    destination's folder (same file system: the rename is atomic). On any exception every temporary file
    is removed and no destination is touched.
    """
    tmps: dict[str, Path] = {}
    for option, out in outputs.items():
        folder = out.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        tmps[option] = Path(str(tmp_name(folder, out.path.name)) + out.suffix)
    try:
        yield tmps
        for option, tmp in tmps.items():
            if not tmp.exists():
                raise OutputError(f"{outputs[option].option} {outputs[option].path}: nothing was written")
            fsync_file(tmp)
        for option, tmp in tmps.items():
            replace(tmp, outputs[option].path)
        for folder in {out.path.parent for out in outputs.values()}:
            fsync_dir(folder)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
