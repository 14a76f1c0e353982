"""A :class:`semisam.scan.volume.Volume` into a Slicer volume node (voxels and RAS geometry), for both modules
(SemiSAMSegment's MRML I/O and the self-tests of both). No qt, no ``slicer.app``: runs against slicer-core."""

from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support

from semisam.scan.volume import Volume


class MrmlIOError(ValueError):
    """A node or file could not be converted; the message names the node or file and the problem."""


def _image_data(array: np.ndarray) -> vtk.vtkImageData:
    """``vtkImageData`` (deep copy) of a ``(Z, Y, X)`` array with unit spacing and zero origin."""
    array = np.ascontiguousarray(array)
    if array.ndim != 3:
        raise MrmlIOError(f"expected a 3D (Z, Y, X) array, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = vtk.vtkImageData()
    nz, ny, nx = array.shape
    image.SetDimensions(nx, ny, nz)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def set_node_geometry(volume_node, volume: Volume) -> None:
    """Give ``volume_node`` the spacing, origin and direction of ``volume`` (RAS mm)."""
    volume_node.SetSpacing(*volume.spacing)
    volume_node.SetOrigin(*volume.origin)
    directions = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            directions.SetElement(r, c, float(volume.direction[r, c]))
    volume_node.SetIJKToRASDirectionMatrix(directions)


def node_from_volume(
    volume: Volume,
    scene,
    name: str = "SemiSAM volume",
    node=None,
    class_name: str = "vtkMRMLScalarVolumeNode",
):
    """Put ``volume`` (voxels and geometry) into a volume node of ``scene``; returns the node.

    Args:
        volume: the scan (``(Z, Y, X)`` voxels, RAS geometry).
        scene: the ``vtkMRMLScene`` to add a new node to (ignored when ``node`` is given).
        name: name of a new node.
        node: an existing volume node to overwrite instead of creating one.
        class_name: ``vtkMRMLScalarVolumeNode`` or ``vtkMRMLLabelMapVolumeNode`` for a new node.
    """
    if node is None:
        if scene is None:
            raise MrmlIOError(f"cannot create volume node {name!r}: no scene given")
        node = scene.AddNewNodeByClass(class_name, name)
    node.SetAndObserveImageData(_image_data(volume.array))
    set_node_geometry(node, volume)
    if node.GetScene() is not None and node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node
