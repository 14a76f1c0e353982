"""MRML <-> numpy / :class:`semisam.scan.volume.Volume` conversion, shared by both SemiSAM modules' Logic.

Runs wherever Slicer's MRML runs: inside the Slicer application and against the ``slicer-core`` wheel
(pytest, batch). It never touches ``slicer.app``, ``slicer.modules``, ``slicer.mrmlScene`` or qt: the
scene is always the one the given node belongs to.

Conventions (the same as :mod:`semisam.scan.volume`):

* numpy arrays are ``(Z, Y, X)`` = ``[k, j, i]``, exactly what Slicer's ``arrayFromVolume`` returns;
* geometry is RAS in millimetres; a volume node's ``IJKToRAS`` matrix equals
  :attr:`semisam.scan.volume.Volume.ijk_to_ras` (spacing, origin, direction columns);
* a segmentation is exported on the grid of a *reference volume node*; label ``n`` of the exported map is
  the ``n``-th requested segment (1-based), 0 is background.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from semisam.scan.volume import GeometryMismatchError, Volume
from SemiSAMLib.mrml_volume import MrmlIOError, _image_data, node_from_volume, set_node_geometry  # noqa: F401

log = logging.getLogger(__name__)

#: Name given to the temporary labelmap nodes this module creates (and always removes again).
TEMP_NODE_NAME = "__SemiSAM_temp__"


# ----------------------------------------------------------------------------- volumes
def batch_scene():
    """A scene for batch use outside the Slicer application (scripts, pytest on the slicer-core wheel).

    Registers the Colors, Segmentations and Volumes logics on one application logic, as Slicer's
    application does: labelmap segments need the Segmentations logic. The application logic must be set
    on each logic before the scene, because the Colors logic looks up its default colour files through it.
    ``scene.semisam_logics`` maps the names to the logics (and keeps them alive as long as the scene).
    """
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {"Application": app_logic}
    for name, cls in (
        ("Colors", slicer.vtkSlicerColorLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    scene.semisam_logics = logics
    return scene


def _node_label(node) -> str:
    return f"node {node.GetName()!r} ({node.GetID()})" if node is not None else "node None"


def ijk_to_ras(volume_node) -> np.ndarray:
    """The 4x4 ``IJKToRAS`` matrix of a volume node (voxel index ``(i, j, k, 1)`` -> RAS mm)."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_from_volume_node(volume_node, copy: bool = True) -> np.ndarray:
    """Copy of the voxels of a scalar (or labelmap) volume node, shape ``(Z, Y, X)``; with ``copy=False``
    a read-only view of them (cheap on the main thread; it keeps the node's voxel buffer alive, so another
    thread can copy it later).

    Raises:
        MrmlIOError: no node, no image data, or more than one component per voxel.
    """
    if volume_node is None:
        raise MrmlIOError("no volume node given")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise MrmlIOError(f"{_node_label(volume_node)} holds no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise MrmlIOError(
            f"{_node_label(volume_node)} has {image.GetNumberOfScalarComponents()} components per voxel; "
            "a scalar volume is needed"
        )
    nx, ny, nz = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    if copy:
        return flat.reshape(nz, ny, nx).copy()
    view = flat.reshape(nz, ny, nx)
    view.flags.writeable = False
    return view


def volume_from_node(volume_node, copy: bool = True) -> Volume:
    """A :class:`semisam.scan.volume.Volume` (voxels ``(Z, Y, X)`` + RAS geometry) from a volume node; its
    voxels are a copy, or with ``copy=False`` a read-only view (see :func:`array_from_volume_node`).

    A parent transform on the node is ignored (the node's own IJKToRAS is used), as Slicer's
    ``arrayFromVolume`` does; harden the transform first when it matters.
    """
    array = array_from_volume_node(volume_node, copy)
    directions = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASDirectionMatrix(directions)
    direction = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    storage = volume_node.GetStorageNode()
    source = storage.GetFileName() if storage is not None and storage.GetFileName() else volume_node.GetName()
    return Volume(
        array=array,
        spacing=tuple(volume_node.GetSpacing()),
        origin=tuple(volume_node.GetOrigin()),
        direction=direction,
        source=source,
    )


