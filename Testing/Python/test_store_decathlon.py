"""Export to / import from the MSD and nnU-Net v2 raw layouts: images, masks and splits round-trip exactly."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest

from semisam.scan.volume import write_mask, write_volume
from semisam.store import CaseExistsError, EmptyStoreError, LabeledStore, Provenance, StoreError, drill
from semisam.store.decathlon import export_dataset, import_dataset, read_dataset


@pytest.fixture
def filled(tmp_path):
    """A store with 11 cases (2 in validation), one edited mask, two labels and two unlabeled scans."""
    store = LabeledStore.create(tmp_path / "a", {1: "lesion", 2: "edema"}, modality="MR")
    for n in range(11):
        image, mask = drill.synthetic_case(f"d{n}")
        if n % 2:
            mask = mask * 2
        store.add_case(
            image, mask, Provenance(annotator=f"r{n % 3}", prompts={"box": n}), case_id=f"pt{n:03d}"
        )
    store.replace_mask("pt004", np.roll(store.read_case("pt004").mask.array, 2, axis=1))
    for n in range(2):
        store.add_unlabeled(drill.synthetic_case(f"u{n}")[0])
    return store


def _assert_same_store(a: LabeledStore, b: LabeledStore) -> None:
    ra, rb = a.cases(), b.cases()
    assert [r.case_id for r in ra] == [r.case_id for r in rb], "case ids and order"
    assert [r.split for r in ra] == [r.split for r in rb], "splits"
    assert a.validation_ids() == b.validation_ids() and a.labels == b.labels and a.modality == b.modality
    for x, y in zip(ra, rb, strict=True):
        cx, cy = a.read_case(x.case_id), b.read_case(y.case_id)
        assert np.array_equal(cx.image.array, cy.image.array) and cx.image.array.dtype == cy.image.array.dtype
        assert cx.image.spacing == cy.image.spacing and cx.image.origin == cy.image.origin
        assert np.array_equal(cx.image.direction, cy.image.direction)
        assert np.array_equal(cx.mask.array, cy.mask.array)
        assert x.provenance.to_json() == y.provenance.to_json() and x.labels == y.labels
    assert [s.scan_id for s in a.unlabeled()] == [s.scan_id for s in b.unlabeled()]
    for s in a.unlabeled():
        assert np.array_equal(a.read_unlabeled(s.scan_id).array, b.read_unlabeled(s.scan_id).array)


@pytest.mark.parametrize("layout", ["nnunetv2", "msd"])
def test_read_dataset_lists_cases_labels_and_channel_of_both_layouts(filled, tmp_path, layout):
    out = export_dataset(filled, tmp_path / "Dataset002_Read", layout=layout)
    raw = read_dataset(out)
    assert raw.layout == layout and raw.channel == "MR"
    assert {k: v for k, v in raw.labels.items() if k} == {1: "lesion", 2: "edema"}
    assert sorted(c for c, _, _ in raw.pairs) == sorted(r.case_id for r in filled.cases())
    assert all(image.is_file() and label.is_file() for _, image, label in raw.pairs)
    (out / "labelsTr" / f"{raw.pairs[0][0]}.nii.gz").unlink()
    with pytest.raises(StoreError, match="file is missing"):
        read_dataset(out)


@pytest.mark.parametrize("layout", ["nnunetv2", "msd"])
def test_export_import_round_trip_is_exact(filled, tmp_path, layout):
    out = export_dataset(filled, tmp_path / "Dataset001_Test", layout=layout)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 11
    names = sorted(p.name for p in (out / "imagesTr").iterdir())
    if layout == "nnunetv2":
        assert (
            meta["labels"] == {"background": 0, "lesion": 1, "edema": 2} and meta["file_ending"] == ".nii.gz"
        )
        assert names[0] == "pt000_0000.nii.gz" and meta["channel_names"] == {"0": "MR"}
    else:
        assert (
            meta["labels"] == {"0": "background", "1": "lesion", "2": "edema"} and names[0] == "pt000.nii.gz"
        )
        assert meta["training"][0] == {"image": "./imagesTr/pt000.nii.gz", "label": "./labelsTr/pt000.nii.gz"}
    folds = json.loads((out / "splits_final.json").read_text())
    assert folds == [{"train": filled.train_ids(), "val": ["pt004", "pt009"]}]
    assert len(list((out / "imagesTs").iterdir())) == 2

    b = import_dataset(out, tmp_path / "b")
    _assert_same_store(filled, b)
    # Export of the imported store reproduces every file byte for byte.
    again = export_dataset(b, tmp_path / "again", layout=layout)
    cmp = filecmp.dircmp(out, again)
    files = [f for sub in ("imagesTr", "labelsTr", "imagesTs") for f in sorted((out / sub).iterdir())]
    match, mismatch, errors = filecmp.cmpfiles(
        out, again, [str(f.relative_to(out)) for f in files], shallow=False
    )
    assert not mismatch and not errors and len(match) == 11 + 11 + 2
    assert filecmp.cmp(out / "splits_final.json", again / "splits_final.json", shallow=False)
    assert not cmp.left_only and not cmp.right_only


def test_import_plain_nnunet_dataset_uses_splits_final_and_then_the_rule(tmp_path):
    """A dataset made by another tool: no "semisam" section; fold 0 of splits_final.json gives the split."""
    src = tmp_path / "Dataset002_Plain"
    for sub in ("imagesTr", "labelsTr"):
        (src / sub).mkdir(parents=True)
    for n in range(4):
        image, mask = drill.synthetic_case(f"p{n}")
        write_volume(image, src / "imagesTr" / f"case{n}_0000.nii.gz")
        write_mask(mask, image, src / "labelsTr" / f"case{n}.nii.gz")
    (src / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "tumor": 1},
                "numTraining": 4,
                "file_ending": ".nii.gz",
                "name": "Plain",
            }
        )
    )
    (src / "splits_final.json").write_text(
        json.dumps([{"train": ["case0", "case1", "case3"], "val": ["case2"]}])
    )
    store = import_dataset(src, tmp_path / "s")
    assert store.labels == {0: "background", 1: "tumor"} and store.modality == "CT"
    assert store.validation_ids() == ["case2"]
    assert store.record("case0").provenance.tool == "import:Plain"
    # Importing again would duplicate ids: refused before anything is written.
    with pytest.raises(CaseExistsError, match="case0"):
        import_dataset(src, tmp_path / "s")
    assert len(store.cases()) == 4
    # Cases added later follow the store's rule, counting the imported validation case.
    image, mask = drill.synthetic_case("later")
    assert [store.add_case(image, mask).split for _ in range(6)] == ["train"] * 5 + ["validation"]


def test_export_and_import_errors(tmp_path, filled):
    empty = LabeledStore.create(tmp_path / "empty", {1: "lesion"})
    with pytest.raises(EmptyStoreError):
        export_dataset(empty, tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("")
    with pytest.raises(StoreError, match="not empty"):
        export_dataset(filled, tmp_path / "full")
    with pytest.raises(StoreError, match="no dataset.json"):
        import_dataset(tmp_path / "full", tmp_path / "s")
    multi = tmp_path / "multi"
    multi.mkdir()
    (multi / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0}})
    )
    with pytest.raises(StoreError, match="2 input channels"):
        import_dataset(multi, tmp_path / "s")
    out = export_dataset(filled, tmp_path / "ok")
    (out / "labelsTr" / "pt003.nii.gz").unlink()
    with pytest.raises(StoreError, match="pt003.*missing"):
        import_dataset(out, tmp_path / "s2")
    assert not (tmp_path / "s2" / "cases").exists() or not LabeledStore(tmp_path / "s2").cases()
