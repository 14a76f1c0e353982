"""Area continuity beyond the outermost key slice (semisam.propagation.continuity)."""

from __future__ import annotations

import numpy as np

from semisam.propagation.continuity import rebound_cut


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
