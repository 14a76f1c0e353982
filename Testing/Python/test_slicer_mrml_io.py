"""Slicer's MRML (the real slicer-core wheel) and semisam agree on voxels and RAS geometry.

Every scan is read twice, by Slicer's own storage nodes and by ``semisam.scan.volume``; masks travel
numpy -> segmentation node -> .seg.nrrd -> numpy, and semisam-written masks are read by Slicer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from SemiSAMSegmentLib import mrml_io  # noqa: E402

from semisam.scan.volume import Volume, read_mask, read_volume, write_mask, write_volume  # noqa: E402

RAS_ATOL_MM = 1e-4


def _rotation(axis, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix about ``axis`` (any length) by ``degrees``."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _scan(direction: np.ndarray) -> Volume:
    rng = np.random.default_rng(7)
    array = rng.integers(-1000, 2000, size=(9, 13, 17)).astype(np.int16)
    return Volume(array, spacing=(0.7, 0.9, 2.5), origin=(12.5, -40.25, 77.0), direction=direction)


@pytest.fixture(scope="module")
def oblique_volume() -> Volume:
    """An oblique scan: rotated 30 degrees about (1, 2, 3) so that no axis stays aligned, anisotropic
    spacing, non-zero origin, non-symmetric content so any axis mix-up changes voxels."""
    direction = _rotation((1, 2, 3), 30.0)
    assert not np.allclose(np.abs(direction), np.eye(3), atol=0.05)  # really oblique
    return _scan(direction)


@pytest.fixture(scope="module")
def left_handed_volume() -> Volume:
    """The oblique scan with its j axis reversed: det(direction) = -1 (a left-handed voxel frame)."""
    return _scan(_rotation((1, 2, 3), 30.0) @ np.diag([1.0, -1.0, 1.0]))


def _values_at_same_ras(a: Volume, b: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Voxel values of ``b`` and of ``a`` at the RAS centre of every voxel of ``b``; asserts that each
    centre of ``b`` is a voxel centre of ``a`` (within 1e-3 voxel), i.e. same physical grid."""
    nz, ny, nx = b.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk_b = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
    ijk_a = a.ras_to_voxel(b.voxel_to_ras(ijk_b))
    np.testing.assert_allclose(ijk_a, np.round(ijk_a), atol=1e-3)
    ia, ja, ka = np.round(ijk_a).astype(int).T
    return b.array[k.ravel(), j.ravel(), i.ravel()], a.array[ka, ja, ia]


def _corner_voxels(shape_zyx) -> np.ndarray:
    """``(i, j, k)`` of the first and the last voxel."""
    nz, ny, nx = shape_zyx
    return np.array([[0, 0, 0], [nx - 1, ny - 1, nz - 1]], float)


def _ras_from_node(node, ijk: np.ndarray) -> np.ndarray:
    m = mrml_io.ijk_to_ras(node)
    return ijk @ m[:3, :3].T + m[:3, 3]


def _assert_same_scan(scene, path: Path, truth: Volume | None = None) -> None:
    node = mrml_io.load_volume(scene, path)
    ours = read_volume(path)
    slicer_array = mrml_io.array_from_volume_node(node)
    assert slicer_array.shape == ours.shape
    assert np.array_equal(slicer_array, ours.array), f"{path}: Slicer and semisam read different voxels"
    ijk = _corner_voxels(ours.shape)
    slicer_ras = _ras_from_node(node, ijk)
    np.testing.assert_allclose(slicer_ras, ours.voxel_to_ras(ijk), atol=RAS_ATOL_MM, rtol=0)
    if truth is not None:  # both readers agree with the geometry the file was written from
        np.testing.assert_allclose(slicer_ras, truth.voxel_to_ras(ijk), atol=RAS_ATOL_MM, rtol=0)
        assert np.array_equal(ours.array, truth.array)
    # The helper Logic uses gives the same Volume as semisam's reader.
    from_node = mrml_io.volume_from_node(node)
    assert from_node.same_grid(ours), from_node.grid_differences(ours)


def test_lung1_nrrd_same_voxels_and_ras(mrml_scene, lung1):
    _assert_same_scan(mrml_scene, lung1.image)


def test_lung1_nifti_copy_same_voxels_and_ras(mrml_scene, lung1, tmp_path):
    source = read_volume(lung1.image)
    nifti = write_volume(source, tmp_path / "lung1.nii", compress=False)  # .nii: gzip would cost ~3 s
    _assert_same_scan(mrml_scene, nifti, truth=source)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_oblique_volume_same_voxels_and_ras(mrml_scene, oblique_volume, tmp_path, suffix):
    path = write_volume(oblique_volume, tmp_path / f"oblique{suffix}")
    _assert_same_scan(mrml_scene, path, truth=oblique_volume)


