"""``LabeledStore``: accepted cases, the unlabeled pool and the fixed validation split, on plain files.

Layout of a store folder (every path inside is relative, so the folder can be moved or copied)::

    semisam_store.json          format version, label table, modality, split rule
    .lock                       lock file (fcntl.flock); empty
    cases/<case_id>/            image.nii.gz, mask.nii.gz (+ mask.r2.nii.gz ... after edits), case.json
    unlabeled/<scan_id>/        scan.json (+ image.nii.gz when copied)
    models/                     the model registry (see :mod:`semisam.store.registry`)

Crash safety: a case is written into a hidden staging folder ``cases/.tmp-<id>-<random>/``, every file
and the folder are fsync'd, then one ``rename`` makes it ``cases/<case_id>/`` (the commit). Readers list
only non-hidden folders holding ``case.json``, so a killed add leaves nothing visible; its leftovers are
removed on the next open (when no one holds the lock) or by :meth:`LabeledStore.check`. A mask
replacement writes a new mask file under a new name, then atomically replaces ``case.json`` (the commit).
All writers hold the store lock (:class:`semisam.store._fs.StoreLock`) for the whole write, so two
processes adding cases at once both succeed, with distinct ids and sequence numbers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from semisam.scan.volume import Volume, read_mask, read_volume, write_mask
from semisam.store import _fs
from semisam.store.errors import (
    CaseExistsError,
    CaseNotFoundError,
    EmptyStoreError,
    LabelError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from semisam.store.labels import MaskLike, check_label_table, checked_mask, dice, label_counts
from semisam.store.layout import CASE_FILE, FORMAT_VERSION, MASK_FILE, STORE_FILE
from semisam.store.pool import (
    IMAGE_FILE,
    SCAN_FILE,
    ImageLike,
    UnlabeledPool,
    as_image,
    auto_id,
    read_json,
    write_image,
)
from semisam.store.records import CaseRecord, MaskRevision, Provenance, check_id
from semisam.store.split import RULE, check_split, decide_split

log = logging.getLogger(__name__)

__all__ = ["CASE_FILE", "FORMAT_VERSION", "IMAGE_FILE", "SCAN_FILE", "LabeledCase", "LabeledStore", "dice"]


@dataclass
class LabeledCase:
    """A case read from the store: ``image`` and ``mask`` are :class:`Volume` s on the same grid."""

    record: CaseRecord
    image: Volume
    mask: Volume

    @property
    def case_id(self) -> str:
        return self.record.case_id


def _split_after(existing: list[CaseRecord]) -> str:
    """The store rule's split for a case added after the ``existing`` ones."""
    return decide_split(len(existing), sum(r.split == "validation" for r in existing))


