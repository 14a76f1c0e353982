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
