"""semisam.scan.volume: geometry, round trips through every format, and a clear error for each bad input."""

from __future__ import annotations

import gzip
import locale
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from semisam.scan.volume import (
    GeometryMismatchError,
    MaskValueError,
    NonFiniteVoxelsError,
    NotA3DScalarError,
    ScanNotFoundError,
    ScanReadError,
    Volume,
    read_mask,
    read_volume,
    write_mask,
    write_volume,
)


def test_semisam_volume_is_the_public_entry_point(tmp_path):
    """``semisam.volume`` (what users' scripts import) re-exports every public name of the scan
    package's volume module, the same objects, and reads and writes through them."""
    import semisam.scan.volume as impl
    import semisam.volume as public

    assert public.__all__ == impl.__all__
    for name in impl.__all__:
        assert getattr(public, name) is getattr(impl, name), name
    vol = public.Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing=(0.5, 0.5, 2.0))
    public.write_volume(vol, tmp_path / "v.nii.gz")
    back = public.read_volume(tmp_path / "v.nii.gz")
    assert isinstance(back, impl.Volume) and back.same_grid(vol)
    np.testing.assert_array_equal(back.array, vol.array)


def _oblique_volume(shape=(5, 7, 9), dtype=np.int16) -> Volume:
    """A volume with anisotropic spacing, an oblique direction (30° about S, 10° about R) and an offset origin."""
    a, b = np.deg2rad(30), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1000, size=shape).astype(dtype)
    return Volume(arr, spacing=(0.7, 0.8, 2.5), origin=(-12.5, 30.25, 101.0), direction=rz @ rx)


def test_voxel_to_ras_matches_sitk_physical_points():
    vol = _oblique_volume()
    img = vol.to_sitk()
    for ijk in [(0, 0, 0), (8, 6, 4), (3, 1, 2)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)))
        ras = vol.voxel_to_ras(ijk)
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)
        np.testing.assert_allclose(vol.ras_to_voxel(ras), ijk, atol=1e-9)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix):
    vol = _oblique_volume()
    out = write_volume(vol, tmp_path / f"scan{suffix}")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.same_grid(vol), back.grid_differences(vol)
    np.testing.assert_allclose(back.voxel_to_ras([8, 6, 4]), vol.voxel_to_ras([8, 6, 4]), atol=1e-4)
    # no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"scan{suffix}"]


def test_dicom_series_folder(tmp_path):
    # GDCM's DICOM writer can switch the process to the "C" locale, which breaks later tests' text I/O
    # in the same process (see test_robust_images._dicom_series): restore it whatever happens.
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _check_dicom_series_folder(tmp_path)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _check_dicom_series_folder(tmp_path):
    vol = _oblique_volume(shape=(4, 6, 8))
    img = vol.to_sitk()
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = img.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.123456"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        sl.SetMetaData("0020|000e", series_uid)
        sl.SetMetaData("0020|0037", "\\".join(f"{v:.9f}" for v in (*direction[0::3], *direction[1::3])))
        sl.SetMetaData(
            "0020|0032", "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k)))
        )
        sl.SetMetaData("0020|0013", str(k))
        sl.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(sl)
    back = read_volume(folder)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-5)


def test_real_scan_geometry(lung1):
    vol = read_volume(lung1.image)
    assert vol.shape == (48, 512, 512)  # (Z, Y, X) of a 512x512x48 CT
    np.testing.assert_allclose(vol.spacing[2], 5.0, atol=1e-3)
    mask = read_mask(lung1.label, reference=vol)
    assert int(mask.array.sum()) == 837  # lesion voxels, as documented with the data


def test_mask_written_on_image_grid(tmp_path):
    vol = _oblique_volume()
    m = np.zeros(vol.shape, np.uint8)
    m[2, 3:5, 4:7] = 1
    out = write_mask(m, vol, tmp_path / "mask.nii.gz")
    back = read_mask(out, reference=vol)
    np.testing.assert_array_equal(back.array, m)
    assert back.array.dtype == np.uint8


