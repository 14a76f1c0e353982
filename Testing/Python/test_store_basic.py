"""LabeledStore: cases, provenance, mask history, unlabeled pool, the fixed split, clear errors, moving."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from semisam.scan.volume import (
    GeometryMismatchError,
    Volume,
    read_mask,
    read_volume,
    write_mask,
    write_volume,
)
from semisam.store import (
    CaseExistsError,
    CaseNotFoundError,
    EmptyStoreError,
    LabeledStore,
    LabelError,
    Provenance,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
    drill,
)


@pytest.fixture
def store(tmp_path):
    return LabeledStore.create(tmp_path / "store", {1: "lesion", 2: "edema"}, modality="CT")


def _case(key="x"):
    return drill.synthetic_case(key)


def test_add_read_and_provenance(store):
    image, mask = _case("a")
    proposal = np.zeros_like(mask)
    proposal[mask > 0] = 1
    proposal[0, 0, :4] = 1  # 4 false-positive voxels on top of 125 true ones
    prov = Provenance(
        annotator="JD",
        started="2026-01-02T10:00:00Z",
        finished="2026-01-02T10:01:30Z",
        prompts={"box": 1, "point+": 2},
        model_version="v0003",
    )
    rec = store.add_case(image, mask, prov, proposal=proposal)
    assert rec.case_id == "case_0001" and rec.seq == 1 and rec.split == "train"
    assert rec.labels == {"1": 125} and rec.shape_zyx == [16, 32, 32]
    got = store.read_case("case_0001")
    assert np.array_equal(got.image.array, image.array) and got.image.same_grid(image)
    assert np.array_equal(got.mask.array, mask) and got.mask.array.dtype == np.uint8
    p = got.record.provenance
    assert (p.annotator, p.n_prompts, p.seconds, p.model_version) == ("JD", 3, 90.0, "v0003")
    assert p.proposal_dice == pytest.approx(2 * 125 / (129 + 125), abs=1e-6)
    # A person can read the record without semisam.
    on_disk = json.loads((store.case_dir("case_0001") / "case.json").read_text())
    assert on_disk["provenance"]["prompts"] == {"box": 1, "point+": 2} and on_disk["split"] == "train"
    assert on_disk["image"] == "image.nii.gz"


def test_add_from_files_and_replace_mask_keeps_history(store, tmp_path):
    image, mask = _case("b")
    write_volume(image, tmp_path / "img.nrrd")
    write_mask(mask, image, tmp_path / "msk.nrrd")
    store.add_case(tmp_path / "img.nrrd", tmp_path / "msk.nrrd", case_id="patient-7")
    first = store.read_case("patient-7").mask.array
    edited = first.copy()
    edited[edited == 1] = 2
    rec = store.replace_mask("patient-7", edited, Provenance(annotator="KL", notes="relabelled"))
    assert rec.mask_revision == 2 and rec.labels == {"2": 125}
    assert [h.revision for h in rec.history] == [1] and rec.history[0].provenance.annotator is None
    assert np.array_equal(store.read_case("patient-7").mask.array, edited)
    old = read_mask(store.case_dir("patient-7") / rec.history[0].file)
    assert np.array_equal(old.array, first)
    rec3 = store.replace_mask("patient-7", first)
    assert rec3.mask_revision == 3 and [h.file for h in rec3.history] == ["mask.nii.gz", "mask.r2.nii.gz"]
    assert store.check(deep=True) == []


def test_clear_errors(store, tmp_path):
    image, mask = _case("c")
    shifted = Volume(mask, image.spacing, (image.origin[0] + 1.0, *image.origin[1:]), image.direction)
    with pytest.raises(GeometryMismatchError, match="origin"):
        store.add_case(image, shifted)
    with pytest.raises(GeometryMismatchError, match=r"\(Z, Y, X\)"):
        store.add_case(image, mask[:-1])
    bad = mask.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(LabelError, match=r"\[7\] not declared.*1=lesion"):
        store.add_case(image, bad)
    with pytest.raises(LabelError, match="non-integer"):
        store.add_case(image, mask * 0.5)
    assert store.cases() == []  # nothing was half-added
    with pytest.raises(EmptyStoreError, match="no labeled cases"):
        store.require_cases()
    with pytest.raises(CaseNotFoundError, match="no case 'nope'"):
        store.read_case("nope")
    store.add_case(image, mask, case_id="c1")
    with pytest.raises(CaseExistsError, match="'c1' already exists"):
        store.add_case(image, mask, case_id="c1")
    with pytest.raises(CaseExistsError, match="'C1' already exists"):  # one folder on macOS / Windows
        store.add_case(image, mask, case_id="C1")
    with pytest.raises(ValueError, match="invalid case id"):
        store.add_case(image, mask, case_id="../escape")
    with pytest.raises(ValueError, match="split must be one of"):
        store.add_case(image, mask, split="test")
    with pytest.raises(ValueError, match="before started"):
        Provenance(started="2026-01-02T10:00:00Z", finished="2026-01-01T10:00:00Z")
    store.declare_labels({7: "other"})
    assert store.add_case(image, bad).labels == {"1": 125, "7": 1}
    with pytest.raises(LabelError, match="renaming"):
        store.declare_labels({1: "tumour"})


def test_open_errors(tmp_path, store):
    with pytest.raises(StoreNotFoundError, match="no such store folder"):
        LabeledStore(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreNotFoundError, match="not a SemiSAM store"):
        LabeledStore(tmp_path / "plain")
    with pytest.raises(StoreExistsError, match="already exists"):
        LabeledStore.create(store.root, {1: "lesion"})
    (tmp_path / "plain" / "x.txt").write_text("x")
    with pytest.raises(StoreExistsError, match="not empty"):
        LabeledStore.create(tmp_path / "plain", {1: "lesion"})
    with pytest.raises(LabelError, match="background"):
        LabeledStore.create(tmp_path / "new", {0: "air", 1: "lesion"})
    meta_path = store.root / "semisam_store.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreFormatError, match="format version 99 .* newer semisam"):
        LabeledStore(store.root)
    meta_path.write_text("{not json")
    with pytest.raises(StoreFormatError, match="cannot be read"):
        LabeledStore(store.root)


def test_open_or_create(tmp_path):
    a = LabeledStore.open_or_create(tmp_path / "s", {1: "lesion"}, modality="MR")
    b = LabeledStore.open_or_create(tmp_path / "s", {1: "lesion"})
    assert a.root == b.root and b.modality == "MR"
    with pytest.raises(LabelError, match="not {1: 'tumour'}"):
        LabeledStore.open_or_create(tmp_path / "s", {1: "tumour"})


def test_split_of_existing_cases_unchanged_after_adding_20_more(store):
    image, mask = _case("s")
    for _ in range(13):
        store.add_case(image, mask)
    before = {r.case_id: r.split for r in store.cases()}
    assert sum(s == "validation" for s in before.values()) == 13 // 5
    for _ in range(20):
        store.add_case(image, mask)
    after = {r.case_id: r.split for r in store.cases()}
    assert {k: after[k] for k in before} == before
    assert sum(s == "validation" for s in after.values()) == 33 // 5  # about a fifth, exactly floor(n/5)
    # Reopening (a new process, a retrain) reads the same split; nothing recomputes it.
    assert {r.case_id: r.split for r in LabeledStore(store.root).cases()} == after


def test_next_split_announces_the_split_the_next_case_gets(store):
    image, mask = _case("n")
    for _ in range(11):
        announced = store.next_split()
        assert store.add_case(image, mask).split == announced
    assert [r.split for r in store.cases()].count("validation") == 2
    store.add_case(image, mask, split="validation")  # an explicit one counts: the 15th is then train
    assert [store.next_split() for _ in range(1)] == ["train"]


def test_explicit_splits_count_towards_the_fifth(store):
    image, mask = _case("e")
    for _ in range(3):
        store.add_case(image, mask, split="validation")
    splits = [store.add_case(image, mask).split for _ in range(12)]
    # 3 held out already cover n // 5 up to n = 15, so the rule adds none.
    assert splits == ["train"] * 12 and len(store.validation_ids()) == 3


def test_unlabeled_copy_and_reference(store, tmp_path):
    image, _ = _case("u")
    ref = write_volume(image, tmp_path / "elsewhere.nii.gz")
    a = store.add_unlabeled(image)
    b = store.add_unlabeled(ref, copy=False, scan_id="remote")
    assert (a.scan_id, a.image, a.reference) == ("scan_0001", "image.nii.gz", None)
    assert b.image is None and b.reference == str(ref.resolve())
    for sid in ("scan_0001", "remote"):
        assert np.array_equal(store.read_unlabeled(sid).array, image.array)
    with pytest.raises(CaseExistsError):
        store.add_unlabeled(image, scan_id="remote")
    ref.unlink()
    assert any("remote" in p and "missing" in p for p in store.check())


def test_labeling_a_pool_scan_moves_it_out_of_the_pool(store):
    image, mask = _case("pool")
    store.add_unlabeled(image, scan_id="s1")
    store.add_unlabeled(image, scan_id="s2")
    started = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    prov = Provenance(started=started, finished=started + timedelta(seconds=42))
    rec = store.add_case(None, mask, prov, from_unlabeled="s1")
    assert rec.unlabeled_id == "s1" and rec.provenance.seconds == 42.0
    assert [s.scan_id for s in store.unlabeled()] == ["s2"]
    assert np.array_equal(store.read_case(rec.case_id).image.array, image.array)
    with pytest.raises(CaseNotFoundError, match="no unlabeled scan 's1'"):
        store.add_case(None, mask, from_unlabeled="s1")
    # Killed between the case commit and the removal: the scan is in both places until `check --clean`.
    shutil.copytree(store.root / "unlabeled" / "s2", store.root / "unlabeled" / "s1")
    assert any("labeled as case case_0001" in p for p in store.check())
    assert store.check(clean=True) == [] and [s.scan_id for s in store.unlabeled()] == ["s2"]


def test_store_survives_being_moved(store, tmp_path):
    image, mask = _case("m")
    for _ in range(6):
        store.add_case(image, mask)
    store.replace_mask("case_0002", np.roll(mask, 1, axis=0))
    store.add_unlabeled(image)
    old_root = store.root.resolve()
    moved = tmp_path / "elsewhere" / "renamed-store"
    moved.parent.mkdir()
    shutil.move(store.root, moved)
    for f in moved.rglob("*.json"):
        assert str(old_root) not in f.read_text(), f"{f} holds an absolute path into the old location"
    s2 = LabeledStore(moved)
    assert len(s2.cases()) == 6 and s2.validation_ids() == ["case_0005"]
    assert np.array_equal(s2.read_case("case_0002").mask.array, np.roll(mask, 1, axis=0))
    assert np.array_equal(s2.read_unlabeled("scan_0001").array, image.array)
    assert s2.check(deep=True) == []


def test_leftovers_of_a_killed_write_are_hidden_then_cleaned(store):
    image, mask = _case("l")
    store.add_case(image, mask)
    half = store.root / "cases" / ".tmp-case_0002-deadbeef"
    half.mkdir()
    (half / "image.nii.gz").write_bytes(b"partial")
    orphan = store.case_dir("case_0001") / "mask.r2.nii.gz"  # a replace_mask killed before its commit
    orphan.write_bytes(b"partial")
    assert store.case_ids() == ["case_0001"]
    problems = store.check()
    assert len(problems) == 2 and all("leftover" in p for p in problems)
    assert store.check(clean=True) == [] and not half.exists() and not orphan.exists()
    half.mkdir()
    LabeledStore(store.root)  # opening cleans when no writer holds the lock
    assert not half.exists()


def test_lock_is_exclusive_between_objects_and_reentrant(store):
    other = LabeledStore(store.root, clean=False)
    with store.lock:
        with store.lock:  # re-entrant within one object
            assert not other.lock.acquire(blocking=False)
    assert other.lock.acquire(blocking=False)
    other.lock.release()


def test_real_ct_case_round_trips(tmp_path, lung1):
    image = read_volume(lung1.image)
    store = LabeledStore.create(tmp_path / "s", {1: "nodule"}, modality="CT")
    rec = store.add_case(lung1.image, lung1.label, Provenance(annotator="pyradiomics"))
    assert rec.labels == {"1": 837} and rec.source == lung1.image.name
    case = store.read_case(rec.case_id)
    assert np.array_equal(case.image.array, image.array) and case.image.same_grid(image)
    assert np.array_equal(case.mask.array, read_mask(lung1.label, image).array)


def test_store_imports_without_torch():
    """The crash drill's children and light tools must start fast: the store never imports torch."""
    code = "import sys, semisam.store, semisam.store.drill, semisam.store.decathlon; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