def test_volume_node_round_trip_keeps_voxels_and_geometry(mrml_scene, oblique_volume):
    node = mrml_io.node_from_volume(oblique_volume, mrml_scene, name="oblique")
    np.testing.assert_allclose(mrml_io.ijk_to_ras(node), oblique_volume.ijk_to_ras, atol=1e-9)
    back = mrml_io.volume_from_node(node)
    assert np.array_equal(back.array, oblique_volume.array)
    assert back.same_grid(oblique_volume), back.grid_differences(oblique_volume)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_left_handed_volume_same_physical_voxels(mrml_scene, left_handed_volume, tmp_path, suffix):
    """Slicer keeps IJK right-handed: reading a left-handed file it reverses the k (slice) order and
    moves the origin to the other end. The arrays then differ by that flip, but every RAS position
    holds the same value in both, and semisam's Volume of the node describes Slicer's layout exactly."""
    path = write_volume(left_handed_volume, tmp_path / f"left{suffix}")
    node = mrml_io.load_volume(mrml_scene, path)
    ours = read_volume(path)
    from_node = mrml_io.volume_from_node(node)
    assert np.linalg.det(from_node.direction) > 0 > np.linalg.det(ours.direction)
    assert np.array_equal(from_node.array, ours.array[::-1])  # the k flip, nothing else
    in_slicer, in_semisam = _values_at_same_ras(ours, from_node)
    assert np.array_equal(in_slicer, in_semisam)
    # Corner voxels: Slicer's first voxel is semisam's last slice, same RAS.
    nz = ours.shape[0]
    np.testing.assert_allclose(
        from_node.voxel_to_ras([0, 0, 0]), ours.voxel_to_ras([0, 0, nz - 1]), atol=RAS_ATOL_MM
    )


