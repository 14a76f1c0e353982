"""Propagation engine on real scans with the real LiteMedSAM weights (CPU, small crops, few slices).

One model and one embedding cache are shared by the module, so each slice is encoded once for all tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from semisam.generalists import build_generalist
from semisam.generalists.cache import EmbeddingCache
from semisam.metrics import dice
from semisam.prompts import PromptError
from semisam.propagation import PropagationParams, add_prompt, init_state, propagate
from semisam.propagation.simulate import crop_around, middle_slice
from semisam.scan.volume import read_mask, read_volume
from semisam.slices import box_from_mask, take_slice


@pytest.fixture(scope="module")
def model():
    return build_generalist("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def cache():
    return EmbeddingCache(max_bytes=256 * 2**20)


@pytest.fixture(scope="module")
def lung_crop(lung1):
    """lung1 cropped to the nodule (3 lesion slices) +-2 slices and +-24 px: (Volume, label)."""
    vol = read_volume(lung1.image)
    lab = read_mask(lung1.label, reference=vol).array
    return crop_around(vol, lab, (2, 24, 24))


def _state(model, cache, vol, axis="axial", params=None):
    return init_state(model, vol, axis, modality="CT", cache=cache, params=params, scan_id=f"crop-{id(vol)}")


def _boxed(model, cache, lung_crop, params=None):
    """``(state, vol, lab, key)``: a new state with the nodule's box on its middle slice ``key``."""
    vol, lab = lung_crop
    key = middle_slice(lab)
    state = _state(model, cache, vol, params=params)
    add_prompt(state, key, box=box_from_mask(lab[key] > 0))
    return state, vol, lab, key


def test_one_box_propagates_and_stops(model, cache, lung_crop):
    state, vol, lab, key = _boxed(model, cache, lung_crop)
    res = propagate(state)
    assert res.mask.shape == vol.shape and res.mask.dtype == np.uint8
    d = dice(res.mask, lab)
    assert d > 0.6, d
    # It reached both neighbours of the key slice and stopped where the nodule ends (slices 0-1 and
    # the last two of the crop hold no nodule).
    assert res.slices == [key - 1, key, key + 1], (res.slices, res.stops)
    assert set(res.stops) == {f"{key}:+1", f"{key}:-1"}
    assert np.isnan(res.confidence[0]) and 0 < res.confidence[key] <= 1
    assert res.source[key - 1] == key
    # Each slice was encoded at most once (5 slices: key, 2 propagated, 2 where it stopped).
    assert state.n_encode <= 5


def test_new_prompt_repropagates_only_its_range(model, cache, lung_crop):
    state, vol, lab, key = _boxed(model, cache, lung_crop)
    first = propagate(state)
    down = list(state.tracks[(key, -1)].results)
    calls = state.n_predict
    # Nothing changed: a second propagate makes no model call at all.
    again = propagate(state)
    assert state.n_predict == calls and np.array_equal(again.mask, first.mask)
    # A box on the slice above the key: only that slice and its upward track are recomputed; the key
    # slice's downward track (other side) is reused object-for-object.
    up = key + 1
    lo, hi = add_prompt(state, up, box=box_from_mask(lab[up] > 0))
    assert (lo, hi) == (key, vol.shape[0])
    propagate(state)
    assert state.tracks[(key, -1)].results == down and all(
        a is b for a, b in zip(state.tracks[(key, -1)].results, down, strict=True)
    )
    new_calls = state.n_predict - calls
    # key+1 answered (1 call) + its upward track (at most 4 candidates per slice up to the crop's end).
    assert 1 <= new_calls <= 1 + 4 * (vol.shape[0] - up - 1), new_calls
    fresh = _state(model, cache, vol)
    add_prompt(fresh, key, box=box_from_mask(lab[key] > 0))
    add_prompt(fresh, up, box=box_from_mask(lab[up] > 0))
    propagate(fresh)
    assert new_calls < fresh.n_predict


def test_prompted_slices_only_answers_the_key_slices_and_keeps_the_tracks(model, cache, lung_crop):
    state, vol, lab, key = _boxed(model, cache, lung_crop)
    across = propagate(state)
    tracks = {k: list(t.results) for k, t in state.tracks.items()}
    calls = state.n_predict
    only = propagate(state, across_slices=False)
    assert state.n_predict == calls  # the key slice's answer is reused: no model call
    assert only.slices == [key] and only.key_slices == [key] and only.stops == {}
    assert np.array_equal(only.mask[key], across.mask[key]) and not np.delete(only.mask, key, 0).any()
    assert np.isnan(np.delete(only.confidence, key)).all() and only.confidence[key] == across.confidence[key]
    # A second key slice answered on its own: its tracks are not run, the first key's are kept.
    up = key + 1
    add_prompt(state, up, box=box_from_mask(lab[up] > 0))
    only = propagate(state, across_slices=False)
    assert only.slices == [key, up] and (up, 1) not in state.tracks and (up, -1) not in state.tracks
    assert {k: t.results for k, t in state.tracks.items() if k[0] == key} == {
        k: v for k, v in tracks.items() if k[0] == key
    }
    assert dice(only.mask[up], lab[up]) > 0.5
    # Across slices again: the kept tracks are brought up to date, as if it had never been off.
    fresh = _state(model, cache, vol)
    add_prompt(fresh, key, box=box_from_mask(lab[key] > 0))
    add_prompt(fresh, up, box=box_from_mask(lab[up] > 0))
    assert np.array_equal(propagate(state).mask, propagate(fresh).mask)


