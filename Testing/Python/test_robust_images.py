"""Hostile scans: NaN/inf in every format (NIfTI included: its reader turns them into 0), sheared or
singular directions, constant images, DICOM series with a missing slice, absurd spacings that would
resample to terabytes. Each is one clear line (or a warning), exit 1 from the CLI, inputs unchanged."""

from __future__ import annotations

import locale
import logging
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from robust_helpers import assert_one_line_error, prompts_file, run_cli, sha

from semisam.inference.preprocess import to_model_grid
from semisam.scan.volume import (
    BadDirectionError,
    GridTooLargeError,
    MaskValueError,
    NonFiniteVoxelsError,
    Volume,
    read_mask,
    read_volume,
)


def _with_bad_voxels(dtype=np.float32) -> np.ndarray:
    a = np.zeros((4, 5, 6), dtype)
    a[1, 2, 3] = np.nan
    a[2, 2, 2] = np.inf
    return a


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_voxels_refused_in_every_format(tmp_path, suffix, dtype, capsys):
    path = tmp_path / f"bad{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(_with_bad_voxels(dtype)), str(path))
    before = sha(path)
    with pytest.raises(
        NonFiniteVoxelsError, match=r"2 voxel\(s\) are NaN or infinite \(first at voxel i=3, j=2, k=1\)"
    ):
        read_volume(path)
    with pytest.raises(MaskValueError, match="NaN or infinite"):
        read_mask(path)
    code, _, err = run_cli(capsys, ["info", path])
    assert_one_line_error(code, err, path.name, "NaN or infinite")
    assert sha(path) == before


def test_all_nan_nifti_gets_no_mask(tmp_path, capsys):
    path = tmp_path / "allnan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 16, 16), np.nan, np.float32)), str(path))
    code, _, err = run_cli(
        capsys, ["propagate", path, "--prompts", prompts_file(tmp_path), "--output", tmp_path / "m.nii.gz"]
    )
    assert_one_line_error(code, err, "2048 voxel(s) are NaN or infinite")
    assert not (tmp_path / "m.nii.gz").exists()


def test_nifti_nan_in_header_fields_is_one_line(tmp_path, capsys):
    path = tmp_path / "hdr.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.int16)), str(path))
    raw = bytearray(path.read_bytes())
    raw[108:112] = struct.pack("<f", float("nan"))  # vox_offset
    path.write_bytes(bytes(raw))
    code, _, err = run_cli(capsys, ["info", path])
    assert_one_line_error(code, err, "hdr.nii", "vox_offset")


def test_sheared_direction_is_refused_with_the_fix(tmp_path, capsys):
    img = sitk.GetImageFromArray(np.ones((4, 5, 6), np.int16))
    img.SetDirection((1, 0.3, 0, 0, 1, 0, 0, 0, 1))
    path = tmp_path / "shear.nrrd"
    sitk.WriteImage(img, str(path))
    with pytest.raises(BadDirectionError, match="not orthogonal.*resample the scan onto an orthogonal grid"):
        read_volume(path)
    code, _, err = run_cli(
        capsys, ["propagate", path, "--prompts", prompts_file(tmp_path), "--output", tmp_path / "m.nii.gz"]
    )
    assert_one_line_error(code, err, "shear.nrrd", "not orthogonal")


def test_singular_direction_in_a_nrrd_header(tmp_path, capsys):
    img = sitk.GetImageFromArray(np.ones((4, 5, 6), np.int16))
    path = tmp_path / "flat.nrrd"
    sitk.WriteImage(img, str(path))
    text = path.read_bytes()
    head, sep, body = text.partition(b"\n\n")
    head = b"\n".join(
        b"space directions: (1,0,0) (1,0,0) (0,0,1)" if ln.startswith(b"space directions") else ln
        for ln in head.split(b"\n")
    )
    path.write_bytes(head + sep + body)
    code, _, err = run_cli(capsys, ["info", path])
    assert_one_line_error(code, err, "flat.nrrd")


def test_constant_image_is_warned_about(tmp_path, caplog):
    path = tmp_path / "const.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), 7, np.int16)), str(path))
    with caplog.at_level(logging.WARNING, logger="semisam.scan.volume"):
        read_volume(path)
    assert "constant image" in caplog.text and "const.nii.gz" in caplog.text


def _dicom_series(folder, skip=()):
    # GDCM's DICOM writer switches the process to the "C" locale (measured: preferred encoding UTF-8 ->
    # ANSI_X3.4-1968), which breaks later text I/O of other tests in this process: restore it.
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(folder, skip)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(folder, skip):
    folder.mkdir()
    arr = np.random.default_rng(0).integers(0, 1000, (8, 16, 16)).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(8):
        if k in skip:
            continue
        s = sitk.GetImageFromArray(arr[k])
        for tag, value in {
            "0020|0032": f"0\\0\\{k * 2.5}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1",
            "0020|0013": str(k),
            "0008|0060": "CT",
        }.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{k}.dcm"))
        writer.Execute(s)
    return folder


def test_dicom_series_with_a_missing_slice_is_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="semisam.scan.volume"):
        read_volume(_dicom_series(tmp_path / "ok"))
    assert "missing" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="semisam.scan.volume"):
        read_volume(_dicom_series(tmp_path / "gap", skip=(4,)))
    assert "about 1 slice(s) are missing" in caplog.text


def test_resampling_is_bounded_with_what_to_change():
    vol = Volume(np.zeros((16, 32, 32), np.int16), spacing=(1e6, 1.0, 1.0), source="huge.nrrd")
    pre = {"target_spacing": [0.8, 0.8, 1.5], "orientation": "LPS", "intensity": {"mode": "ct"}}
    with pytest.raises(GridTooLargeError, match="huge.nrrd: resampling the scan.*check the voxel size"):
        to_model_grid(vol, pre, "cpu")
    small = Volume(np.zeros((40, 50, 60), np.int16), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(GridTooLargeError, match="target_spacing"):
        to_model_grid(small, {**pre, "target_spacing": [0.001, 0.001, 0.001]}, "cpu")


def test_propagation_of_an_absurdly_anisotropic_scan_is_bounded(tmp_path, capsys):
    path = tmp_path / "wide.nrrd"
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32))
    img.SetSpacing((1e6, 1.0, 1.0))
    sitk.WriteImage(img, str(path))
    code, _, err = run_cli(
        capsys, ["propagate", path, "--prompts", prompts_file(tmp_path), "--output", tmp_path / "m.nii.gz"]
    )
    assert_one_line_error(code, err, "wide.nrrd", "square pixels", "voxel size in the scan's header")
