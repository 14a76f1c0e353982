"""The unlabeled pool of a store: scans registered for semi-supervised training, copied or referenced.

``unlabeled/<scan_id>/scan.json`` (an :class:`~semisam.store.records.UnlabeledRecord`) plus
``image.nii.gz`` when the scan was copied. Written like a case: a hidden staging folder committed by one
rename; removed by one rename to a hidden name. Also the small file helpers the store's parts share.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from semisam.scan.volume import Volume, read_volume, write_volume
from semisam.store import _fs
from semisam.store.errors import CaseExistsError, CaseNotFoundError, StoreError, StoreFormatError
from semisam.store.records import UnlabeledRecord, check_id

log = logging.getLogger(__name__)

IMAGE_FILE = "image.nii.gz"
SCAN_FILE = "scan.json"
ImageLike = Volume | str | os.PathLike


def read_json(path: Path, what: str, kind: str | None = None) -> dict:
    """Parse a JSON object (checked against ``schemas/<kind>.json`` when ``kind`` is given).

    FileNotFoundError passes through, anything else is a :class:`StoreFormatError` naming the file and,
    for a schema failure, the field and what was expected.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise StoreFormatError(f"{what} cannot be read ({exc})", path) from exc
    if not isinstance(data, dict):
        raise StoreFormatError(f"{what} is not a JSON object", path)
    if kind is not None:
        check_json(kind, data, path, what)
    return data


def check_json(kind: str, data: object, path: Path, what: str) -> None:
    """:func:`semisam.json_schema.validate` with the store's error type:
    ``PATH: WHAT is damaged: FIELD: ...``."""
    from semisam.json_schema import validate

    validate(kind, data, None, error=lambda m: StoreFormatError(f"{what} is damaged: {m}", path))


class UnlabeledPool:
    """Mixin of :class:`~semisam.store.labeled.LabeledStore` (uses its ``root``, ``lock``, ``modality``)."""

    root: Path
    lock: _fs.StoreLock
    modality: str | None

    def add_unlabeled(
        self,
        image: ImageLike,
        *,
        scan_id: str | None = None,
        copy: bool = True,
        modality: str | None = None,
    ) -> UnlabeledRecord:
        """Register an unlabeled scan: copied into the store (default) or referenced where it lies.

        A reference (``copy=False``) needs a file path; it is stored made absolute, so it survives
        moving the store but not moving the scan.
        """
        if not copy and isinstance(image, Volume):
            raise StoreError("an unlabeled scan given as an array must be copied (copy=True)")
        vol, src_file = as_image(image)
        if scan_id is not None:
            check_id(scan_id, "scan id")
        with self.lock:
            existing = self.unlabeled()
            seq = max((r.seq for r in existing), default=0) + 1
            taken = {
                p.name.lower() for p in (self.root / "unlabeled").iterdir() if not p.name.startswith(".")
            }
            sid = scan_id or auto_id("scan", seq, taken)
            if sid.lower() in taken:
                raise CaseExistsError(f"unlabeled scan {sid!r} already exists in the store", self.root)
            rec = UnlabeledRecord(
                scan_id=sid,
                seq=seq,
                added=_fs.utc_now(),
                image=IMAGE_FILE if copy else None,
                reference=None if copy else str(Path(src_file).resolve()),
                shape_zyx=list(vol.shape),
                spacing_mm=[round(s, 6) for s in vol.spacing],
                modality=modality or self.modality,
                source=Path(src_file).name if src_file else None,
            )
            staging = _fs.tmp_name(self.root / "unlabeled", sid)
            staging.mkdir()
            try:
                if copy:
                    write_image(vol, src_file, staging / IMAGE_FILE)
                _fs.atomic_write_json(staging / SCAN_FILE, rec.to_json())
                _fs.commit_dir(staging, self.root / "unlabeled" / sid)
            except BaseException:
                _fs.remove_leftovers(self.root / "unlabeled")
                raise
        return rec

    def remove_unlabeled(self, scan_id: str) -> None:
        """Take a scan out of the pool (one rename to a hidden name, then deletion of that folder).

        A referenced scan's file is left where it is; only the store's record of it goes.
        """
        with self.lock:
            folder = self.root / "unlabeled" / check_id(scan_id, "scan id")
            if not (folder / SCAN_FILE).is_file():
                raise CaseNotFoundError(f"no unlabeled scan {scan_id!r} in the store", self.root)
            hidden = _fs.tmp_name(folder.parent, scan_id)
            os.rename(folder, hidden)
            _fs.fsync_dir(folder.parent)
            _fs.remove_path(hidden)

    def unlabeled(self) -> list[UnlabeledRecord]:
        """Every committed unlabeled scan, in registration order."""
        out = []
        folder = self.root / "unlabeled"
        if not folder.is_dir():
            return out
        for p in folder.iterdir():
            if p.name.startswith(".") or not (p / SCAN_FILE).is_file():
                continue
            try:
                out.append(UnlabeledRecord.from_json(read_json(p / SCAN_FILE, "scan record", "scan_record")))
            except (StoreError, TypeError) as exc:
                reported = getattr(self, "_reported_damaged", set())
                if f"unlabeled/{p.name}" not in reported:
                    reported.add(f"unlabeled/{p.name}")
                    log.error("skipping damaged unlabeled scan: %s", exc)
        return sorted(out, key=lambda r: r.seq)

    def damaged_unlabeled(self) -> list[str]:
        """One line per unlabeled scan whose ``scan.json`` cannot be used (what :meth:`unlabeled` skips);
        the caller reports them, so :meth:`unlabeled` does not log them again."""
        out = []
        folder = self.root / "unlabeled"
        if not folder.is_dir():
            return out
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or not (p / SCAN_FILE).is_file():
                continue
            try:
                UnlabeledRecord.from_json(read_json(p / SCAN_FILE, "scan record", "scan_record"))
            except (StoreError, TypeError) as exc:
                out.append(str(exc))
                getattr(self, "_reported_damaged", set()).add(f"unlabeled/{p.name}")
        return out

    def unlabeled_path(self, scan_id: str) -> Path:
        """File of an unlabeled scan (inside the store, or the referenced file)."""
        folder = self.root / "unlabeled" / scan_id
        try:
            rec = UnlabeledRecord.from_json(read_json(folder / SCAN_FILE, "scan record", "scan_record"))
        except FileNotFoundError:
            raise CaseNotFoundError(f"no unlabeled scan {scan_id!r} in the store", self.root) from None
        return folder / rec.image if rec.image else Path(rec.reference)

    def read_unlabeled(self, scan_id: str) -> Volume:
        return read_volume(self.unlabeled_path(scan_id))


def auto_id(prefix: str, seq: int, taken: set[str]) -> str:
    n = seq
    while f"{prefix}_{n:04d}" in taken:
        n += 1
    return f"{prefix}_{n:04d}"


def as_image(image: ImageLike) -> tuple[Volume, str | None]:
    if isinstance(image, Volume):
        return image, None
    return read_volume(image), str(image)


def write_image(vol: Volume, src_file: str | None, dest: Path) -> None:
    # A NIfTI source is copied byte for byte: exact, and faster - adding lung1 (512x512x48 CT) took
    # 0.64 s from a .nii.gz file vs 2.16 s re-compressing it (Testing/benchmarks/store_add.py, 2 cores).
    if src_file and str(src_file).lower().endswith(".nii.gz"):
        _fs.copy_file_synced(Path(src_file), dest)
    else:
        write_volume(vol, dest)