# ----------------------------------------------------------------------------- bad inputs
def _assert_names(exc: pytest.ExceptionInfo, path: Path, *words: str):
    msg = str(exc.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg.lower(), msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope.nrrd"
    with pytest.raises(ScanNotFoundError) as exc:
        read_volume(p)
    _assert_names(exc, p, "no such file")
    assert isinstance(exc.value, FileNotFoundError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_file(tmp_path):
    p = write_volume(_oblique_volume(), tmp_path / "x.nrrd")
    p.chmod(0)
    with pytest.raises(ScanReadError) as exc:
        read_volume(p)
    _assert_names(exc, p, "not readable")
    p.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.nii.gz"
    p.write_bytes(b"")
    with pytest.raises(ScanReadError) as exc:
        read_volume(p)
    _assert_names(exc, p, "empty")


def test_corrupt_nrrd_header(tmp_path):
    p = tmp_path / "corrupt.nrrd"
    p.write_bytes(b"NRRD0004\ntype: shrt\ndimension: three\nsizes: 4 4\nencoding: raw\n\n" + b"\0" * 64)
    with pytest.raises(ScanReadError) as exc:
        read_volume(p)
    _assert_names(exc, p, "corrupt")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, suffix):
    """ITK zero-fills truncated NIfTI silently; we must not."""
    good = write_volume(_oblique_volume(shape=(6, 30, 40)), tmp_path / f"good{suffix}")
    p = tmp_path / f"truncated{suffix}"
    data = good.read_bytes()
    p.write_bytes(data[: len(data) - 200])
    with pytest.raises(ScanReadError) as exc:
        read_volume(p)
    _assert_names(exc, p)
    assert "truncated" in str(exc.value) or "cannot be decoded" in str(exc.value)


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(ScanReadError) as exc:
        read_volume(folder)
    _assert_names(exc, folder, "no dicom series")


def test_garbage_gz(tmp_path):
    p = tmp_path / "garbage.nii.gz"
    p.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(ScanReadError) as exc:
        read_volume(p)
    _assert_names(exc, p)


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "scan.xyz"
    p.write_bytes(b"abc")
    with pytest.raises(ScanReadError) as exc:
        read_volume(p)
    _assert_names(exc, p, "unsupported")


def test_2d_image(tmp_path):
    p = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)), str(p))
    with pytest.raises(NotA3DScalarError) as exc:
        read_volume(p)
    _assert_names(exc, p, "2d", "3d scan is needed")


def test_single_slice_3d_image(tmp_path):
    p = tmp_path / "one_slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 8, 9), np.int16)), str(p))
    with pytest.raises(NotA3DScalarError) as exc:
        read_volume(p)
    _assert_names(exc, p, "single slice")


def test_4d_image(tmp_path):
    p = tmp_path / "dynamic.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 8, 9), np.float32)), str(p))
    with pytest.raises(NotA3DScalarError) as exc:
        read_volume(p)
    _assert_names(exc, p, "4d")


def test_multicomponent_image(tmp_path):
    p = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 9, 3), np.uint8), isVector=True), str(p))
    with pytest.raises(NotA3DScalarError) as exc:
        read_volume(p)
    _assert_names(exc, p, "3 components")


def test_nonfinite_voxels(tmp_path):
    arr = np.zeros((4, 5, 6), np.float32)
    arr[2, 3, 4] = np.nan
    arr[1, 1, 1] = np.inf
    p = write_volume(Volume(arr), tmp_path / "nan.nrrd")
    with pytest.raises(NonFiniteVoxelsError) as exc:
        read_volume(p)
    _assert_names(exc, p, "2 voxel(s)", "nan")
    assert read_volume(p, allow_nonfinite=True).shape == (4, 5, 6)


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(spacing=(0.7, 0.8, 3.0)), ["spacing"]),
        (dict(origin=(0.0, 0.0, 0.0)), ["origin"]),
        (dict(direction=np.eye(3)), ["direction"]),
    ],
)
def test_mask_grid_mismatch(tmp_path, change, words):
    vol = _oblique_volume()
    image_path = write_volume(vol, tmp_path / "image.nrrd")
    vol = read_volume(image_path)
    other = Volume(
        np.zeros(vol.shape, np.uint8),
        **{**dict(spacing=vol.spacing, origin=vol.origin, direction=vol.direction), **change},
    )
    p = write_volume(other, tmp_path / "mask.nrrd")
    with pytest.raises(GeometryMismatchError) as exc:
        read_mask(p, reference=vol)
    _assert_names(exc, p, *words)
    assert str(image_path) in str(exc.value)


def test_mask_size_mismatch(tmp_path):
    vol = _oblique_volume()
    p = write_volume(
        Volume(np.zeros((5, 7, 8), np.uint8), vol.spacing, vol.origin, vol.direction), tmp_path / "m.nrrd"
    )
    with pytest.raises(GeometryMismatchError) as exc:
        read_mask(p, reference=vol)
    _assert_names(exc, p, "size")
    with pytest.raises(GeometryMismatchError) as exc:
        write_mask(np.zeros((5, 7, 8), np.uint8), vol, tmp_path / "w.nrrd")
    _assert_names(exc, tmp_path / "w.nrrd", "does not match")
    assert not (tmp_path / "w.nrrd").exists()


def test_fractional_mask(tmp_path):
    p = write_volume(Volume(np.full((3, 4, 5), 0.5, np.float32)), tmp_path / "soft.nrrd")
    with pytest.raises(MaskValueError) as exc:
        read_mask(p)
    _assert_names(exc, p, "fractional")


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    """An interrupted write leaves the old file intact and no temporary file behind."""
    vol = _oblique_volume()
    dest = write_volume(vol, tmp_path / "scan.nrrd")
    before = dest.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user stopped the process mid-write

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(KeyboardInterrupt):
        write_volume(vol.with_array(vol.array + 1), dest)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nrrd"]


def test_written_files_follow_umask(tmp_path):
    """Atomic writes must not leave files readable only by their owner (as mkstemp's 0600 would)."""
    old = os.umask(0o022)
    try:
        p = write_mask(np.zeros((3, 4, 5), np.uint8), Volume(np.zeros((3, 4, 5))), tmp_path / "m.nii.gz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
