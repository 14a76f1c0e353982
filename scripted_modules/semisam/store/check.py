"""``semisam store check``: find (and optionally remove) what interrupted writes or hand edits left.

Problems are returned as readable lines; an empty list means the store is healthy. Leftovers of killed
writes (hidden ``.tmp-*`` staging folders and temporary files, mask revisions written by a replacement
that never committed) are harmless - readers ignore them - and ``clean=True`` deletes them under the lock.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semisam.scan.volume import VolumeError
from semisam.store import _fs
from semisam.store.errors import StoreError
from semisam.store.layout import CASE_FILE
from semisam.store.pool import SCAN_FILE

if TYPE_CHECKING:
    from semisam.store.labeled import LabeledStore

_MASK_REVISION_RE = re.compile(r"^mask\.r\d+\.nii\.gz$")


def check_store(store: LabeledStore, *, clean: bool = False, deep: bool = False) -> list[str]:
    """Check every case, scan and model record of ``store``.

    Args:
        clean: delete leftovers of interrupted writes (taking the store lock).
        deep: also read every image and mask and compare the recorded label counts.
    """
    # Long: one pass over every part of the store under its lock; each block checks one kind of record.
    problems: list[str] = []
    store.damaged_cases()  # reported below, one by one: store.cases() need not log them again
    store.damaged_unlabeled()
    with store.lock:
        leftovers = store.leftovers()
        for case_dir in _visible_dirs(store.root / "cases"):
            if not (case_dir / CASE_FILE).is_file():
                problems.append(f"cases/{case_dir.name}: no {CASE_FILE}; not a case (remove or fix by hand)")
                continue
            try:
                rec = store.record(case_dir.name)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            if rec.case_id != case_dir.name:
                problems.append(f"cases/{case_dir.name}: {CASE_FILE} names case {rec.case_id!r}")
            referenced = {rec.mask, *(h.file for h in rec.history)}
            for name in (rec.image, *sorted(referenced)):
                if not (case_dir / name).is_file():
                    problems.append(f"cases/{case_dir.name}: {name} is missing")
                elif (case_dir / name).resolve().parent != case_dir.resolve():
                    # the schema refuses names with separators; this catches a symlink leading out
                    problems.append(
                        f"cases/{case_dir.name}: {name} points outside the case folder "
                        f"(to {(case_dir / name).resolve()})"
                    )
            if deep:
                problems += _deep_check(store, rec)
        records = store.cases()
        labeled_scans = {r.unlabeled_id: r.case_id for r in records if r.unlabeled_id}
        seqs = Counter(r.seq for r in records)
        problems += [f"sequence number {s} is used by {n} cases" for s, n in seqs.items() if n > 1]
        for scan_dir in _visible_dirs(store.root / "unlabeled"):
            if not (scan_dir / SCAN_FILE).is_file():
                problems.append(f"unlabeled/{scan_dir.name}: no {SCAN_FILE}")
                continue
            if scan_dir.name in labeled_scans:  # add_case(from_unlabeled=...) killed before the removal
                if clean:
                    store.remove_unlabeled(scan_dir.name)
                else:
                    problems.append(
                        f"unlabeled/{scan_dir.name} is labeled as case {labeled_scans[scan_dir.name]} but is "
                        "still in the pool (`check --clean` removes it from the pool)"
                    )
                continue
            try:
                path = store.unlabeled_path(scan_dir.name)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            if not path.is_file():
                problems.append(f"unlabeled/{scan_dir.name}: scan file {path} is missing")
        try:
            registry = store.models
            for v in registry.versions():
                missing = [n for n in ("manifest.json", "weights.safetensors") if not (v.path / n).is_file()]
                problems += [f"models/versions/{v.version}: {name} is missing" for name in missing]
                if not missing:
                    try:
                        registry.verified(v.version)
                    except StoreError as exc:
                        problems.append(str(exc))
            registry.active()
        except StoreError as exc:
            problems.append(str(exc))
        if leftovers and clean:
            for p in leftovers:
                _fs.remove_path(p)
            for d in {p.parent for p in leftovers}:
                _fs.fsync_dir(d)
        elif leftovers:
            problems += [
                f"leftover of an interrupted write (harmless; `check --clean` removes it): "
                f"{p.relative_to(store.root)}"
                for p in leftovers
            ]
    return problems


def find_leftovers(store: LabeledStore) -> list[Path]:
    """Hidden temporaries of interrupted writes: ``.tmp-*`` staging folders and files, and the temporary
    files of :mod:`semisam.scan.volume`'s atomic writer (``.<name>.<random>.tmp<suffix>``), in the store's
    folders, in each case / scan folder, and in the model registry."""
    folders = [store.root, store.root / "cases", store.root / "unlabeled"]
    for sub in ("cases", "unlabeled"):
        folders += _visible_dirs(store.root / sub)
    out = []
    for d in folders:
        if d.is_dir():
            out += [p for p in d.iterdir() if p.name.startswith(_fs.TMP_PREFIX) or _is_writer_temp(p.name)]
    for case_dir in _visible_dirs(store.root / "cases"):
        out += _orphan_masks(store, case_dir)
    return out + store.models.leftovers()


def _orphan_masks(store: LabeledStore, case_dir: Path) -> list[Path]:
    """Mask revisions written by a ``replace_mask`` killed before its commit (``case.json`` never
    pointed at them). Only folders holding a revision file have their record read: opening a store of
    a thousand cases stays a directory listing."""
    revisions = [p for p in case_dir.iterdir() if _MASK_REVISION_RE.match(p.name)]
    if not revisions:
        return []
    try:
        rec = store.record(case_dir.name)
    except StoreError:
        return []  # no readable record: check_store reports the case itself
    referenced = {rec.mask, *(h.file for h in rec.history)}
    return [p for p in revisions if p.name not in referenced]


def _is_writer_temp(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name and name != ".lock"


def _visible_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _deep_check(store: LabeledStore, rec) -> list[str]:
    try:
        case = store.read_case(rec.case_id)
    except VolumeError as exc:
        return [f"cases/{rec.case_id}: {exc}"]
    out = []
    if list(case.image.shape) != rec.shape_zyx:
        out.append(f"cases/{rec.case_id}: image shape {case.image.shape} != recorded {rec.shape_zyx}")
    values, counts = np.unique(case.mask.array[case.mask.array > 0], return_counts=True)
    found = {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
    if found != rec.labels:
        out.append(f"cases/{rec.case_id}: mask label counts {found} != recorded {rec.labels}")
    unknown = sorted(set(int(v) for v in values) - set(store.labels))
    if unknown:
        out.append(f"cases/{rec.case_id}: mask holds undeclared label(s) {unknown}")
    return out
