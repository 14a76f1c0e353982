"""The development-dataset builder: MSD layout that `semisam store import` reads, deterministic per seed."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, SHARED_DATA

_spec = importlib.util.spec_from_file_location(
    "dev_datasets", REPO / "Testing" / "benchmarks" / "dev_datasets.py"
)
dev_datasets = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("dev_datasets", dev_datasets)  # dataclasses look their module up there
_spec.loader.exec_module(dev_datasets)


@pytest.fixture(scope="module")
def data_dir():
    if not (SHARED_DATA / "ch2.nii.gz").is_file() or not (SHARED_DATA / "aal_dev.nii.gz").is_file():
        pytest.skip(f"Colin27 ch2.nii.gz + aal_dev.nii.gz not in {SHARED_DATA} (development data)")
    return SHARED_DATA


def test_build_is_deterministic_and_imports_into_a_store(tmp_path, data_dir):
    from semisam.store import LabeledStore
    from semisam.store.decathlon import import_dataset

    a = dev_datasets.build("pallidum", tmp_path / "a", n_cases=2, seed=3, data=data_dir)
    b = dev_datasets.build("pallidum", tmp_path / "b", n_cases=1, seed=3, data=data_dir)
    c = dev_datasets.build("pallidum", tmp_path / "c", n_cases=1, seed=4, data=data_dir)
    meta = json.loads((a / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "pallidum"} and meta["numTraining"] == 2
    img_a = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "imagesTr" / "pallidum_000.nii.gz")))
    img_b = sitk.GetArrayFromImage(sitk.ReadImage(str(b / "imagesTr" / "pallidum_000.nii.gz")))
    img_c = sitk.GetArrayFromImage(sitk.ReadImage(str(c / "imagesTr" / "pallidum_000.nii.gz")))
    np.testing.assert_array_equal(img_a, img_b)  # same seed, same subject
    assert img_a.shape != img_c.shape or not np.array_equal(img_a, img_c)  # another seed, another subject
    lab = sitk.ReadImage(str(a / "labelsTr" / "pallidum_001.nii.gz"))
    arr = sitk.GetArrayFromImage(lab)
    assert set(np.unique(arr)) == {0, 1} and 500 < arr.sum() < 6000  # both pallida, ~2-4.5 cm^3 at t mm
    assert lab.GetSpacing()[:2] == (1.0, 1.0) and lab.GetSpacing()[2] in dev_datasets.THICKNESS_MM
    store = import_dataset(a, tmp_path / "store")
    assert isinstance(store, LabeledStore) and len(store.case_ids()) == 2


def test_unknown_task_and_existing_folder_are_clear_errors(tmp_path, data_dir):
    with pytest.raises(KeyError, match="unknown task 'hippocampus'"):
        dev_datasets.build("hippocampus", tmp_path, 2)
    (tmp_path / "thalamus").mkdir()
    (tmp_path / "thalamus" / "x").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        dev_datasets.build("thalamus", tmp_path, 2, data=data_dir)
    assert (tmp_path / "thalamus" / "x").read_text() == "keep me"


def test_lung_lesion_task_puts_a_lesion_brighter_than_parenchyma_into_real_ct(tmp_path):
    if not (SHARED_DATA / "lung1_image.nrrd").is_file():
        pytest.skip(f"lung1_image.nrrd not in {SHARED_DATA} (development data)")
    a = dev_datasets.build("lung_subsolid", tmp_path / "a", n_cases=2, seed=5, data=SHARED_DATA)
    b = dev_datasets.build("lung_subsolid", tmp_path / "b", n_cases=1, seed=5, data=SHARED_DATA)
    meta = json.loads((a / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"} and meta["dev_dataset"]["hard"] is True
    lo, hi = meta["dev_dataset"]["lesion_hu"]
    for i in range(2):
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "imagesTr" / f"lung_subsolid_00{i}.nii.gz")))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "labelsTr" / f"lung_subsolid_00{i}.nii.gz")))
        assert lab.any() and set(np.unique(lab)) == {0, 1}
        inside = float(np.median(img[lab > 0]))
        ring = dev_datasets.ndi.binary_dilation(lab > 0, iterations=3) & (lab == 0) & (img < -500)
        # the lesion's level (plus noise and the vessels that show through it) above the parenchyma
        assert lo - 120 < inside < hi + 200 and inside > float(np.median(img[ring])) + 100
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "imagesTr" / "lung_subsolid_000.nii.gz")))
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(b / "imagesTr" / "lung_subsolid_000.nii.gz")))
    np.testing.assert_array_equal(first, again)
    # the scan's own nodule is filled with parenchyma and no lesion is placed on its site
    ct, dist, _, _ = dev_datasets.dev_lesions.load_lung(SHARED_DATA.resolve())
    nodule = sitk.GetArrayFromImage(sitk.ReadImage(str(SHARED_DATA / "lung1_label.nrrd"))) > 0
    assert float(ct[nodule].max()) < -600 and not dist[nodule].any()


def test_lung_lesion_case_lies_where_its_geometry_says_in_the_source_ct(tmp_path, monkeypatch):
    """With the deformation and noise off, the case's voxels away from the lesion are the source CT
    resampled onto the case's own origin, spacing and direction (so a mask drawn on it lands right)."""
    if not (SHARED_DATA / "lung1_image.nrrd").is_file():
        pytest.skip(f"lung1_image.nrrd not in {SHARED_DATA} (development data)")
    lesions = dev_datasets.dev_lesions
    for name, value in (("ROT_DEG", 0.0), ("SCALE", 0.0), ("ELASTIC_MM", 0.0), ("NOISE_HU", (0.0, 0.0))):
        monkeypatch.setattr(lesions, name, value)
    monkeypatch.setattr(lesions, "THICKNESS_MM", (1.5,))  # Z: a 2-slice running mean, 0.5 mm off centre
    case = dev_datasets.build("lung_solid", tmp_path, n_cases=1, seed=2, data=SHARED_DATA)
    img = sitk.ReadImage(str(case / "imagesTr" / "lung_solid_000.nii.gz"))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "labelsTr" / "lung_solid_000.nii.gz")))
    ct, _, _, scan = lesions.load_lung(SHARED_DATA.resolve())
    src = sitk.GetImageFromArray(ct)
    src.CopyInformation(scan)
    away = ~dev_datasets.ndi.binary_dilation(lab > 0, iterations=4)
    out = sitk.GetArrayFromImage(img).astype(np.float32)

    def error(shift_mm: float) -> float:
        ref = sitk.Image(img)
        ref.SetOrigin(tuple(np.array(img.GetOrigin()) + np.array([shift_mm, 0.0, 0.0])))
        resampled = sitk.GetArrayFromImage(
            sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, -1000.0)
        )
        return float(np.median(np.abs(out - resampled)[away]))

    assert error(0.0) < 15.0, error(0.0)  # HU: int16 rounding and the 0.5 mm Z offset of the slice mean
    assert error(4.0) > 3 * max(error(0.0), 5.0)  # 4 mm off is clearly worse: the check can fail


