"""Training data: masks follow the image onto the model grid; sampling over-represents the structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_synth import synthetic_case

from semisam.model_folder import new_manifest
from semisam.scan.volume import Volume
from semisam.store import LabeledStore
from semisam.training.data import Augmenter, Sampler, SamplerSpec, load_labeled, load_unlabeled


def _oblique_store(tmp_path):
    """One case with anisotropic spacing and a flipped, permuted direction (the grid is not the model's)."""
    vol, mask = synthetic_case(3)
    direction = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, 1]], dtype=float)  # i <-> j swapped, both flipped
    image = Volume(vol.array, spacing=(0.5, 0.7, 2.5), direction=direction)
    store = LabeledStore.create(tmp_path / "s", {1: "lesion"}, modality="CT")
    store.add_case(image, mask, split="train")
    store.add_unlabeled(image)
    return store


def test_mask_follows_the_image_onto_the_model_grid(tmp_path):
    store = _oblique_store(tmp_path)
    man = new_manifest("mamba_unet", ["lesion"], "CT")
    (case,) = load_labeled(store, store.train_ids(), man)
    assert case.image.shape == case.mask.shape and case.image.dtype == torch.float32
    assert case.image.shape != (24, 48, 48)  # resampled to 0.8 x 0.8 x 1.5 mm
    inside, outside = case.image[case.mask > 0], case.image[case.mask == 0]
    # Lesion +150 HU vs background -300 HU (window -1000..1000 -> 0.575 vs 0.35): aligned masks separate them.
    assert inside.mean() > 0.5 and outside.mean() < 0.4
    (u,) = load_unlabeled(store, [r.scan_id for r in store.unlabeled()], man)
    assert u.mask is None and torch.equal(u.image, case.image) and len(u.sha256) == 32


@pytest.mark.parametrize("kind,size", [("2.5d", (32, 32)), ("3d", (16, 32, 32))])
def test_sampling_over_represents_the_structure(tmp_path, kind, size):
    store = _oblique_store(tmp_path)
    man = new_manifest("mamba_unet", ["lesion"], "CT")
    cases = load_labeled(store, store.train_ids(), man)
    fraction = float((cases[0].mask > 0).float().mean())
    assert fraction < 0.05
    hits, share = {}, {}
    for ff in (0.0, 1.0):
        s = Sampler(cases, [], SamplerSpec(kind, 3, size, ff))
        x, y, idx = s.labeled_batch(np.random.default_rng(0), 64)
        assert tuple(x.shape) == ((64, 3, *size) if kind == "2.5d" else (64, 1, *size))
        assert tuple(y.shape) == (64, *size) and y.dtype == torch.long
        hits[ff] = float((y.flatten(1).amax(1) > 0).float().mean())  # samples holding structure
        share[ff] = float((y > 0).float().mean())  # structure voxels among sampled voxels
        # The index names each sample's origin: cutting there again gives the same sample.
        i, origin = idx[5]
        centre = (origin[0], origin[1] + size[-2] // 2, origin[2] + size[-1] // 2) if kind == "2.5d" else None
        if centre is not None:
            again, lab, o2 = s.cut(cases[i], centre)
            assert o2 == origin and torch.equal(again, x[5])
    assert hits[1.0] > 0.95 and share[1.0] > 2 * share[0.0], (hits, share)


def test_unlabeled_focus_centres_unlabeled_crops(tmp_path):
    store = _oblique_store(tmp_path)
    man = new_manifest("mamba_unet", ["lesion"], "CT")
    cases = load_labeled(store, store.train_ids(), man)
    unl = load_unlabeled(store, [r.scan_id for r in store.unlabeled()], man)
    s = Sampler(cases, unl, SamplerSpec("2.5d", 3, (32, 32), 1.0))
    pts = np.argwhere(cases[0].mask.numpy() > 0)
    _, idx = s.unlabeled_batch(np.random.default_rng(0), 32, focus=[pts])
    zs = {o[0] for _, o in idx}
    assert zs <= set(pts[:, 0].tolist())  # every centre slice holds the structure
    _, idx = s.unlabeled_batch(np.random.default_rng(0), 32)
    assert not {o[0] for _, o in idx} <= set(pts[:, 0].tolist())


def test_augmenter_keeps_shapes_and_binary_labels():
    x = torch.rand(4, 3, 32, 32)
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:, 8:20, 8:20] = 1
    xa, ya = Augmenter("2.5d")(x, y, np.random.default_rng(1))
    assert xa.shape == x.shape and ya.shape == y.shape and set(ya.unique().tolist()) <= {0, 1}
    xb, yb = Augmenter("2.5d")(x, y, np.random.default_rng(1))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # the caller's generator decides everything
    x3, y3 = Augmenter("3d")(
        torch.rand(2, 1, 16, 32, 32), torch.zeros(2, 16, 32, 32, dtype=torch.long), np.random.default_rng(2)
    )
    assert x3.shape == (2, 1, 16, 32, 32) and y3.shape == (2, 16, 32, 32)