def array_on_grid(source: Volume, reference: Volume) -> np.ndarray:
    """``source``'s voxels re-indexed onto ``reference``'s grid, ``(Z, Y, X)`` of the reference.

    Works when both grids hold the same voxel centres with axes permuted and/or reversed. That is what
    happens between a file and Slicer: Slicer keeps IJK right-handed, so a left-handed file's volume
    node has its k axis reversed relative to what ``semisam.scan.volume.read_volume`` returns.

    Raises:
        GeometryMismatchError: the grids differ by more than an axis permutation / reversal.
    """
    if reference.same_grid(source):
        return source.array
    m = source.ras_to_ijk @ reference.ijk_to_ras  # reference (i, j, k, 1) -> source (i, j, k)
    a, b = m[:3, :3], m[:3, 3]
    r = np.round(a)
    src_size = np.array(source.size_ijk)
    ref_size = np.array(reference.size_ijk)
    ok = np.allclose(a, r, atol=1e-4) and np.allclose(b, np.round(b), atol=1e-3)
    ok = ok and np.all(np.abs(r).sum(axis=0) == 1) and np.all(np.abs(r).sum(axis=1) == 1)
    if ok:
        perm = [int(np.flatnonzero(r[:, c])[0]) for c in range(3)]  # reference axis c <- source axis
        signs = [int(r[perm[c], c]) for c in range(3)]
        offsets = np.round(b).astype(int)
        for c in range(3):
            s = perm[c]
            expected = 0 if signs[c] > 0 else src_size[s] - 1
            ok = ok and src_size[s] == ref_size[c] and offsets[s] == expected
    if not ok:
        raise GeometryMismatchError(
            "grid is not the reference grid up to axis order/direction: "
            + "; ".join(reference.grid_differences(source)),
            source.source,
        )
    ijk = source.array.transpose(2, 1, 0).transpose(perm)  # now indexed by reference (i, j, k)
    for c in range(3):
        if signs[c] < 0:
            ijk = np.flip(ijk, axis=c)
    return np.ascontiguousarray(ijk.transpose(2, 1, 0))


# ------------------------------------------------------------------------- segmentations
def _scene_of(node):
    scene = node.GetScene() if node is not None else None
    if scene is None:
        raise MrmlIOError(f"{_node_label(node)} is not in a scene")
    return scene


class _TemporaryNodes:
    """Removes every node a block adds to the scene (temporary labelmaps, their display and colour
    nodes), so helpers leave the user's scene as they found it, also on error."""

    def __init__(self, scene):
        self.scene = scene

    def _ids(self) -> set[str]:
        return {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}

    def __enter__(self):
        self.before = self._ids()
        return self

    def __exit__(self, *exc) -> None:
        for node_id in self._ids() - self.before:
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)


def segment_ids(segmentation_node) -> list[str]:
    """IDs of all segments of a segmentation node, in display order."""
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def import_mask(
    mask: np.ndarray,
    volume_node,
    segmentation_node,
    names: Mapping[int, str] | None = None,
) -> list[str]:
    """Write an integer label map on ``volume_node``'s grid into segments of ``segmentation_node``.

    Label ``L > 0`` becomes (or replaces the voxels of) the segment named ``names[L]`` (default
    ``"label L"``); a segment that already has that name is updated in place, keeping its ID, colour and
    terminology, so Segment Editor edits elsewhere in the node survive. Labels listed in ``names`` but
    absent from ``mask`` empty their segment.

    Args:
        mask: ``(Z, Y, X)`` non-negative integer labels, same shape as the volume's voxels.
        volume_node: the reference volume; its IJKToRAS places the mask in RAS.
        segmentation_node: target node (in the same scene).
        names: label value -> segment name.

    Returns:
        The segment IDs, in increasing label order.
    """
    mask = np.asarray(mask)
    vol_shape = array_from_volume_node(volume_node).shape
    if mask.shape != vol_shape:
        raise MrmlIOError(
            f"mask shape (Z, Y, X) {mask.shape} does not match {_node_label(volume_node)} {vol_shape}"
        )
    if mask.size and (mask.min() < 0 or not np.all(np.isfinite(mask))):
        raise MrmlIOError("mask holds negative or non-finite values; a label map is needed")
    labels = sorted(set(int(v) for v in np.unique(mask) if v > 0) | set((names or {}).keys()))
    scene = _scene_of(segmentation_node)
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    if segmentation_node.GetNodeReference(role) is None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    ids: list[str] = []
    with _TemporaryNodes(scene):
        label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", TEMP_NODE_NAME)
        label_node.CopyOrientation(volume_node)
        for label in labels:
            name = (names or {}).get(label, f"label {label}")
            segment_id = segmentation.GetSegmentIdBySegmentName(name) or segmentation.AddEmptySegment(
                "", name
            )
            label_node.SetAndObserveImageData(_image_data((mask == label).astype(np.uint8)))
            wanted = vtk.vtkStringArray()
            wanted.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                label_node, segmentation_node, wanted
            ):
                raise MrmlIOError(f"Slicer could not import label {label} into segment {name!r}")
            ids.append(segment_id)
    return ids


