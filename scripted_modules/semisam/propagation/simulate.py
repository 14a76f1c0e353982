"""Prompts simulated from a reference label, for the demo, tests and benchmarks.

Key-slice rule (something the product can apply itself, from the extent the user marks or the extent a
first propagation found): the first key slice is the slice where the structure is largest; with ``k > 1``
the extent ``[lo, hi]`` is cut into ``k`` equal parts and each part that does not already hold a key slice
gets its centre slice. A radiologist does the same: box the lesion where it is biggest, then add boxes
spread over its length.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from semisam.prompts import Prompt, PromptSet
from semisam.slices import axis_index, box_from_mask, take_slice


def lesion_slices(label: np.ndarray, axis: str = "axial") -> list[int]:
    """Indices of the slices across ``axis`` where ``label`` ``(Z, Y, X)`` is non-zero."""
    a = axis_index(axis)
    other = tuple(d for d in range(3) if d != a)
    return [int(i) for i in np.flatnonzero(np.asarray(label).any(axis=other))]


def middle_slice(label: np.ndarray, axis: str = "axial") -> int:
    """The middle one of the lesion's slices."""
    s = lesion_slices(label, axis)
    if not s:
        raise ValueError("the label is empty: no lesion slice to prompt")
    return s[len(s) // 2]


def key_slices(label: np.ndarray, k: int, axis: str = "axial") -> list[int]:
    """``k`` key slices by the rule in the module docstring (sorted)."""
    s = lesion_slices(label, axis)
    if not s:
        raise ValueError("the label is empty: no lesion slice to prompt")
    areas = {i: int((take_slice(label, axis, i) > 0).sum()) for i in s}
    largest = max(s, key=lambda i: (areas[i], -abs(i - s[len(s) // 2])))
    lo, hi = s[0], s[-1]
    keys = {largest}
    edges = np.linspace(lo, hi + 1, k + 1)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if any(a <= x < b for x in keys):
            continue
        centre = (a + b - 1) / 2
        keys.add(min(s, key=lambda i, c=centre: (abs(i - c), i)))
    return sorted(keys)


def structure_boxes(truth2d: np.ndarray, min_fraction: float = 0.05) -> list[tuple[int, int, int, int]]:
    """One tight ``(x0, y0, x1, y1)`` box per connected part of the truth on a slice (8-connectivity),
    largest first; parts smaller than ``min_fraction`` of the largest (or 3 pixels) get none.

    A radiologist boxes the left and the right thalamus separately: one box around both would hand the
    generalist the ventricle between them too.
    """
    comp, n = ndi.label(np.asarray(truth2d) > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    sizes = np.bincount(comp.ravel())[1:]
    keep = [
        k + 1 for k in np.argsort(-sizes, kind="stable") if sizes[k] >= max(3, min_fraction * sizes.max())
    ]
    return [box_from_mask(comp == k) for k in keep]  # type: ignore[misc]


def boxes_from_label(label: np.ndarray, slices: list[int], axis: str = "axial") -> PromptSet:
    """A :class:`PromptSet` with a tight box around each part of the label (:func:`structure_boxes`) on
    each of ``slices``."""
    prompts = []
    for i in slices:
        part = take_slice(label, axis, i) > 0
        boxes = structure_boxes(part) or [
            b for b in [box_from_mask(part)] if b is not None
        ]  # specks: one box
        if not boxes:
            raise ValueError(f"the label is empty on {axis} slice {i}")
        prompts.extend(Prompt(slice=int(i), box=box) for box in boxes)
    return PromptSet(axis=axis, prompts=tuple(prompts))


def crop_around(volume, label: np.ndarray, margin_vox: tuple[int, int, int] = (2, 24, 24)):
    """Crop a :class:`~semisam.scan.volume.Volume` and its label to the label's bounding box plus a margin.

    Geometry is kept exact: the crop's origin is the RAS position of its first voxel, so the crop lies
    on the original grid (used to make small, fast test cases from real scans).

    Args:
        volume: the scan.
        label: ``(Z, Y, X)`` on the scan's grid.
        margin_vox: margin in voxels along ``(Z, Y, X)``.

    Returns:
        ``(cropped volume, cropped label)``.
    """
    from semisam.scan.volume import Volume

    idx = np.argwhere(np.asarray(label) > 0)
    if idx.size == 0:
        raise ValueError("the label is empty: nothing to crop around")
    lo = np.maximum(idx.min(0) - np.array(margin_vox), 0)
    hi = np.minimum(idx.max(0) + np.array(margin_vox) + 1, np.array(label.shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    origin = volume.voxel_to_ras([lo[2], lo[1], lo[0]])  # (i, j, k) of the first kept voxel
    # The source names the crop, not the file: other voxels must not pass for the file's (messages, ids).
    where = ",".join(f"{a}:{b}" for a, b in zip(lo, hi, strict=True))
    source = f"{volume.source}[crop z,y,x {where}]" if volume.source else None
    crop = Volume(
        np.ascontiguousarray(volume.array[sl]), volume.spacing, tuple(origin), volume.direction, source
    )
    return crop, np.ascontiguousarray(np.asarray(label)[sl])