# ------------------------------------------------------------------------------ masks
def _two_label_mask(shape, seed: int = 3) -> np.ndarray:
    """Two non-overlapping irregular blobs, labels 1 and 2."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    nz, ny, nx = shape
    mask[nz // 4 : nz // 2, ny // 4 : ny // 2, nx // 4 : nx // 2] = 1
    mask[nz // 2 :, ny // 2 :, nx // 2 :][rng.random((nz - nz // 2, ny - ny // 2, nx - nx // 2)) < 0.3] = 2
    return mask


@pytest.mark.parametrize("case", ["lung1", "oblique"])
def test_mask_to_seg_nrrd_and_back_is_identical(mrml_scene, request, tmp_path, case):
    if case == "lung1":
        sample = request.getfixturevalue("lung1")
        volume_node = mrml_io.load_volume(mrml_scene, sample.image)
        mask = read_mask(sample.label).array.copy()
        mask[mask.shape[0] // 2, :40, :40] = 2  # a second label away from the lesion
    else:
        volume_node = mrml_io.node_from_volume(request.getfixturevalue("oblique_volume"), mrml_scene)
        mask = _two_label_mask(mrml_io.array_from_volume_node(volume_node).shape)
    assert set(np.unique(mask)) == {0, 1, 2}

    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "proposal")
    ids = mrml_io.import_mask(mask, volume_node, seg, names={1: "lesion", 2: "other"})
    assert [seg.GetSegmentation().GetSegment(s).GetName() for s in ids] == ["lesion", "other"]
    n_nodes = mrml_scene.GetNumberOfNodes()
    assert np.array_equal(mrml_io.export_mask(seg, volume_node, ids), mask)
    assert mrml_scene.GetNumberOfNodes() == n_nodes, "temporary nodes were left in the scene"

    path = mrml_io.save_segmentation(seg, tmp_path / "proposal.seg.nrrd")
    assert [p.name for p in tmp_path.iterdir()] == ["proposal.seg.nrrd"]  # no temporary file left
    again = mrml_io.load_segmentation(mrml_scene, path)
    names = [again.GetSegmentation().GetSegment(s).GetName() for s in mrml_io.segment_ids(again)]
    assert names == ["lesion", "other"]
    assert np.array_equal(mrml_io.export_mask(again, volume_node), mask)


def test_import_mask_updates_a_named_segment_in_place(mrml_scene, oblique_volume):
    volume_node = mrml_io.node_from_volume(oblique_volume, mrml_scene)
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    first = _two_label_mask(oblique_volume.shape) == 1
    (sid,) = mrml_io.import_mask(first.astype(np.uint8), volume_node, seg, names={1: "lesion"})
    second = np.zeros_like(first)
    second[1:3, 2:5, 3:9] = True
    (sid2,) = mrml_io.import_mask(second.astype(np.uint8), volume_node, seg, names={1: "lesion"})
    assert sid2 == sid and mrml_io.segment_ids(seg) == [sid]
    assert np.array_equal(mrml_io.export_mask(seg, volume_node) == 1, second)


@pytest.mark.parametrize("case", ["lung1", "oblique", "left_handed"])
def test_semisam_written_mask_lands_on_the_same_voxels_in_slicer(mrml_scene, request, tmp_path, case):
    if case == "lung1":
        sample = request.getfixturevalue("lung1")
        reference = read_volume(sample.image)
        image_path = sample.image
        mask = read_mask(sample.label, reference).array
    else:
        reference = request.getfixturevalue(f"{case}_volume")
        image_path = write_volume(reference, tmp_path / f"{case}.nrrd")
        mask = _two_label_mask(reference.shape)
    mask_path = write_mask(mask, reference, tmp_path / "mask.nii.gz")

    volume_node = mrml_io.load_volume(mrml_scene, image_path)
    label_node = mrml_io.load_volume(mrml_scene, mask_path, label=True)
    assert label_node.IsA("vtkMRMLLabelMapVolumeNode")
    # As Slicer reads it, the mask is on the RAS grid of the image as Slicer reads that.
    np.testing.assert_allclose(
        mrml_io.ijk_to_ras(label_node), mrml_io.ijk_to_ras(volume_node), atol=RAS_ATOL_MM, rtol=0
    )
    slicer_mask = mrml_io.volume_from_node(label_node)
    if np.linalg.det(reference.direction) > 0:  # right-handed: the very same array
        assert np.array_equal(slicer_mask.array, mask)
    if mask.size < 1e6:  # voxel-by-voxel RAS look-up (too slow for lung1's 12.6 M voxels, covered above)
        in_slicer, in_semisam = _values_at_same_ras(reference.with_array(mask), slicer_mask)
        assert np.array_equal(in_slicer, in_semisam), "mask voxels moved between semisam and Slicer"
    # The re-indexing Logic uses to bring a file's mask onto Slicer's layout agrees.
    assert np.array_equal(mrml_io.array_on_grid(reference.with_array(mask), slicer_mask), slicer_mask.array)
    # And through Slicer's labelmap -> segmentation import, exported back on the image node.
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, seg)
    exported = mrml_io.export_mask(seg, volume_node)
    labels = sorted(int(v) for v in np.unique(mask) if v)
    remapped = np.zeros_like(slicer_mask.array)
    for n, value in enumerate(labels, start=1):  # segments come in label order
        remapped[slicer_mask.array == value] = n
    assert np.array_equal(exported, remapped)


# ------------------------------------------------------------------------------ errors
def test_load_volume_missing_file_names_it(mrml_scene, tmp_path):
    missing = tmp_path / "nope.nrrd"
    with pytest.raises(mrml_io.MrmlIOError, match=r"nope\.nrrd: no such file"):
        mrml_io.load_volume(mrml_scene, missing)


def test_load_volume_unreadable_file_names_it_and_leaves_scene_clean(mrml_scene, tmp_path):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: what\n\n")
    n_nodes = mrml_scene.GetNumberOfNodes()
    with pytest.raises(mrml_io.MrmlIOError, match=r"bad\.nrrd: Slicer's volume reader could not read it"):
        mrml_io.load_volume(mrml_scene, bad)
    assert mrml_scene.GetNumberOfNodes() == n_nodes


def test_import_mask_wrong_shape_names_the_volume(mrml_scene, oblique_volume):
    volume_node = mrml_io.node_from_volume(oblique_volume, mrml_scene, name="oblique")
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(mrml_io.MrmlIOError, match=r"mask shape .* does not match node 'oblique'"):
        mrml_io.import_mask(np.zeros((2, 2, 2), np.uint8), volume_node, seg)


def test_save_segmentation_keeps_old_file_when_suffix_wrong(mrml_scene, tmp_path):
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(mrml_io.MrmlIOError, match=r"out\.nrrd: a segmentation is written as \.seg\.nrrd"):
        mrml_io.save_segmentation(seg, tmp_path / "out.nrrd")