def _read(folder, name):
    img = sitk.ReadImage(str(folder / "imagesTr" / f"{name}.nii.gz"))
    lab = sitk.ReadImage(str(folder / "labelsTr" / f"{name}.nii.gz"))
    return img, lab


def _on(moving: sitk.Image, grid: sitk.Image, shift_mm: float = 0.0) -> np.ndarray:
    """``moving`` resampled (linear, float32) onto ``grid``, optionally shifted ``shift_mm`` along X."""
    ref = sitk.Image(grid)
    ref.SetOrigin(tuple(np.array(grid.GetOrigin()) + np.array([shift_mm, 0.0, 0.0])))
    return sitk.GetArrayFromImage(
        sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    )


def test_whole_scan_case_is_its_cropped_twin_on_the_whole_head(tmp_path, data_dir):
    """``whole=True``: the same subject on the Colin27 field of view; the crop is a block of its voxels."""
    crop = dev_datasets.build("thalamus", tmp_path, n_cases=1, seed=1, data=data_dir)
    whole = dev_datasets.build("thalamus", tmp_path, n_cases=1, seed=1, data=data_dir, whole=True)
    assert (crop.name, whole.name) == ("thalamus", "thalamus_whole")
    meta = json.loads((whole / "dataset.json").read_text())
    assert meta["name"] == "dev_thalamus_whole" and meta["dev_dataset"]["whole"] is True
    assert "whole" not in json.loads((crop / "dataset.json").read_text())["dev_dataset"]
    c_img, c_lab = _read(crop, "thalamus_000")
    w_img, w_lab = _read(whole, "thalamus_whole_000")
    atlas = sitk.ReadImage(str(data_dir / "ch2.nii.gz"))
    t = c_img.GetSpacing()[2]

    # the grid: the atlas's 181 x 217 mm in-plane at 1 mm, its first to last slice every t mm
    assert w_img.GetSpacing() == (1.0, 1.0, t) and w_img.GetDirection() == atlas.GetDirection()
    assert w_img.GetSize()[:2] == atlas.GetSize()[:2] == (181, 217)
    first = np.array(atlas.TransformPhysicalPointToContinuousIndex(w_img.GetOrigin()))
    corner = w_img.TransformIndexToPhysicalPoint([s - 1 for s in w_img.GetSize()])
    last = np.array(atlas.TransformPhysicalPointToContinuousIndex(corner))
    top = atlas.GetSize()[2] - 1
    assert np.all(np.abs(first[:2]) <= 0.5) and -0.5 <= first[2] < t + 0.5, first
    assert np.all(np.abs(last[:2] - (180, 216)) <= 0.5) and top - t - 0.5 < last[2] <= top + 0.5, last
    head = np.nonzero(sitk.GetArrayFromImage(w_img) > 100)  # the head reaches far beyond the crop's box
    assert np.ptp(head[2]) > 140 and np.ptp(head[1]) > 170, (np.ptp(head[2]), np.ptp(head[1]))

    # the same structure: its voxel count (same voxel size) and its place
    c_arr, w_arr = sitk.GetArrayFromImage(c_lab), sitk.GetArrayFromImage(w_lab)
    assert abs(int(w_arr.sum()) - int(c_arr.sum())) <= 0.02 * c_arr.sum(), (w_arr.sum(), c_arr.sum())
    on_crop = _on(w_lab, c_lab) >= 0.5
    assert 2 * (on_crop & (c_arr > 0)).sum() / (on_crop.sum() + c_arr.sum()) > 0.99

    # the crop's voxels are the whole case's (resampling lands on them to ~1e-3 voxel): equal up to int16
    # rounding, but on the crop's first and last slices (its slice profile's running mean stops at its edge)
    diff = np.abs(_on(w_img, c_img) - sitk.GetArrayFromImage(c_img))[1:-1]
    assert np.median(diff) < 0.01 and np.mean(diff <= 1.01) > 0.999, np.percentile(diff, [50, 99, 100])
    shifted = np.abs(_on(w_img, c_img, 1.0) - sitk.GetArrayFromImage(c_img))[1:-1]
    assert np.mean(shifted <= 1.01) < 0.5  # a grid 1 mm off fails it


