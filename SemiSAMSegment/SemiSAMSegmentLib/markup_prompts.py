"""Markups -> :mod:`semisam.prompts`: fiducial points (+/-) and ROI boxes in RAS -> voxel prompts on slices.

Conventions (also in the module's help text):

* **Points** are the control points of a ``vtkMRMLMarkupsFiducialNode``. A point is *positive* (on the
  structure) unless its control-point **description** is one of :data:`NEGATIVE_WORDS` (``-``,
  ``neg``, ``negative``, ``bg``, ``background``; case-insensitive): Slicer's Markups module shows the
  description as an editable column of the control-point table, it is saved with the scene, and a new
  point starts with an empty description, i.e. positive. A whole node can be made negative with the node
  attribute ``SemiSAM.PromptSign = negative`` (handy for a separate "background points" list). Points whose
  position is not defined yet (still being placed) are skipped.
* **Boxes** are ``vtkMRMLMarkupsROINode`` s (any rotation): the ROI's 8 corners go to voxel space; the box
  is the range of voxel centres inside them. The slice axis is the ROI's **thinnest axis in voxels** (a
  box drawn on one slice is one voxel thick there); the key slice is the voxel slice nearest the ROI's
  centre along that axis. Voxels are compared (not mm) on purpose: lung1's 3-slice nodule is 15 mm thick
  at 5 mm slices but only 12 mm wide, so a box around the whole nodule is thinnest in mm *in plane*; in
  voxels (3 vs ~21) it is thinnest across the axial slices the user sees it on.
* RAS -> voxel uses :meth:`semisam.scan.volume.Volume.ras_to_voxel` of the Volume made from the node (the
  node's own IJKToRAS; tests check it against the node's ``RASToIJK`` matrix). Parent transforms of the
  markups are applied (world positions); a parent transform of the volume is ignored, as everywhere in
  these modules: harden it first.

A point (or an ROI) outside the volume is a :class:`MarkupPromptError` naming the markups node, the point
(index and label) and where it fell.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import vtk

from semisam.prompts import Prompt, PromptSet, parse_prompts
from semisam.scan.volume import Volume
from semisam.slices import AXES

#: Control-point descriptions that make a point negative (compared lower-cased and stripped).
NEGATIVE_WORDS = frozenset({"-", "neg", "negative", "bg", "background"})
#: Node attribute that makes every point of a fiducial node negative.
SIGN_ATTRIBUTE = "SemiSAM.PromptSign"
#: Half a voxel: a point past the first/last voxel centre but still inside that voxel is inside.
_EDGE = 0.5


class MarkupPromptError(ValueError):
    """A markup cannot be used as a prompt; the message names the node, the point and the problem."""


@dataclass(frozen=True)
class MarkupPrompts:
    """Prompts read from markups.

    Attributes:
        prompts: validated :class:`~semisam.prompts.PromptSet` (voxel coordinates of the volume).
        kinds: number of prompts by kind: ``{"box": n, "point+": n, "point-": n}`` (provenance).
    """

    prompts: PromptSet
    kinds: dict[str, int]


def _label(node) -> str:
    return f"markups {node.GetName()!r}"


def point_is_positive(node, index: int) -> bool:
    """The sign of control point ``index`` by the convention in the module docstring."""
    if (node.GetAttribute(SIGN_ATTRIBUTE) or "").strip().lower() in ("negative", "-"):
        return False
    return (node.GetNthControlPointDescription(index) or "").strip().lower() not in NEGATIVE_WORDS


def toggle_point_sign(points_node, index: int = -1) -> str | None:
    """Flip a control point (default: the last) between positive (empty description) and negative
    (``-``); returns the new sign ``"+"`` / ``"-"``, or ``None`` when the list has no such point."""
    n = points_node.GetNumberOfControlPoints() if points_node is not None else 0
    i = index if index >= 0 else n + index
    if not 0 <= i < n:
        return None
    make_negative = point_is_positive(points_node, i)
    points_node.SetNthControlPointDescription(i, "-" if make_negative else "")
    return "+" if point_is_positive(points_node, i) else "-"  # the node attribute may still win


def _inside(ijk: np.ndarray, size_ijk: tuple[int, int, int]) -> bool:
    return bool(np.all(ijk >= -_EDGE) and np.all(ijk < np.asarray(size_ijk) - 1 + _EDGE))


def _slice_coords(ijk: tuple[int, int, int], axis: str) -> tuple[int, int, int]:
    """Voxel ``(i, j, k)`` -> ``(slice, column, row)`` of :mod:`semisam.prompts`."""
    i, j, k = ijk
    if axis == "axial":
        return k, i, j
    if axis == "coronal":
        return j, i, k
    return i, j, k  # sagittal: slice i, columns j, rows k


def roi_corners_ijk(roi_node, volume: Volume) -> np.ndarray:
    """Continuous voxel ``(i, j, k)`` of the 8 corners of an ROI, shape ``(8, 3)``."""
    m = vtk.vtkMatrix4x4()
    m.DeepCopy(roi_node.GetObjectToWorldMatrix())
    object_to_world = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    half = np.asarray(roi_node.GetSize(), dtype=float) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    corners = np.c_[signs * half, np.ones(8)] @ object_to_world.T
    return volume.ras_to_voxel(corners[:, :3])


def thinnest_axis(corners_ijk: np.ndarray) -> str:
    """Axis name across which the ROI is thinnest in voxels (ties: axial, then coronal)."""
    extent = corners_ijk.max(axis=0) - corners_ijk.min(axis=0)  # (i, j, k)
    by_axis = {"axial": extent[2], "coronal": extent[1], "sagittal": extent[0]}
    return min(by_axis, key=lambda a: (round(float(by_axis[a]), 6), AXES[a]))


def roi_prompt(roi_node, volume: Volume, axis: str) -> Prompt:
    """The box prompt of an ROI on ``axis`` (see the module docstring).

    Raises:
        MarkupPromptError: the ROI has no size, or its key slice / box lies outside the volume.
    """
    if not _placed(roi_node) or min(roi_node.GetSize()) < 0:
        raise MarkupPromptError(f"{_label(roi_node)}: the ROI is not placed yet")
    corners = roi_corners_ijk(roi_node, volume)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    centre = (lo + hi) / 2.0
    size = np.asarray(volume.size_ijk)
    # Voxel centres inside the ROI; an ROI thinner than a voxel keeps the voxel nearest its centre.
    first = np.ceil(lo - 1e-6).astype(int)
    last = np.floor(hi + 1e-6).astype(int)
    thin = last < first
    first[thin] = last[thin] = np.round(centre[thin]).astype(int)
    a = {"axial": 2, "coronal": 1, "sagittal": 0}[axis]
    key = int(np.clip(np.round(centre[a]), lo[a], hi[a]).round())
    where = (
        f"{_label(roi_node)}: ROI centred at voxel (i, j, k) {tuple(round(float(c), 1) for c in centre)} "
        f"of volume size {tuple(int(s) for s in size)}"
    )
    if not 0 <= key < size[a]:
        raise MarkupPromptError(f"{where}: its {axis} slice {key} is outside the volume")
    first_c, last_c = np.maximum(first, 0), np.minimum(last, size - 1)
    if np.any(last_c < first_c):
        raise MarkupPromptError(f"{where}: the ROI does not overlap the volume")
    slice0, col0, row0 = _slice_coords(tuple(first_c), axis)
    _, col1, row1 = _slice_coords(tuple(last_c), axis)
    del slice0
    return Prompt(slice=key, box=(int(col0), int(row0), int(col1), int(row1)))


def point_prompts(points_node, volume: Volume, axis: str) -> list[Prompt]:
    """One point prompt per defined control point (sign by :func:`point_is_positive`).

    Raises:
        MarkupPromptError: a point lies outside the volume (names the node, the point and its voxel).
    """
    out = []
    size = volume.size_ijk
    for n in range(points_node.GetNumberOfControlPoints()):
        if points_node.GetNthControlPointPositionStatus(n) != points_node.PositionDefined:
            continue
        ras = np.array(points_node.GetNthControlPointPositionWorld(n), dtype=float)
        ijk = volume.ras_to_voxel(ras)
        if not _inside(ijk, size):
            raise MarkupPromptError(
                f"{_label(points_node)} point {n + 1} ({points_node.GetNthControlPointLabel(n)!r}) at RAS "
                f"{tuple(round(float(v), 2) for v in ras)} mm is outside the volume: voxel (i, j, k) "
                f"{tuple(round(float(v), 1) for v in ijk)}, valid 0..{size[0] - 1}, 0..{size[1] - 1}, "
                f"0..{size[2] - 1}"
            )
        vox = tuple(int(v) for v in np.clip(np.round(ijk), 0, np.asarray(size) - 1))
        s, col, row = _slice_coords(vox, axis)  # type: ignore[arg-type]
        out.append(Prompt(slice=s, point=(col, row), positive=point_is_positive(points_node, n)))
    return out


def markups_to_prompts(
    volume: Volume, points_node=None, roi_node=None, axis: str | None = None
) -> MarkupPrompts:
    """Prompts from a fiducial node and/or an ROI node, in voxel coordinates of ``volume``.

    Args:
        volume: the scan (from the volume node: :func:`SemiSAMSegmentLib.mrml_io.volume_from_node`).
        points_node: ``vtkMRMLMarkupsFiducialNode`` or ``None``.
        roi_node: ``vtkMRMLMarkupsROINode`` or ``None``.
        axis: slice axis; ``None``: the ROI's thinnest axis, or axial without an ROI.

    Raises:
        MarkupPromptError: no prompt at all, or a markup outside the volume.
    """
    if axis is None:
        axis = thinnest_axis(roi_corners_ijk(roi_node, volume)) if _placed(roi_node) else "axial"
    if axis not in AXES:
        raise MarkupPromptError(f"unknown axis {axis!r}; use one of {', '.join(AXES)}")
    prompts: list[Prompt] = []
    if _placed(roi_node):
        prompts.append(roi_prompt(roi_node, volume, axis))
    if points_node is not None:
        prompts += point_prompts(points_node, volume, axis)
    if not prompts:
        names = [_label(n) for n in (points_node, roi_node) if n is not None]
        raise MarkupPromptError(
            f"no prompts: place an ROI box or points on the structure ({', '.join(names) or 'no markups chosen'})"
        )
    # The core's own validation: the same errors as the CLI's prompts file, as a second line of defence.
    validated = parse_prompts({"axis": axis, "prompts": [p.to_json() for p in prompts]}, volume.shape)
    kinds = Counter("box" if p.box else ("point+" if p.positive else "point-") for p in validated.prompts)
    return MarkupPrompts(validated, dict(kinds))


def _placed(roi_node) -> bool:
    return roi_node is not None and roi_node.GetNumberOfDefinedControlPoints() > 0
