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
