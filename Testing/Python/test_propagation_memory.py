"""SAM 2-family models propagate through their memory bank (a tiny randomly initialised SAM 2, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_generalists import tiny_sam2

from semisam.propagation import add_prompt, init_state, propagate
from semisam.scan.volume import Volume


@pytest.fixture(scope="module")
def disc_volume():
    """6 slices of 48x64 with a bright disc whose radius changes from slice to slice."""
    z, y, x = np.mgrid[0:6, 0:48, 0:64]
    r = 6 + z
    arr = np.where((y - 24) ** 2 + (x - 30) ** 2 < r**2, 1000.0, 100.0).astype(np.float32)
    return Volume(arr, spacing=(1.0, 1.0, 3.0))


def test_sam2_family_uses_volume_propagation(disc_volume):
    model = tiny_sam2(seed=0)
    assert hasattr(model, "propagate_volume")
    state = init_state(model, disc_volume, "axial", modality="MR")
    add_prompt(state, 2, box=(22, 16, 38, 32))
    add_prompt(state, 4, point=(30, 24), positive=True)
    res = propagate(state)
    assert res.mask.shape == disc_volume.shape and res.mask.dtype == np.uint8
    assert res.confidence.shape == (6,) and res.key_slices == [2, 4]
    # The memory-bank path: one video run, no per-slice tracks, one prompt per key slice.
    assert state.tracks == {} and state.n_predict == 2
    # Confidence is SAM 2's object score where a mask was kept, NaN elsewhere.
    kept = [s for s in range(6) if res.mask[s].any()]
    assert all(0.0 <= res.confidence[s] <= 1.0 for s in kept)
    assert all(np.isnan(res.confidence[s]) for s in range(6) if s not in kept)


def test_sam2_family_prompted_slices_only(disc_volume):
    """Propagate across slices off: the memory-bank answer is kept on the key slices alone."""
    model = tiny_sam2(seed=0)
    state = init_state(model, disc_volume, "axial", modality="MR")
    add_prompt(state, 2, box=(22, 16, 38, 32))
    full = propagate(state)
    only = propagate(state, across_slices=False)
    assert only.key_slices == [2]
    assert np.array_equal(only.mask[2], full.mask[2]) and not np.delete(only.mask, 2, 0).any()
    assert np.isnan(np.delete(only.confidence, 2)).all() and (np.delete(only.source, 2) == -1).all()
