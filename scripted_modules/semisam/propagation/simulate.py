"""Prompts simulated from a reference label, for the demo, tests and benchmarks.

Key-slice rule (something the product can apply itself, from the extent the user marks or the extent a
first propagation found): the first key slice is the slice where the structure is largest; with ``k > 1``
the extent ``[lo, hi]`` is cut into ``k`` equal parts and each part that does not already hold a key slice
gets its centre slice. A radiologist does the same: box the lesion where it is biggest, then add boxes
spread over its length.
"""

from __future__ import annotations

import numpy as np

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


def boxes_from_label(label: np.ndarray, slices: list[int], axis: str = "axial") -> PromptSet:
    """A :class:`PromptSet` with the label's tight box on each of ``slices``."""
    prompts = []
    for i in slices:
        box = box_from_mask(take_slice(label, axis, i) > 0)
        if box is None:
            raise ValueError(f"the label is empty on {axis} slice {i}")
        prompts.append(Prompt(slice=int(i), box=box))
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
