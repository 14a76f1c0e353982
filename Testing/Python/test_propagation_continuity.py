"""Area continuity beyond the outermost key slice (semisam.propagation.continuity)."""

from __future__ import annotations

import numpy as np

from semisam.propagation.continuity import REBOUND_RATIO, rebound_cut
from semisam.propagation.params import PropagationParams


def test_a_track_that_shrinks_then_grows_again_is_cut_at_its_narrowest_slice():
    # Measured on a single-box 1 mm thalamus track: it narrows to the thalamus' last slice (445 px,
    # index 8), then widens into the midbrain.
    areas = [516, 576, 527, 520, 557, 532, 523, 479, 445, 449, 513, 531, 685, 719, 470, 480]
    assert rebound_cut(areas) == 8


def test_a_structure_that_rises_and_ends_with_noise_is_not_cut():
    rng = np.random.default_rng(0)
    profile = np.concatenate([np.linspace(200, 300, 6), np.linspace(300, 10, 30)])
    noisy = (profile * (1 + 0.1 * rng.standard_normal(profile.size))).astype(int)
    assert rebound_cut(noisy) is None
    # One odd answer (the model grabs a neighbour on one slice) does not end the track either.
    odd = noisy.copy()
    odd[20] *= 3
    assert rebound_cut(odd) is None


def test_past_the_largest_slice_a_rise_without_a_fall_is_a_rebound():
    # A lane below the lowest of three thalamus boxes (whole head, 2.5 mm slices): from the key slice's
    # 213 px it grew into the tissue below the thalamus, never falling first.
    leak = [213, 277, 742, 551, 1139]
    assert rebound_cut(leak) is None  # from a single box the largest slice may still lie ahead
    assert rebound_cut(leak, past_peak=True) == 1  # the last slice not yet 1.5x the smallest
    # A structure that only ends (noise included) is never cut, however the track started.
    rng = np.random.default_rng(1)
    ending = (np.linspace(400, 20, 12) * (1 + 0.1 * rng.standard_normal(12))).astype(int)
    assert rebound_cut(ending, past_peak=True) is None
    # Where the area did fall first, the cut is where it was narrowest, as without the flag.
    fell = [400, 300, 200, 150, 180, 220, 260, 300, 340]
    assert rebound_cut(fell, past_peak=True) == rebound_cut(fell) == 3


def test_single_box_track_stops_where_the_structure_narrows_into_another():
    """A tube that narrows (radius 10 -> 6.5) towards slice 10, where a wider look-alike structure joins it
    and goes on to slice 0. Every step agrees with the carried mask and looks alike; the area rebound
    ends the track at the narrowest slice."""
    import torch

    from semisam.generalists.base import SliceEmbedding, SlicePrediction
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    class WholeBlob:  # answers the bright blob of the slice, whatever the prompt
        name, image_size, device = "scripted", 64, torch.device("cpu")

        def encode(self, image):
            return SliceEmbedding(torch.zeros(1, 1, 4, 4), tuple(image.shape), {"image": np.array(image)})

        def predict(self, embedding, prompt):
            m = embedding.extras["image"] > 0.5
            return SlicePrediction(np.where(m, 5.0, -5.0).astype(np.float32), 0.9)

    n, shape = 24, (64, 64)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    radius = {z: 10 - 3.5 * (16 - z) / 6 for z in range(10, 17)}  # the target below the key slice
    radius.update({z: 10 - (z - 16) for z in range(17, 21)})  # and above it, ending at slice 20
    radius.update({z: min(11.5, 6.5 + (10 - z)) for z in range(0, 10)})  # the other structure
    vol = np.zeros((n, *shape), np.float32)
    rng = np.random.default_rng(0)
    for z in range(n):
        vol[z] = 0.2 + 0.05 * rng.random(shape)
        if z in radius:
            vol[z][(yy - 32) ** 2 + (xx - 32) ** 2 <= radius[z] ** 2] = 0.7 + 0.05 * rng.random()

    def run(rebound_ratio):
        params = PropagationParams(rebound_ratio=rebound_ratio)
        state = init_state(WholeBlob(), Volume(vol, (1.0, 1.0, 1.0)), "axial", params=params, modality="MR")
        add_prompt(state, 16, box=(22, 22, 42, 42))
        return propagate(state)

    result = run(REBOUND_RATIO)
    assert set(range(10, 21)) <= set(result.slices)
    assert not set(range(0, 9)) & set(result.slices), result.stops
    assert "grew again" in result.stops["16:-1"]
    # On by default; off, the track runs on into the other structure.
    assert PropagationParams().rebound_ratio == REBOUND_RATIO
    assert set(range(0, 9)) & set(run(0.0).slices)


def _blob_model():
    """A scripted generalist that answers the bright pixels inside the prompt's box (score 0.9)."""
    import torch

    from semisam.generalists.base import SliceEmbedding, SlicePrediction

    class BrightInBox:
        name, image_size, device = "scripted", 64, torch.device("cpu")

        def encode(self, image):
            return SliceEmbedding(torch.zeros(1, 1, 4, 4), tuple(image.shape), {"image": np.array(image)})

        def predict(self, embedding, prompt):
            img = embedding.extras["image"]
            m = np.zeros(img.shape, bool)
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
            m[y0 : y1 + 1, x0 : x1 + 1] = img[y0 : y1 + 1, x0 : x1 + 1] > 0.5
            return SlicePrediction(np.where(m, 5.0, -5.0).astype(np.float32), 0.9)

    return BrightInBox()


