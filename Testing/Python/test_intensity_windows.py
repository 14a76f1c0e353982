"""Intensity windows: CT presets, MRI percentiles over the whole volume, hashable cache keys."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.scan.intensity import CT_PRESETS, IntensityError, IntensityWindow, apply_window, window_for
from semisam.scan.volume import read_volume


def test_ct_lung_preset_maps_hu_linearly():
    arr = np.array([[[-2000.0, -1160.0, -410.0, 340.0, 3000.0]]], dtype=np.float32)
    win = window_for(arr, "CT")
    assert (win.low, win.high) == CT_PRESETS["lung"]
    out = apply_window(arr, win)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_ct_preset_is_fitted_to_the_volume_range():
    # air at -1024 HU: the lung preset's -1160 is never reached, so the darkest voxel maps to 0
    arr = np.array([[[-1024.0, -500.0, 0.0, 1500.0]]], dtype=np.float32)
    win = window_for(arr, "CT")
    assert (win.low, win.high) == (-1024.0, 340.0)
    assert apply_window(arr, win)[0, 0, 0] == 0.0
    narrow = window_for(np.array([[[-100.0, 50.0]]], np.float32), "CT", "lung")
    assert (narrow.low, narrow.high) == (-100.0, 50.0)


def test_ct_other_presets_and_errors():
    arr = np.zeros((2, 2, 2), np.float32)
    assert window_for(arr, "CT", "bone").name == "ct:bone"
    with pytest.raises(IntensityError, match="unknown intensity preset 'lungs'"):
        window_for(arr, "CT", "lungs")
    with pytest.raises(IntensityError, match="CT presets need modality 'CT'"):
        window_for(arr, "MR", "lung")
    with pytest.raises(IntensityError, match="low < high"):
        IntensityWindow(5.0, 5.0)


def test_mr_percentiles_are_over_the_whole_volume_not_per_slice():
    rng = np.random.default_rng(0)
    # slice 0 is dark, slice 1 bright: a per-slice window would map both to the same range
    arr = np.stack([rng.uniform(0, 100, (64, 64)), rng.uniform(900, 1000, (64, 64))]).astype(np.float32)
    win = window_for(arr, "MR")
    lo, hi = np.percentile(arr, [0.5, 99.5])
    assert win.low == pytest.approx(lo, rel=1e-5) and win.high == pytest.approx(hi, rel=1e-5)
    out = apply_window(arr, win)
    assert out[0].mean() < 0.1 and out[1].mean() > 0.9


def test_window_is_hashable_and_equal_by_value():
    a, b = IntensityWindow(0.0, 1.0, "x"), IntensityWindow(0.0, 1.0, "x")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.low = 3.0  # frozen


def test_constant_volume_gets_a_usable_window():
    win = window_for(np.full((3, 4, 4), 7.0, np.float32), None)
    assert win.high > win.low
    assert np.all(np.isfinite(apply_window(np.full((4, 4), 7.0), win)))


def test_real_brain_mri_window(brain1):
    vol = read_volume(brain1.image)
    win = window_for(vol, brain1.modality)
    scaled = apply_window(vol.array, win)
    assert 0.0 <= scaled.min() and scaled.max() <= 1.0
    # 0.5..99.5 percentiles: about 0.5 % of voxels saturate at each end (ties at 0 count too)
    assert (scaled >= 1.0).mean() < 0.01