def export_mask(segmentation_node, volume_node, segment_id_list: Sequence[str] | None = None) -> np.ndarray:
    """Label map ``(Z, Y, X)`` of segments on ``volume_node``'s grid (resampled by Slicer if needed).

    Label ``n`` (1-based) is ``segment_id_list[n - 1]`` (default: all segments in order); ``uint8``,
    or ``uint16`` beyond 255 segments.
    """
    ids = list(segment_id_list) if segment_id_list is not None else segment_ids(segmentation_node)
    shape = array_from_volume_node(volume_node).shape
    dtype = np.uint8 if len(ids) <= 255 else np.uint16
    if not ids:
        return np.zeros(shape, dtype)
    missing = [s for s in ids if segmentation_node.GetSegmentation().GetSegment(s) is None]
    if missing:
        raise MrmlIOError(f"{_node_label(segmentation_node)} has no segment(s) {missing}")
    scene = _scene_of(segmentation_node)
    with _TemporaryNodes(scene):
        label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", TEMP_NODE_NAME)
        wanted = vtk.vtkStringArray()
        for s in ids:
            wanted.InsertNextValue(s)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, wanted, label_node, volume_node
        ):
            raise MrmlIOError(f"Slicer could not export segments of {_node_label(segmentation_node)}")
        labels = array_from_volume_node(label_node)
    if labels.shape != shape:  # Slicer exports on the reference grid; anything else is a bug to surface
        raise MrmlIOError(f"exported labelmap shape {labels.shape} != reference volume shape {shape}")
    return labels.astype(dtype)


# ------------------------------------------------------------------------------- files
def load_volume(scene, path: str | os.PathLike, name: str | None = None, label: bool = False):
    """Read a scan into a new scalar (or labelmap) volume node through Slicer's archetype storage node.

    Raises:
        MrmlIOError: the file does not exist or Slicer cannot read it.
    """
    class_name = "vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode"
    return _read_node(scene, path, name, class_name, "vtkMRMLVolumeArchetypeStorageNode", "volume")


def _read_node(scene, path, name: str | None, node_class: str, storage_class: str, what: str):
    """A new ``node_class`` node read from ``path`` by a new ``storage_class`` node; on failure neither
    node stays in the scene."""
    p = Path(path)
    if not p.is_file():
        raise MrmlIOError(f"{p}: no such file")
    node = scene.AddNewNodeByClass(node_class, name or p.name.split(".")[0])
    storage = scene.AddNewNodeByClass(storage_class)
    storage.SetFileName(str(p))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise MrmlIOError(f"{p}: Slicer's {what} reader could not read it")
    return node


def save_segmentation(segmentation_node, path: str | os.PathLike) -> Path:
    """Write a segmentation node as ``.seg.nrrd`` atomically (``semisam.fileio.atomic_path``: fsync'd
    temporary file in the folder, rename, folder fsync'd).

    An existing file at ``path`` is replaced only once the new one is complete and on disk.
    """
    from semisam.fileio import atomic_path

    dest = Path(path)
    if not dest.name.lower().endswith(".seg.nrrd"):
        raise MrmlIOError(f"{dest}: a segmentation is written as .seg.nrrd")
    # The storage node picks its writer by extension: the temporary name must end in .seg.nrrd too.
    with atomic_path(dest, suffix=".seg.nrrd") as tmp:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(tmp))
        if not storage.WriteData(segmentation_node):
            raise MrmlIOError(f"{dest}: Slicer could not write {_node_label(segmentation_node)}")
    return dest


def load_segmentation(scene, path: str | os.PathLike, name: str | None = None):
    """Read a ``.seg.nrrd`` (or any file Slicer's segmentation storage node reads) into a new node."""
    return _read_node(
        scene, path, name, "vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode", "segmentation"
    )