def test_beyond_the_outermost_of_several_boxes_a_growing_track_ends():
    """A cylinder (radius 8 px, slices 10-24) boxed on slices 12 and 22; below slice 10 a wider look-alike
    joins it. The track below slice 12 may run 6 slices (half the gap, plus one), and every step passes
    the tests; the area never fell first, but the largest slice is behind it: the track ends."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    n, shape = 30, (64, 64)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    radius = {z: 8.0 for z in range(10, 25)}
    radius.update({z: 8.0 + 2.5 * (10 - z) for z in range(4, 10)})  # the look-alike below
    vol = np.full((n, *shape), 0.2, np.float32)
    for z, r in radius.items():
        vol[z][(yy - 32) ** 2 + (xx - 32) ** 2 <= r**2] = 0.7

    def run(ratio):
        state = init_state(
            _blob_model(),
            Volume(vol, (1.0, 1.0, 1.0)),
            "axial",
            params=PropagationParams(rebound_ratio=ratio),
            modality="MR",
        )
        for k in (12, 22):
            add_prompt(state, k, box=(23, 23, 41, 41))
        return propagate(state)

    result = run(REBOUND_RATIO)
    assert set(range(10, 25)) <= set(result.slices)
    assert not set(range(0, 8)) & set(result.slices), result.stops
    assert "grew again" in result.stops["12:-1"]
    assert set(range(6, 8)) <= set(run(0.0).slices)  # without the rule the reach alone lets it in


def test_each_boxed_part_is_followed_on_its_own():
    """Two discs (left and right, radius 6 px, 5 mm slices) on slices 5-15, boxed apart on slice 10; from slice 12 on a
    bright bar lies between them, 5 px from each (joined to them by a slab on slice 16). One box around
    both parts' previous masks would take the bar in; each part followed in its own box never reaches it."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    n, shape = 20, (64, 64)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    vol = np.full((n, *shape), 0.2, np.float32)
    truth = np.zeros(vol.shape, bool)
    for z in range(5, 16):
        for cx in (16, 48):
            truth[z] |= (yy - 32) ** 2 + (xx - cx) ** 2 <= 36
    vol[truth] = 0.7
    vol[12:16, 28:37, 27:38] = 0.7  # the bar: columns 27-37, discs end at columns 22 and 42
    vol[16, 26:39, 10:55] = 0.7  # a slab beyond the discs' last slice, touching them and the bar

    def run(margin_mm):
        params = PropagationParams(box_margin_mm=margin_mm)
        state = init_state(_blob_model(), Volume(vol, (1.0, 1.0, 5.0)), "axial", params=params, modality="MR")
        add_prompt(state, 10, box=(9, 25, 23, 39))
        add_prompt(state, 10, box=(41, 25, 55, 39))
        return state, np.asarray(propagate(state).mask) > 0

    state, mask = run(PropagationParams().box_margin_mm)
    assert len(state.tracks[(10, 1)].lanes) == 2
    assert np.array_equal(mask[5:16] & truth[5:16], truth[5:16])  # both discs
    assert not mask[12:16, 28:37, 27:38].any()  # and nothing of the bar
    # A margin that joins the two parts makes one lane, boxed around both: it takes the bar in.
    state, mask = run(12.0)
    assert len(state.tracks[(10, 1)].lanes) == 1 and mask[12:16, 28:37, 27:38].any()


def test_parts_within_the_step_margin_are_followed_together():
    """Two discs 2 px apart (as the left and the right thalamus across the third ventricle): a step would
    box them together anyway, so the key slice's two boxes make one lane, and the structure is found."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    n, shape = 20, (64, 64)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    vol = np.full((n, *shape), 0.2, np.float32)
    truth = np.zeros(vol.shape, bool)
    for z in range(5, 16):
        for cx in (24, 39):  # columns 18-30 and 33-45
            truth[z] |= (yy - 32) ** 2 + (xx - cx) ** 2 <= 36
    vol[truth] = 0.7
    state = init_state(_blob_model(), Volume(vol, (1.0, 1.0, 3.0)), "axial", modality="MR")
    add_prompt(state, 10, box=(17, 25, 31, 39))
    add_prompt(state, 10, box=(32, 25, 46, 39))
    result = propagate(state)
    assert len(state.keys[10].parts) == 1 and len(state.tracks[(10, 1)].lanes) == 1
    assert np.array_equal(np.asarray(result.mask)[5:16] > 0, truth[5:16])


def test_a_lane_cut_back_leaves_the_other_lane_and_one_result_per_slice():
    """Left and right discs (radius 6 px, 1 mm slices) boxed apart on slices 12 and 22; below slice 10 a
    look-alike widens under the right disc only. The right lane below slice 12 is cut back where it grew;
    the left one goes on to the left disc's end, and the track keeps one result per slice."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    n, shape = 30, (64, 64)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    vol = np.full((n, *shape), 0.2, np.float32)
    for z in range(8, 25):
        vol[z][(yy - 32) ** 2 + (xx - 16) ** 2 <= 36] = 0.7
    for z in range(4, 25):
        r = 6 if z >= 10 else 6 + 2 * (10 - z)  # the look-alike below slice 10, off the left disc
        vol[z][(yy - 32) ** 2 + (xx - 48) ** 2 <= r * r] = 0.7
    state = init_state(_blob_model(), Volume(vol, (1.0, 1.0, 1.0)), "axial", modality="MR")
    for k in (12, 22):
        add_prompt(state, k, box=(9, 25, 23, 39))
        add_prompt(state, k, box=(41, 25, 55, 39))
    mask = np.asarray(propagate(state).mask) > 0
    down = state.tracks[(12, -1)]
    slices = [r.slice for r in down.results]
    assert slices == list(range(11, 11 - len(slices), -1)) and len(down.lanes) == 2
    assert mask[8, 32, 16] and not mask[8:10, :, 32:].any()  # the left disc to its end, no look-alike
