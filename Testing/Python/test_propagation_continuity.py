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