def test_prompted_slices_only_anchors_points_on_the_current_mask(model, cache, lung_crop):
    vol, lab = lung_crop
    key = middle_slice(lab)
    (row, col), *_ = np.argwhere(lab[key] > 0)
    state = _state(model, cache, vol)
    add_prompt(state, key, point=(int(col), int(row)), positive=True)
    loose = propagate(state, across_slices=False).mask[key]
    anchored = propagate(_fresh_point(model, cache, vol, key, col, row), across_slices=False, current=lab)
    # The proposal's box keeps the positive point's answer to the structure (measured: 0.79 anchored,
    # 0.0 for the point alone on this nodule).
    assert dice(anchored.mask[key], lab[key]) > 0.6 > dice(loose, lab[key]) + 0.2
    with pytest.raises(ValueError, match="not on the scan's grid"):
        propagate(state, across_slices=False, current=lab[:2])


def _fresh_point(model, cache, vol, key, col, row):
    state = _state(model, cache, vol)
    add_prompt(state, key, point=(int(col), int(row)), positive=True)
    return state


class _Cancel(Exception):
    pass


def test_cancelled_propagation_leaves_a_state_that_completes_the_same_result(model, cache, lung_crop):
    ref = propagate(_boxed(model, cache, lung_crop)[0])
    state, vol, lab, key = _boxed(model, cache, lung_crop)
    seen = []

    def cancel_going_down(s, outcome):  # what the progress dialog's Cancel button does
        seen.append(s)
        if s < key:
            raise _Cancel

    with pytest.raises(_Cancel):
        propagate(state, progress=cancel_going_down)
    # The upward track finished before the cancel and is kept; the interrupted downward one is gone, not
    # left behind with partial masks that a later call would take as complete.
    assert seen == [key + 1, key + 2, key - 1] and (key, 1) in state.tracks and (key, -1) not in state.tracks
    again = propagate(state)
    assert np.array_equal(again.mask, ref.mask) and again.stops == ref.stops


def test_negative_point_slice_bounds_the_track(model, cache, lung_crop):
    relaxed = PropagationParams(min_score=0.0, min_likeness=0.0, min_overlap=0.0, max_area_ratio=1e9)
    state, vol, lab, key = _boxed(model, cache, lung_crop, params=relaxed)
    add_prompt(state, key + 2, point=(0, 0), positive=False)
    res = propagate(state)
    assert not res.mask[key + 2 :].any()  # nothing at or beyond the negative-only slice
    assert res.mask[key + 1].any()
    assert state.tracks[(key, 1)].limit == key + 2


def test_bad_prompt_is_a_clear_error(model, cache, lung_crop):
    vol, _ = lung_crop
    state = _state(model, cache, vol)
    with pytest.raises(PromptError, match="outside"):
        add_prompt(state, vol.shape[0], box=(0, 0, 3, 3))
    with pytest.raises(PromptError, match="inverted"):
        add_prompt(state, 0, box=(5, 0, 3, 3))
    with pytest.raises(PromptError, match="unknown axis"):
        init_state(model, vol, "oblique", modality="CT")
    with pytest.raises(ValueError, match="no prompts"):
        propagate(state)


def test_coronal_axis_mask_lands_in_the_right_voxels(model, cache, lung_crop):
    """Prompt a coronal slice (rows = k, columns = i): the key slice's mask must lie inside its box."""
    vol, lab = lung_crop
    j = int(np.argmax((lab > 0).sum(axis=(0, 2))))  # coronal slice with the most nodule voxels
    box = box_from_mask(take_slice(lab, "coronal", j) > 0)
    assert box is not None
    # Bound the track to the prompted slice so the test encodes one slice.
    state = _state(model, cache, vol, axis="coronal")
    add_prompt(state, j, box=box)
    add_prompt(state, j - 1, point=(0, 0), positive=False)
    add_prompt(state, j + 1, point=(0, 0), positive=False)
    res = propagate(state)
    m = take_slice(res.mask, "coronal", j) > 0
    assert m.any()
    rows, cols = np.nonzero(m)
    x0, y0, x1, y1 = box
    # Within the box (+2 voxels: SAM masks may bleed slightly past a tight box).
    assert cols.min() >= x0 - 2 and cols.max() <= x1 + 2 and rows.min() >= y0 - 2 and rows.max() <= y1 + 2
    # A coronal slice of this 5 mm CT has 5 mm x 0.57 mm pixels: the state shows the model square pixels.
    assert state.model.name.startswith("litemedsam@square")
    assert dice(m, take_slice(lab, "coronal", j)) > 0.5
    assert res.mask.sum() == m.sum()  # nothing outside the prompted coronal slice


def test_point_correction_on_a_propagated_slice_reuses_its_mask(model, cache, lung_crop):
    """A point on a slice that propagation already filled refines that mask (its box + the point)."""
    state, vol, lab, key = _boxed(model, cache, lung_crop)
    before = propagate(state)
    below = key - 1
    assert before.mask[below].any()
    ys, xs = np.nonzero(lab[below])
    c = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))  # the label pixel nearest its centre
    encoded = state.n_encode
    add_prompt(state, below, point=(int(xs[c]), int(ys[c])), positive=True)
    after = propagate(state)
    assert state.n_encode == encoded  # every slice it needed was already encoded
    k = state.keys[below]
    assert k.result is not None and k.result.prompt.box is not None  # anchored by the propagated mask's box
    assert k.result.prompt.points is not None and k.result.prompt.point_labels.tolist() == [1]
    assert dice(after.mask[below], lab[below]) > 0.5
    assert after.key_slices == [below, key]
