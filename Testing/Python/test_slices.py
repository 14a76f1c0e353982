"""Slices of ``(Z, Y, X)`` arrays across each axis (semisam.slices): take, put, a range written, stacked,
the box around a slice's mask, and a clear error for an unknown axis (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.slices import (
    AXES,
    AxisError,
    axis_index,
    box_from_mask,
    merge_in_range,
    n_slices,
    put_slice,
    slice_shape,
    stack_slices,
    take_slice,
)

SHAPE = (10, 40, 60)  # (Z, Y, X): 10 axial slices of 40 rows x 60 columns


def test_take_and_put_slice_every_axis():
    a = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    assert take_slice(a, "axial", 3).shape == (40, 60) == slice_shape(SHAPE, "axial")
    assert take_slice(a, "coronal", 3).shape == (10, 60) == slice_shape(SHAPE, "coronal")
    assert take_slice(a, "sagittal", 3).shape == (10, 40) == slice_shape(SHAPE, "sagittal")
    # Row/column meaning: axial (j, i), coronal (k, i), sagittal (k, j).
    k, j, i = 4, 7, 11
    assert take_slice(a, "axial", k)[j, i] == a[k, j, i]
    assert take_slice(a, "coronal", j)[k, i] == a[k, j, i]
    assert take_slice(a, "sagittal", i)[k, j] == a[k, j, i]
    for axis in AXES:
        b = np.zeros(SHAPE, np.int64)
        put_slice(b, axis, 5, take_slice(a, axis, 5))
        assert np.array_equal(take_slice(b, axis, 5), take_slice(a, axis, 5))
        assert b.sum() == take_slice(a, axis, 5).sum()


def test_box_from_mask():
    m = np.zeros((20, 30), bool)
    assert box_from_mask(m) is None
    m[3:7, 10:15] = True
    assert box_from_mask(m) == (10, 3, 14, 6)


def test_axis_names_and_numbers():
    assert [axis_index(a) for a in ("axial", "Coronal", "SAGITTAL", 0, 1, np.int64(2))] == [0, 1, 2, 0, 1, 2]
    assert [n_slices(SHAPE, a) for a in AXES] == [10, 40, 60]
    for bad in ("oblique", 3, -1, None, 1.0):
        with pytest.raises(AxisError, match="unknown axis"):
            axis_index(bad)
    assert issubclass(AxisError, ValueError)
    with pytest.raises(IndexError, match="slice index 10 outside 0..9"):
        take_slice(np.zeros(SHAPE), "axial", 10)
    with pytest.raises(IndexError):
        take_slice(np.zeros(SHAPE), "axial", -1)  # no negative indexing


def test_stack_is_the_inverse_of_taking_every_slice():
    a = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    for axis in AXES:
        slices = [take_slice(a, axis, s) for s in range(n_slices(SHAPE, axis))]
        assert np.array_equal(stack_slices(slices, axis), a)


def test_merge_in_range_replaces_only_the_range():
    current = np.zeros(SHAPE, np.uint8)
    new = np.ones(SHAPE, np.uint8)
    for axis in AXES:
        out = merge_in_range(current, new, axis, 2, 4)
        assert out.dtype == np.uint8 and current.sum() == 0  # a new array; the input is untouched
        written = [s for s in range(n_slices(SHAPE, axis)) if take_slice(out, axis, s).any()]
        assert written == [2, 3, 4] and all(take_slice(out, axis, s).all() for s in written)
