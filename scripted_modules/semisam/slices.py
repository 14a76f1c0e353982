"""2D slices of ``(Z, Y, X)`` arrays across a named axis: take, put, write a range, stack, and the box
around a slice's mask. Propagation, the merge rules, the embedding cache and the simulated annotator call
these for every slice they touch; the prompt form (:mod:`semisam.prompts`) uses the same axes.

``axis`` names the voxel axis the slices are taken across (or its index 0/1/2 in the array); inside a
slice, ``(row, column)`` index the 2D array :func:`take_slice` returns and boxes and points are given as
``(column, row)``; which voxel index each is per axis: the table in :mod:`semisam.prompts`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Axis name -> index of that axis in a ``(Z, Y, X)`` array.
AXES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}


class AxisError(ValueError):
    """An axis that is none of ``axial``/``coronal``/``sagittal`` (or 0/1/2)."""


def axis_index(axis: str | int) -> int:
    """``"axial"|"coronal"|"sagittal"`` (or 0/1/2) -> axis of a ``(Z, Y, X)`` array.

    Raises:
        AxisError: any other value.
    """
    if isinstance(axis, (int, np.integer)) and int(axis) in (0, 1, 2):
        return int(axis)
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES[axis.lower()]
    raise AxisError(f"unknown axis {axis!r}; use one of {', '.join(AXES)}")


def slice_shape(shape_zyx: tuple[int, int, int], axis: str | int) -> tuple[int, int]:
    """``(rows, columns)`` of a slice across ``axis`` of a volume of shape ``(Z, Y, X)``."""
    a = axis_index(axis)
    rest = [s for d, s in enumerate(shape_zyx) if d != a]
    return (rest[0], rest[1])


def n_slices(shape_zyx: tuple[int, int, int], axis: str | int) -> int:
    return int(shape_zyx[axis_index(axis)])


def take_slice(array: np.ndarray, axis: str | int, index: int) -> np.ndarray:
    """The 2D slice ``index`` across ``axis`` of a ``(Z, Y, X)`` array, as ``(rows, columns)``.

    axial -> ``array[k]`` ``(Y, X)``; coronal -> ``array[:, j]`` ``(Z, X)``; sagittal -> ``array[:, :, i]``
    ``(Z, Y)``. A view for axial, a copy otherwise.

    Raises:
        AxisError: unknown axis. IndexError: ``index`` outside ``0..n-1`` (no negative indexing: a
            slice -1 is a caller's bug, not the last slice).
    """
    a = axis_index(axis)
    n = array.shape[a]
    if not 0 <= index < n:
        raise IndexError(f"slice index {index} outside 0..{n - 1} along axis {axis!r}")
    return np.take(array, index, axis=a) if a else array[index]


def put_slice(array: np.ndarray, axis: str | int, index: int, values: np.ndarray) -> None:
    """Write ``values`` (shape of :func:`take_slice`'s result) into slice ``index`` across ``axis``."""
    a = axis_index(axis)
    sl: list[Any] = [slice(None)] * 3
    sl[a] = index
    array[tuple(sl)] = values


def merge_in_range(current: np.ndarray, new: np.ndarray, axis: str | int, lo: int, hi: int) -> np.ndarray:
    """``current`` with slices ``lo..hi`` (inclusive, across ``axis``) replaced by ``new``'s, as uint8.

    How a propagation is written into a segment (SemiSAMSegment's Propagate; the simulated annotator):
    both ``(Z, Y, X)`` on the same grid; slices outside the range keep ``current``'s voxels.
    """
    out = np.array(current, dtype=np.uint8, copy=True)
    for s in range(lo, hi + 1):
        put_slice(out, axis, s, take_slice(new, axis, s))
    return out


def stack_slices(slices: list[np.ndarray], axis: str | int) -> np.ndarray:
    """Inverse of taking every slice: ``(N, rows, cols)`` along ``axis`` -> ``(Z, Y, X)``."""
    return np.stack(slices, axis=axis_index(axis))


def box_from_mask(mask2d: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight inclusive ``(x0, y0, x1, y1)`` around a 2D mask's foreground, or ``None`` when empty."""
    ys, xs = np.nonzero(mask2d)
    if ys.size == 0:
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
