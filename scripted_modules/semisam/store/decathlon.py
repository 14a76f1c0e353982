"""Export to and import from the Medical Segmentation Decathlon / nnU-Net raw layout.

Layout written by :func:`export_dataset` (``layout="nnunetv2"``, the default, or ``"msd"``)::

    dataset.json       nnU-Net v2 keys (channel_names, labels {name: value}, numTraining, file_ending)
                       or MSD keys (modality, labels {"value": name}, training/test lists), plus a
                       "semisam" section: each case's split, order and provenance, the unlabeled ids
    imagesTr/          <case>_0000.nii.gz (nnU-Net v2) or <case>.nii.gz (MSD)
    labelsTr/          <case>.nii.gz: the current mask
    imagesTs/          the unlabeled pool, named like imagesTr
    splits_final.json  nnU-Net's split file, one fold: [{"train": [...], "val": [...]}] - copy it to
                       nnUNet_preprocessed/DatasetXXX_Name/ to train nnU-Net on the same split

Images and masks are copied byte for byte, so export -> import -> export reproduces every file.
The export is assembled in a hidden folder beside the destination and renamed into place at the end:
an interrupted export leaves no half dataset. Only the current mask of each case is exported (the mask
history stays in the store).

:func:`import_dataset` reads either layout (or any folder with that structure from nnU-Net or the MSD),
takes the split from the "semisam" section, else from ``splits_final.json`` (fold 0), else applies the
store's rule; ``imagesTs`` scans join the unlabeled pool. ``dataset.json`` is checked against
``schemas/dataset.json`` first. An import is all or nothing: a new store is assembled in a hidden folder
and renamed into place when complete; into an existing store, a failure removes every case and scan the
import had added and restores the label table, so the corrected re-import is not refused.
An export refuses a store with damaged records unless asked to skip them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semisam.scan.volume import read_volume, write_volume
from semisam.store import _fs
from semisam.store.errors import CaseExistsError, LabelError, StoreError, StoreNotFoundError
from semisam.store.labeled import FORMAT_VERSION, LabeledStore
from semisam.store.records import Provenance, check_id

log = logging.getLogger(__name__)

LAYOUTS = ("nnunetv2", "msd")
ENDING = ".nii.gz"
CHANNEL = "_0000"


def _image_name(case_id: str, layout: str) -> str:
    return f"{case_id}{CHANNEL if layout == 'nnunetv2' else ''}{ENDING}"


def export_dataset(
    store: LabeledStore,
    dest: str | os.PathLike,
    *,
    layout: str = "nnunetv2",
    description: str | None = None,
    skip_damaged: bool = False,
) -> Path:
    """Write the store's cases, split and unlabeled scans to ``dest`` (must not exist or be empty).

    A case whose record is damaged makes the export fail (naming it) unless ``skip_damaged``: a
    dataset silently missing a case would train and evaluate on something else than the store holds.

    Raises:
        EmptyStoreError: the store has no labeled case.
        StoreError: ``dest`` is not empty or lies inside the store, ``layout`` is unknown, or a case
            record is damaged.
    """
    if layout not in LAYOUTS:
        raise StoreError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StoreError("export folder exists and is not empty; choose a new folder", dest)
    if _inside(dest, store.root):
        raise StoreError(
            f"export folder lies inside the store {store.root}; choose a folder outside it", dest
        )
    damaged = store.damaged_cases() + store.damaged_unlabeled()
    if damaged and not skip_damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise StoreError(f"{damaged[0]}{more}; nothing exported (fix it, or export with --skip-damaged)")
    for line in damaged:
        log.warning("export skips a damaged record: %s", line)
    records = store.require_cases()
    scans = store.unlabeled()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = _fs.tmp_name(dest.parent, dest.name)
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (staging / sub).mkdir(parents=True)
        for rec in records:
            folder = store.case_dir(rec.case_id)
            shutil.copyfile(folder / rec.image, staging / "imagesTr" / _image_name(rec.case_id, layout))
            shutil.copyfile(folder / rec.mask, staging / "labelsTr" / f"{rec.case_id}{ENDING}")
        for scan in scans:
            src = store.unlabeled_path(scan.scan_id)
            out = staging / "imagesTs" / _image_name(scan.scan_id, layout)
            if src.name.lower().endswith(ENDING):
                shutil.copyfile(src, out)
            else:  # a referenced scan in another format
                write_volume(read_volume(src), out)
        train = [r.case_id for r in records if r.split == "train"]
        val = [r.case_id for r in records if r.split == "validation"]
        _fs.atomic_write_json(staging / "splits_final.json", [{"train": train, "val": val}])
        meta = _dataset_json(store, records, scans, layout, description)
        _fs.atomic_write_json(staging / "dataset.json", meta)
        if dest.exists():
            dest.rmdir()
        _fs.commit_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %d cases and %d unlabeled scans to %s (%s)", len(records), len(scans), dest, layout)
    return dest


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies below it (real paths: symlinks resolved)."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def _dataset_json(store, records, scans, layout: str, description: str | None) -> dict[str, Any]:
    modality = store.modality or "CT"
    semisam = {
        "format_version": FORMAT_VERSION,
        "split_rule": store.meta.get("split_rule"),
        "cases": {
            r.case_id: {
                "seq": r.seq,
                "split": r.split,
                "modality": r.modality,
                "source": r.source,
                "provenance": r.provenance.to_json(),
            }
            for r in records
        },
        "unlabeled": [s.scan_id for s in scans],
    }
    common = {
        "name": store.name,
        "description": description or f"exported from the SemiSAM store {store.name!r}",
        "numTraining": len(records),
        "semisam": semisam,
    }
    if layout == "nnunetv2":
        return {
            **common,
            "channel_names": {"0": modality},
            "labels": {name: value for value, name in sorted(store.labels.items())},
            "file_ending": ENDING,
        }
    return {
        **common,
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": {str(value): name for value, name in sorted(store.labels.items())},
        "numTest": len(scans),
        "training": [
            {"image": f"./imagesTr/{r.case_id}{ENDING}", "label": f"./labelsTr/{r.case_id}{ENDING}"}
            for r in records
        ],
        "test": [f"./imagesTs/{s.scan_id}{ENDING}" for s in scans],
    }


# ------------------------------------------------------------------------ import
@dataclass(frozen=True)
class RawDataset:
    """What an MSD / nnU-Net raw folder's ``dataset.json`` says, checked against the schema.

    Attributes:
        root: the folder.
        meta: the parsed ``dataset.json``.
        layout: ``"nnunetv2"`` or ``"msd"``.
        labels: label value -> name, background (0) included when the file declares it.
        channel: the one input channel's name (``"CT"``, ``"MRI"``, ``"T2"``, ...), ``None`` if not given.
        pairs: ``(case id, image file, label file)`` of every training case, in file order; every file
            exists.
    """

    root: Path
    meta: dict[str, Any]
    layout: str
    labels: dict[int, str]
    channel: str | None
    pairs: list[tuple[str, Path, Path]]


def read_dataset(src: str | os.PathLike) -> RawDataset:
    """Read and check an MSD / nnU-Net raw dataset folder (nothing is copied).

    Raises:
        StoreNotFoundError: ``src`` has no dataset.json.
        StoreError / LabelError: the file does not describe a one-channel dataset of integer labels, or a
            listed image / label file is missing.
    """
    root = Path(src)
    meta = _read_dataset_json(root)
    layout, labels, channel = _labels_and_layout(meta, root / "dataset.json")
    return RawDataset(root, meta, layout, labels, channel, _training_pairs(root, meta, layout))


def _read_dataset_json(src: Path) -> dict[str, Any]:
    path = src / "dataset.json"
    if not path.is_file():
        raise StoreNotFoundError("no dataset.json: not an MSD / nnU-Net raw dataset folder", src)
    from semisam.json_schema import load_json

    return load_json(path, "dataset", error=StoreError)


def _labels_and_layout(meta: dict[str, Any], path: Path) -> tuple[str, dict[int, str], str | None]:
    if "channel_names" in meta:
        channels = meta["channel_names"]
        if len(channels) != 1:
            raise StoreError(
                f"dataset has {len(channels)} input channels {channels}; the store holds one scan per case",
                path,
            )
        labels = {}
        for name, value in meta["labels"].items():
            if not isinstance(value, int):
                raise LabelError(
                    f"label {name!r} is a region {value!r}; only plain integer labels are supported", path
                )
            labels[value] = name
        return "nnunetv2", labels, next(iter(channels.values()))
    modality = meta.get("modality") or {}
    if len(modality) > 1:
        raise StoreError(
            f"dataset has {len(modality)} modalities {modality}; the store holds one scan per case", path
        )
    labels = {}
    for key, name in meta["labels"].items():
        if not str(key).isdigit() or not isinstance(name, str):
            raise LabelError(
                f'labels: MSD labels map a value to a name, e.g. {{"1": "tumour"}}; got {key!r}: {name!r}',
                path,
            )
        labels[int(key)] = name
    return "msd", labels, next(iter(modality.values()), None)


def _training_pairs(src: Path, meta: dict[str, Any], layout: str) -> list[tuple[str, Path, Path]]:
    pairs = []
    if layout == "msd" and isinstance(meta.get("training"), list):
        for entry in meta["training"]:
            image, label = src / entry["image"], src / entry["label"]
            pairs.append((_strip(Path(entry["image"]).name, ""), image, label))
    else:
        ending = meta.get("file_ending", ENDING)
        for image in sorted((src / "imagesTr").glob(f"*{ending}")):
            if image.name.startswith("."):  # macOS "._x.nii.gz" resource forks ship inside MSD tarballs
                continue
            stem = image.name[: -len(ending)]
            if layout == "nnunetv2" and not stem.endswith(CHANNEL):
                raise StoreError(f"image name does not end in {CHANNEL}{ending} (nnU-Net v2 naming)", image)
            case_id = stem[: -len(CHANNEL)] if layout == "nnunetv2" else stem
            pairs.append((case_id, image, src / "labelsTr" / f"{case_id}{ending}"))
    for case_id, image, label in pairs:
        check_id(case_id)
        for p in (image, label):
            if not p.is_file():
                raise StoreError(f"case {case_id!r}: file is missing", p)
    return pairs


def _strip(name: str, channel: str) -> str:
    stem = name[: -len(ENDING)] if name.endswith(ENDING) else Path(name).stem
    return stem[: -len(channel)] if channel and stem.endswith(channel) else stem


def _test_images(src: Path, layout: str) -> list[tuple[str, Path]]:
    folder = src / "imagesTs"
    if not folder.is_dir():
        return []
    channel = CHANNEL if layout == "nnunetv2" else ""
    return [(_strip(p.name, channel), p) for p in sorted(folder.iterdir()) if not p.name.startswith(".")]


def import_dataset(src: str | os.PathLike, store_root: str | os.PathLike) -> LabeledStore:
    """Import an MSD / nnU-Net raw dataset folder into the store at ``store_root`` (created if missing).

    Raises:
        StoreNotFoundError: ``src`` has no dataset.json.
        LabelError: a dataset label value has another name in the existing store.
        CaseExistsError: case ids already in the store (nothing is imported then).
    """
    raw = read_dataset(src)
    src, meta, labels, modality, pairs = raw.root, raw.meta, raw.labels, raw.channel, list(raw.pairs)
    tests = _test_images(src, raw.layout)
    order = {sid: n for n, sid in enumerate((meta.get("semisam") or {}).get("unlabeled") or [])}
    tests.sort(key=lambda t: (order.get(t[0], len(order)), t[0]))
    semisam = meta.get("semisam") or {}
    info = semisam.get("cases") or {}
    splits = _splits(src, semisam)

    root = Path(store_root)
    if _inside(root, src) or _inside(src, root):
        raise StoreError(f"the store folder and the dataset folder {src} overlap; use separate folders", root)
    pairs.sort(key=lambda p: (info.get(p[0], {}).get("seq", 1 << 30), p[0]))
    table = {k: v for k, v in labels.items() if k != 0}
    job = (src, meta, pairs, tests, info, splits, modality)
    if (root / "semisam_store.json").exists():
        store = LabeledStore(root)
        with store.lock:  # one import at a time; a failure takes back everything it added
            try:
                _import_into_existing(store, table, job)
            except (CaseExistsError, LabelError):
                raise  # refused before anything was written; their messages say so
            except ValueError as exc:
                raise StoreError(f"{exc}; nothing imported (the store is as it was)") from exc
        return store
    # A new store is assembled in a hidden folder beside ROOT and appears by one rename when complete.
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise StoreError("folder is not empty and holds no store; import into a new or empty folder", root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = _fs.tmp_name(root.parent, root.name)
    try:
        store = LabeledStore.create(staging, table, modality=modality, name=meta.get("name") or root.name)
        _add_all(store, job)
        if root.exists():
            root.rmdir()  # the empty folder the user named
        _fs.commit_dir(staging, root)
    except ValueError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreError(f"{exc}; nothing imported (no store was created)") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return LabeledStore(root)


def _import_into_existing(store: LabeledStore, table: dict[int, str], job) -> None:
    """Import ``job`` into an open store (lock held); on any failure remove what was added and restore
    the label table, so the store is exactly as before and a corrected re-import is not refused."""
    src, meta, pairs, tests, *_ = job
    clash = sorted({c for c, _, _ in pairs} & set(store.case_ids()))
    clash += sorted({s for s, _ in tests} & {r.scan_id for r in store.unlabeled()})
    if clash:
        raise CaseExistsError(
            f"ids already in the store: {', '.join(clash[:10])}; nothing imported", store.root
        )
    from semisam.store.labeled import STORE_FILE

    meta_before = (store.root / STORE_FILE).read_bytes()
    before_cases, before_scans = set(store.case_ids()), {r.scan_id for r in store.unlabeled()}
    try:
        store.declare_labels(table)
        _add_all(store, job)
    except BaseException:
        for cid in sorted(set(store.case_ids()) - before_cases):
            _remove_dir(store.case_dir(cid))
        for sid in sorted({r.scan_id for r in store.unlabeled()} - before_scans):
            store.remove_unlabeled(sid)
        _fs.atomic_write_bytes(store.root / STORE_FILE, meta_before)
        store.meta = json.loads(meta_before)
        raise


def _remove_dir(folder: Path) -> None:
    """Hide a folder by one rename (readers stop seeing it at once), then delete it."""
    hidden = _fs.tmp_name(folder.parent, folder.name)
    os.rename(folder, hidden)
    _fs.fsync_dir(folder.parent)
    _fs.remove_path(hidden)


def _add_all(store: LabeledStore, job) -> None:
    src, meta, pairs, tests, info, splits, modality = job
    tool = f"import:{meta.get('name') or src.name}"
    for case_id, image, label in pairs:
        extra = info.get(case_id, {})
        prov = Provenance.from_json(extra["provenance"]) if "provenance" in extra else Provenance(tool=tool)
        store.add_case(
            image,
            label,
            prov,
            case_id=case_id,
            split=splits.get(case_id),
            modality=extra.get("modality") or modality,
        )
    for scan_id, image in tests:
        store.add_unlabeled(image, scan_id=scan_id, modality=modality)
    log.info("imported %d cases and %d unlabeled scans from %s", len(pairs), len(tests), src)


def _splits(src: Path, semisam: dict[str, Any]) -> dict[str, str]:
    cases = semisam.get("cases") or {}
    if cases:
        return {cid: c["split"] for cid, c in cases.items() if c.get("split") in ("train", "validation")}
    path = src / "splits_final.json"
    if not path.is_file():
        return {}
    from semisam.json_schema import load_json

    folds = load_json(path, "splits_final", error=StoreError)
    try:
        fold = folds[0]
        return {**{c: "train" for c in fold["train"]}, **{c: "validation" for c in fold["val"]}}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise StoreError(f"splits_final.json cannot be read as nnU-Net folds: {exc}", path) from exc