class LabeledStore(UnlabeledPool):
    """A labeled-set store at ``root`` (see the module docstring for the layout).

    Open an existing store with ``LabeledStore(root)``; create one with :meth:`LabeledStore.create`.

    Raises on open:
        StoreNotFoundError: ``root`` is missing or holds no ``semisam_store.json``.
        StoreFormatError: written by a newer semisam, or its metadata file is damaged.
    """

    def __init__(self, root: str | os.PathLike, *, clean: bool = True, lock_timeout_s: float | None = None):
        self.root = Path(root)
        meta_path = self.root / STORE_FILE
        if not self.root.is_dir():
            raise StoreNotFoundError(
                "no such store folder; create one with `semisam store init` (LabeledStore.create)", self.root
            )
        try:
            meta = read_json(meta_path, "store metadata")
        except FileNotFoundError:
            raise StoreNotFoundError(
                f"not a SemiSAM store (no {STORE_FILE}); create one with `semisam store init`", self.root
            ) from None
        version = meta.get("format_version")
        if not isinstance(version, int):
            raise StoreFormatError("store metadata has no integer format_version", meta_path)
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"store format version {version} was written by a newer semisam; this one reads up to "
                f"version {FORMAT_VERSION}: upgrade semisam to open it",
                meta_path,
            )
        from semisam.store.pool import check_json

        check_json("store_meta", meta, meta_path, "store metadata")
        self.meta = meta
        #: damaged case records already reported (by :meth:`damaged_cases` or a log line): logged once
        self._reported_damaged: set[str] = set()
        self.lock = _fs.StoreLock(self.root / ".lock", timeout_s=lock_timeout_s)
        if clean:
            self._clean_if_idle()

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        labels: Mapping[int, str],
        *,
        modality: str | None = None,
        name: str | None = None,
    ) -> LabeledStore:
        """Create a store at ``root`` (a missing or empty folder) with the label table ``labels``.

        ``labels`` maps label values (1..65535) to names; 0 is always ``background``.
        """
        root = Path(root)
        if (root / STORE_FILE).exists():
            raise StoreExistsError("a SemiSAM store already exists here", root)
        if root.exists() and (not root.is_dir() or any(p for p in root.iterdir() if p.name != ".lock")):
            raise StoreExistsError("folder is not empty; a new store needs a new or empty folder", root)
        table = check_label_table(labels)
        for sub in ("cases", "unlabeled", "models"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": "semisam-store",
            "format_version": FORMAT_VERSION,
            "name": name or root.resolve().name,
            "labels": {str(k): v for k, v in sorted(table.items())},
            "modality": modality,
            "split_rule": RULE,
            "created": _fs.utc_now(),
        }
        # The metadata file is written last: until it exists the folder is not a store.
        _fs.fsync_dir(root)
        _fs.atomic_write_json(root / STORE_FILE, meta)
        return cls(root)

    @classmethod
    def open_or_create(
        cls, root: str | os.PathLike, labels: Mapping[int, str], *, modality: str | None = None
    ) -> LabeledStore:
        """Open the store at ``root``, or create it with ``labels`` when the folder holds none.

        An existing store must already declare every value of ``labels`` with the same name
        (:class:`LabelError` otherwise): the caller's masks will use them.
        """
        if not (Path(root) / STORE_FILE).exists():
            try:
                return cls.create(root, labels, modality=modality)
            except StoreExistsError:
                if not (Path(root) / STORE_FILE).exists():
                    raise
                # another process created it meanwhile: open it below
        store = cls(root)
        wanted = check_label_table(labels)
        differ = {k: v for k, v in wanted.items() if store.labels.get(k) != v}
        if differ:
            raise LabelError(
                f"store declares labels {store.labels}, not {differ}; declare them (declare_labels) first",
                store.root,
            )
        return store

    # ------------------------------------------------------------------ metadata
    @property
    def labels(self) -> dict[int, str]:
        """Label table: value -> name (0 -> background included)."""
        return {int(k): v for k, v in self.meta["labels"].items()}

    @property
    def modality(self) -> str | None:
        return self.meta.get("modality")

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.root.name

    def declare_labels(self, labels: Mapping[int, str]) -> dict[int, str]:
        """Add label values to the table (an existing value must keep its name). Returns the new table."""
        with self.lock:
            meta = read_json(self.root / STORE_FILE, "store metadata", "store_meta")
            table = {int(k): v for k, v in meta["labels"].items()}
            for value, name in check_label_table(labels).items():
                if value in table and table[value] != name:
                    raise LabelError(
                        f"label {value} is already {table[value]!r}; renaming it to {name!r} would change "
                        "the meaning of existing masks",
                        self.root / STORE_FILE,
                    )
                table[value] = name
            meta["labels"] = {str(k): v for k, v in sorted(table.items())}
            _fs.atomic_write_json(self.root / STORE_FILE, meta)
            self.meta = meta
            return table

    # -------------------------------------------------------------------- cases
    def case_dir(self, case_id: str) -> Path:
        return self.root / "cases" / case_id

    def cases(self, split: str | None = None) -> list[CaseRecord]:
        """Every committed case (optionally only ``split``), in the order they were added.

        A ``case.json`` that cannot be parsed (edited by hand) is logged and skipped; :meth:`check`
        reports it.
        """
        out = []
        folder = self.root / "cases"
        if not folder.is_dir():
            return out
        for p in folder.iterdir():
            if p.name.startswith(".") or not p.is_dir():
                continue
            try:
                rec = self._load_record(p.name)
            except CaseNotFoundError:
                continue  # a folder without case.json is not a case
            except StoreError as exc:
                if p.name not in self._reported_damaged:
                    self._reported_damaged.add(p.name)
                    log.error("skipping damaged case: %s", exc)
                continue
            if split is None or rec.split == split:
                out.append(rec)
        return sorted(out, key=lambda r: r.seq)

    def damaged_cases(self) -> list[str]:
        """One line per case folder whose ``case.json`` cannot be used (what :meth:`cases` skips).

        The caller reports them: :meth:`cases` then skips them without logging them again.
        """
        out = []
        folder = self.root / "cases"
        if not folder.is_dir():
            return out
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or not p.is_dir() or not (p / CASE_FILE).is_file():
                continue
            try:
                self._load_record(p.name)
            except CaseNotFoundError:
                continue
            except StoreError as exc:
                out.append(str(exc))
                self._reported_damaged.add(p.name)
        return out

    def case_ids(self, split: str | None = None) -> list[str]:
        return [r.case_id for r in self.cases(split)]

    def require_cases(self, split: str | None = None) -> list[CaseRecord]:
        """Like :meth:`cases` but raises :class:`EmptyStoreError` when there are none."""
        recs = self.cases(split)
        if not recs:
            what = "labeled cases" if split is None else f"{split} cases"
            raise EmptyStoreError(f"the store has no {what}; add one with `semisam store add`", self.root)
        return recs

    def record(self, case_id: str) -> CaseRecord:
        """The :class:`CaseRecord` of ``case_id``."""
        return self._load_record(case_id)

    def _load_record(self, case_id: str) -> CaseRecord:
        path = self.case_dir(case_id) / CASE_FILE
        try:
            data = read_json(path, "case record", "case_record")
        except FileNotFoundError:
            known = ", ".join(self._ids_quick()[:10]) or "none"
            raise CaseNotFoundError(f"no case {case_id!r} in the store (cases: {known})", self.root) from None
        try:
            return CaseRecord.from_json(data)
        except (TypeError, KeyError, ValueError) as exc:
            raise StoreFormatError(f"case record is damaged: {exc}", path) from exc

    def _ids_quick(self) -> list[str]:
        folder = self.root / "cases"
        return (
            sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
        )

    def image_path(self, case_id: str) -> Path:
        return self.case_dir(case_id) / self.record(case_id).image

    def mask_path(self, case_id: str) -> Path:
        return self.case_dir(case_id) / self.record(case_id).mask

    def read_case(self, case_id: str) -> LabeledCase:
        """Read a case's image and current mask (the mask is checked to lie on the image grid)."""
        rec = self.record(case_id)
        image = read_volume(self.case_dir(case_id) / rec.image)
        mask = read_mask(self.case_dir(case_id) / rec.mask, reference=image)
        return LabeledCase(rec, image, mask)

    def validation_ids(self) -> list[str]:
        """Ids of the fixed validation split, in add order."""
        return self.case_ids("validation")

    def train_ids(self) -> list[str]:
        return self.case_ids("train")

    def next_split(self) -> str:
        """The split the next case added by the store's rule will get (``"train"`` or ``"validation"``).

        Known before the case is annotated, so a validation case can be drawn without the specialist's
        proposal: a mask corrected from a model's proposal keeps that model's answer wherever it was
        accepted, and would then favour it when versions are compared (see
        :func:`semisam.training.promote.comparison_case_ids`).
        """
        return _split_after(self.cases())

    def add_case(
        self,
        image: ImageLike | None,
        mask: MaskLike,
        provenance: Provenance | None = None,
        *,
        case_id: str | None = None,
        split: str | None = None,
        modality: str | None = None,
        proposal: np.ndarray | None = None,
        from_unlabeled: str | None = None,
    ) -> CaseRecord:
        """Add a labeled case; returns its record once it is durably committed.

        Args:
            image: the scan (a :class:`Volume`, or a file path read with :func:`read_volume`); ``None``
                with ``from_unlabeled`` takes the pool scan's image.
            mask: label map ``(Z, Y, X)`` on the image's grid (array, Volume, or file path).
            provenance: how the mask was made (annotator, times, prompts, model version...).
            case_id: the id (folder name); default ``case_0001``, ``case_0002``... by sequence number.
            split: force ``"train"`` or ``"validation"`` (imports); default: the store's rule
                (:mod:`semisam.store.split`), decided now and never changed.
            modality: ``CT``/``MR``...; default the store's.
            proposal: the model's proposed mask; when given, ``provenance.proposal_dice`` is its Dice
                against ``mask``.
            from_unlabeled: id of the unlabeled scan this case labels; it leaves the pool after the
                case is committed (a crash in between leaves it in both places, never in neither;
                ``check --clean`` then removes it from the pool).

        Raises:
            GeometryMismatchError: mask and image grids differ.
            LabelError: the mask holds values missing from the store's label table.
            CaseExistsError: ``case_id`` is taken.
        """
        # Long: the one crash-safe write of a case (check, stage, fsync, rename, record); split, its commit order would be spread over several functions.
        if from_unlabeled is not None:
            scan_path = self.unlabeled_path(from_unlabeled)  # raises when there is no such scan
            image = scan_path if image is None else image
        elif image is None:
            raise StoreError("add_case needs an image (or from_unlabeled naming a scan of the pool)")
        vol, src_file = as_image(image)
        mask_arr = checked_mask(mask, vol, self.labels)
        prov = replace(provenance) if provenance is not None else Provenance()
        if proposal is not None:
            prov.proposal_dice = round(dice(proposal, mask_arr), 6)
        if case_id is not None:
            check_id(case_id)
        if split is not None:
            check_split(split)
        with self.lock:
            existing = self.cases()
            seq = max((r.seq for r in existing), default=0) + 1
            # Lower-cased: "Case1" and "case1" are one folder on macOS and Windows file systems.
            taken = {i.lower() for i in self._ids_quick()}
            cid = case_id or auto_id("case", seq, taken)
            if cid.lower() in taken:
                raise CaseExistsError(f"case {cid!r} already exists in the store", self.root)
            rec = CaseRecord(
                case_id=cid,
                seq=seq,
                split=split or _split_after(existing),
                split_rule="explicit" if split else RULE,
                added=_fs.utc_now(),
                image=IMAGE_FILE,
                mask=MASK_FILE,
                mask_revision=1,
                labels=label_counts(mask_arr),
                shape_zyx=list(vol.shape),
                spacing_mm=[round(s, 6) for s in vol.spacing],
                modality=modality or self.modality,
                source=Path(src_file).name if src_file else (Path(vol.source).name if vol.source else None),
                provenance=prov,
                unlabeled_id=from_unlabeled,
            )
            staging = _fs.tmp_name(self.root / "cases", cid)
            staging.mkdir()
            try:
                write_image(vol, src_file, staging / IMAGE_FILE)
                write_mask(mask_arr, vol, staging / MASK_FILE)
                _fs.atomic_write_json(staging / CASE_FILE, rec.to_json())
                _fs.commit_dir(staging, self.case_dir(cid))
            except BaseException:
                _fs.remove_leftovers(self.root / "cases")
                raise
            if from_unlabeled is not None:
                self.remove_unlabeled(from_unlabeled)
        log.info("added case %s (%s, seq %d)", cid, rec.split, seq)
        return rec

    def replace_mask(self, case_id: str, mask: MaskLike, provenance: Provenance | None = None) -> CaseRecord:
        """Make ``mask`` the case's current mask; the previous one stays on disk, listed in ``history``."""
        with self.lock:
            rec = self.record(case_id)
            folder = self.case_dir(case_id)
            image = read_volume(folder / rec.image)
            mask_arr = checked_mask(mask, image, self.labels)
            revision = rec.mask_revision + 1
            name = f"mask.r{revision}.nii.gz"
            write_mask(mask_arr, image, folder / name)
            old = MaskRevision(rec.mask_revision, rec.mask, _fs.utc_now(), rec.provenance)
            new = replace(
                rec,
                mask=name,
                mask_revision=revision,
                labels=label_counts(mask_arr),
                provenance=replace(provenance) if provenance is not None else Provenance(),
                history=[*rec.history, old],
            )
            _fs.atomic_write_json(folder / CASE_FILE, new.to_json())  # the commit
        log.info("replaced mask of %s (revision %d)", case_id, revision)
        return new

    # -------------------------------------------------------------- maintenance
    def _clean_if_idle(self) -> None:
        """Remove leftovers of killed writes, if no one holds the lock and the folder is writable."""
        if not os.access(self.root, os.W_OK):
            return
        try:
            if not self.lock.acquire(blocking=False):
                return  # a writer is busy; its temporaries are not leftovers
        except OSError:
            return
        try:
            for path in self.leftovers():
                log.info("removing leftover of an interrupted write: %s", path)
                _fs.remove_path(path)
        finally:
            self.lock.release()

    def leftovers(self) -> list[Path]:
        """Hidden temporaries of interrupted writes (staging folders, temp files), not yet removed."""
        from semisam.store.check import find_leftovers

        return find_leftovers(self)

    @property
    def models(self):  # -> ModelRegistry (imported lazily: registry may pull in semisam.model_folder)
        """The :class:`~semisam.store.registry.ModelRegistry` of this store."""
        from semisam.store.registry import ModelRegistry

        return ModelRegistry(self)

    def check(self, *, clean: bool = False, deep: bool = False) -> list[str]:
        """Problems found in the store (empty list: healthy). See :func:`semisam.store.check.check_store`."""
        from semisam.store.check import check_store

        return check_store(self, clean=clean, deep=deep)
