"""Propagation helpers without a model: 3D clean-up, key-slice rule, label-simulated prompts, crops."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.propagation.cleanup import keep_supported
from semisam.propagation.lesion import LesionModel, candidate_region, part_models
from semisam.propagation.simulate import (
    boxes_from_label,
    crop_around,
    key_slices,
    lesion_slices,
    middle_slice,
)
from semisam.scan.volume import Volume


def test_keep_supported_drops_unprompted_components():
    m = np.zeros((5, 20, 20), np.uint8)
    m[1:4, 2:6, 2:6] = 1  # a blob through slices 1-3 (prompted on slice 2)
    m[1:3, 12:16, 12:16] = 1  # an unrelated blob, never prompted
    m[4, 5:8, 5:8] = 1  # touches the first blob across slices 3 -> 4 (overlap at (5, 5))
    sup = np.zeros(m.shape, bool)
    sup[2, 3, 3] = True
    out = keep_supported(m, sup)
    assert out[1:4, 2:6, 2:6].all() and out[4, 5:8, 5:8].all()
    assert not out[:, 12:16, 12:16].any()
    # Corner-only contact between slices does not connect (18-connectivity).
    m2 = np.zeros((2, 5, 5), np.uint8)
    m2[0, 1, 1] = m2[1, 2, 2] = 1
    s2 = np.zeros(m2.shape, bool)
    s2[0, 1, 1] = True
    assert keep_supported(m2, s2).sum() == 1
    # No support (e.g. nothing answered yet): nothing is removed.
    assert keep_supported(m, np.zeros(m.shape, bool)).sum() == m.sum()


def test_key_slice_rule():
    lab = np.zeros((30, 10, 10), np.uint8)
    areas = {10: 2, 11: 4, 12: 6, 13: 9, 14: 12, 15: 20, 16: 15, 17: 6, 18: 3}
    for z, a in areas.items():
        lab[z].flat[:a] = 1
    assert lesion_slices(lab) == list(range(10, 19))
    assert middle_slice(lab) == 14
    assert key_slices(lab, 1) == [15]  # largest area
    k2 = key_slices(lab, 2)
    assert 15 in k2 and len(k2) == 2 and min(k2) < 15  # the other half of the extent gets its centre
    k3 = key_slices(lab, 3)
    assert len(k3) == 3 and 15 in k3 and min(k3) <= 12 and all(10 <= k <= 18 for k in k3)
    with pytest.raises(ValueError, match="empty"):
        key_slices(np.zeros((3, 4, 4)), 1)


def test_boxes_from_label_are_tight():
    lab = np.zeros((4, 10, 12), np.uint8)
    lab[2, 3:6, 4:9] = 1
    ps = boxes_from_label(lab, [2])
    assert ps.axis == "axial" and ps.prompts[0].box == (4, 3, 8, 5)
    with pytest.raises(ValueError, match="empty on axial slice 1"):
        boxes_from_label(lab, [1])


def test_crop_keeps_ras_geometry():
    d = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    vol = Volume(np.arange(8 * 20 * 30, dtype=np.int16).reshape(8, 20, 30), (0.5, 0.7, 3.0), (10, -4, 7), d)
    lab = np.zeros(vol.shape, np.uint8)
    lab[4, 10:12, 15:18] = 1
    cv, cl = crop_around(vol, lab, (1, 2, 3))
    assert cv.shape == cl.shape == (3, 6, 9)
    # Voxel (0, 0, 0) of the crop is voxel (i=12, j=8, k=3) of the original, at the same RAS position.
    assert np.allclose(cv.voxel_to_ras([0, 0, 0]), vol.voxel_to_ras([12, 8, 3]))
    assert cv.array[0, 0, 0] == vol.array[3, 8, 12] and cl.sum() == lab.sum()


def test_lesion_model_and_candidate_region():
    img = np.full((40, 40), 0.2, np.float32)
    img[10:20, 10:20] = 0.8  # the lesion on the key slice
    key = np.zeros(img.shape, bool)
    key[10:20, 10:20] = True
    lm = LesionModel.fit(img, key)
    assert lm is not None and lm.area_px == 100
    assert lm.likeness(img, key) > 0.9 and lm.likeness(img, ~key) < 0.1
    nxt = np.full((40, 40), 0.2, np.float32)
    nxt[12:30, 14:26] = 0.8  # grown and shifted on the next slice
    nxt[2:6, 32:38] = 0.8  # a lesion-like blob not touching the previous footprint
    region = candidate_region(lm, nxt, key, (0, 0, 39, 39))
    # (the opening trims the rectangle's 4 corner pixels)
    assert region[12:30, 14:26].sum() >= 0.95 * 18 * 12 and region.sum() == region[12:30, 14:26].sum()
    assert not region[2:6, 32:38].any()
    # The search window limits how far the region may reach.
    assert not candidate_region(lm, nxt, key, (5, 5, 22, 22))[23:, :].any()
    assert LesionModel.fit(img, np.zeros_like(key)) is None


def test_each_part_of_a_key_slice_is_judged_against_its_own_intensity_model():
    # Two parts in different surroundings (a bias field: the right half of the slice is brighter). The left
    # part is as bright as the right part's surroundings, so one model of both parts calls it unlike the
    # structure; its own model (its pixels against its own ring) does not.
    img = np.full((60, 80), 0.2, np.float32)
    img[:, 40:] = 0.5
    left = np.zeros(img.shape, bool)
    left[25:33, 10:18] = True
    right = np.zeros(img.shape, bool)
    right[22:36, 52:66] = True
    img[left], img[right] = 0.5, 0.8
    whole = LesionModel.fit(img, left | right)
    assert whole is not None and whole.likeness(img, left) < 0.5 <= whole.likeness(img, right)
    own = part_models(img, whole, [left, right])
    assert own[0].likeness(img, left) > 0.9 and own[1].likeness(img, right) > 0.9
    assert own[0].area_px == 64 and own[1].area_px == 196
    # One part, or no model: the key slice's model, unchanged.
    assert part_models(img, whole, [left | right]) == [whole]
    assert part_models(img, None, [left, right]) == [None, None]
    # A part without pixels keeps the whole model.
    assert part_models(img, whole, [left, np.zeros_like(left)])[1] is whole


def test_square_pixels_maps_prompts_and_logits_exactly():
    from tiny_generalists import tiny_litemedsam

    from semisam.generalists.base import SlicePrompt
    from semisam.propagation.isotropic import SquarePixels

    assert SquarePixels.needed((5.0, 0.57)) and not SquarePixels.needed((0.7, 0.68))
    sq = SquarePixels(tiny_litemedsam(seed=0), (5.0, 0.5))  # rows 10x coarser than columns
    assert sq.scale == (10.0, 1.0) and sq.name.endswith("@square10x1")
    img = np.random.default_rng(0).random((7, 40)).astype(np.float32)
    emb = sq.encode(img)
    assert emb.slice_shape == (70, 40) and emb.extras["original_shape"] == (7, 40)
    # Box rows 2..3 (inclusive) cover rows 20..39 of the 10x grid; columns are unchanged.
    mapped = sq._map_prompt(SlicePrompt(box=(5, 2, 9, 3)), emb.slice_shape)
    assert mapped.box == (5, 20, 9, 39)
    pts = sq._map_prompt(SlicePrompt(points=np.array([[4.0, 1.0]]), point_labels=np.array([1])), (70, 40))
    assert np.allclose(pts.points, [[4.0, 14.5]])  # pixel centre 1 -> centre of rows 10..19
    pred = sq.predict(emb, SlicePrompt(box=(5, 2, 9, 3)))
    assert pred.logits.shape == (7, 40) and 0.0 <= pred.score <= 1.0


def test_a_crop_and_its_full_scan_sharing_a_cache_never_share_entries():
    """Review 1b: the default scan id was ``volume.source``, which crops and ``with_array`` keep."""
    from tiny_generalists import tiny_sam

    from semisam.generalists.cache import EmbeddingCache
    from semisam.propagation.state import init_state
    from semisam.scan.intensity import IntensityWindow

    rng = np.random.default_rng(3)
    full = Volume(
        rng.uniform(-1000, 400, (6, 40, 40)).astype(np.float32), (1.0, 1.0, 1.0), source="scan.nrrd"
    )
    lab = np.zeros(full.shape, np.uint8)
    lab[2:4, 15:20, 15:20] = 1
    crop, _ = crop_around(full, lab, (2, 4, 4))
    assert crop.source != full.source and crop.source.startswith("scan.nrrd[crop")
    edited = full.with_array(full.array + 1)  # same file name and grid, other voxels
    model, cache, win = tiny_sam(), EmbeddingCache(), IntensityWindow(-1000.0, 400.0, "test")

    def first_key(vol: Volume):
        return init_state(model, vol, "axial", window=win, cache=cache).encoder.key(0)

    keys = {first_key(full), first_key(crop), first_key(edited)}
    assert len(keys) == 3
    again = Volume(full.array.copy(), full.spacing, source="elsewhere.nii.gz")
    assert first_key(again) == first_key(full)  # same voxels and grid: shared, whatever the file name
    moved = Volume(full.array, full.spacing, origin=(5.0, 0.0, 0.0), source="scan.nrrd")
    assert first_key(moved) != first_key(full)
    # and the encoder with no scan id never keys by id(): a freed array's address is reused
    state = init_state(model, crop, "axial", window=win, cache=cache)
    state.embedding(0)
    assert not init_state(model, full, "axial", window=win, cache=cache).encoder.cached(0)


def test_montage_png_is_written_atomically(tmp_path):
    from PIL import Image

    from semisam.fileio import TMP_PREFIX
    from semisam.prompts import Prompt
    from semisam.propagation.montage import render_montage, save_png

    img = np.random.default_rng(0).uniform(0, 1, (3, 30, 30)).astype(np.float32)
    mask = np.zeros(img.shape, np.uint8)
    mask[:, 10:20, 10:20] = 1
    dest = tmp_path / "sub" / "montage.png"
    dest.parent.mkdir()
    dest.write_bytes(b"old")  # replaced whole, never truncated in place
    out = save_png(render_montage(img, mask, "axial", [0, 1, 2], [Prompt(1, box=(10, 10, 19, 19))]), dest)
    assert out == dest and Image.open(dest).format == "PNG"
    assert [p.name for p in dest.parent.iterdir()] == ["montage.png"]
    assert not any(p.name.startswith(TMP_PREFIX) for p in dest.parent.iterdir())