@pytest.mark.slow
def test_whole_scan_lesion_case_is_its_cropped_twin_on_the_whole_chest_ct(tmp_path, monkeypatch):
    """``whole=True`` for a lung task: lung1's in-plane grid, its Z extent at the case's thickness; without
    noise (the only thing drawn anew) the crop is the whole case resampled onto its grid."""
    if not (SHARED_DATA / "lung1_image.nrrd").is_file():
        pytest.skip(f"lung1_image.nrrd not in {SHARED_DATA} (development data)")
    monkeypatch.setattr(dev_datasets.dev_lesions, "NOISE_HU", (0.0, 0.0))
    crop = dev_datasets.build("lung_solid", tmp_path, n_cases=1, seed=0, data=SHARED_DATA)
    whole = dev_datasets.build("lung_solid", tmp_path, n_cases=1, seed=0, data=SHARED_DATA, whole=True)
    c_img, c_lab = _read(crop, "lung_solid_000")
    w_img, w_lab = _read(whole, "lung_solid_whole_000")
    ct = sitk.ReadImage(str(SHARED_DATA / "lung1_image.nrrd"))
    t = c_img.GetSpacing()[2]
    assert w_img.GetSize()[:2] == ct.GetSize()[:2] and w_img.GetSpacing() == (*ct.GetSpacing()[:2], t)
    first = np.array(ct.TransformPhysicalPointToContinuousIndex(w_img.GetOrigin()))
    corner = w_img.TransformIndexToPhysicalPoint([s - 1 for s in w_img.GetSize()])
    last = np.array(ct.TransformPhysicalPointToContinuousIndex(corner))
    sz, top = ct.GetSpacing()[2], ct.GetSize()[2] - 1
    assert np.allclose(first[:2], 0.0, atol=1e-3) and 0.0 <= first[2] * sz < t + 1.0, first
    assert np.allclose(last[:2], 511.0, atol=1e-3) and top - (t + 1.0) / sz < last[2] <= top + 1e-3, last

    # the same lesion: its volume in mm^3, its place
    vol = [float(sitk.GetArrayFromImage(lab).sum()) * np.prod(lab.GetSpacing()) for lab in (c_lab, w_lab)]
    assert abs(vol[1] - vol[0]) < 0.05 * vol[0], vol
    c_arr = sitk.GetArrayFromImage(c_lab) > 0
    on_crop = _on(w_lab, c_lab) >= 0.5
    assert 2 * (on_crop & c_arr).sum() / (on_crop.sum() + c_arr.sum()) > 0.9

    # HU: the whole case (0.57 mm) resampled onto the crop's 1 mm grid, inside slices
    diff = np.abs(_on(w_img, c_img) - sitk.GetArrayFromImage(c_img))[1:-1]
    shifted = np.abs(_on(w_img, c_img, 4.0) - sitk.GetArrayFromImage(c_img))[1:-1]
    assert np.median(diff) < 3.0 and np.percentile(diff, 95) < 30.0, np.percentile(diff, [50, 95, 100])
    assert np.median(shifted) > 3 * max(np.median(diff), 3.0)  # 4 mm off is clearly worse
