"""A closer view of the slice for the generalist (:mod:`semisam.generalists.view`): geometry, every model of
the registry (tiny random models of the real architectures), the cache, and the real LiteMedSAM weights on
a structure too small for the whole slice."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_generalists import save_tiny, tiny_litemedsam, tiny_sam, tiny_sam2

from semisam.generalists import SlicePrompt, build_generalist
from semisam.generalists.cache import EmbeddingCache, SliceEncoder
from semisam.generalists.view import (
    FACTOR,
    MIN_SIDE,
    OUTSIDE_LOGIT,
    View,
    box_agreement,
    choose,
    encode_view,
    predict,
    view_around,
    views_along,
)
from semisam.metrics import dice
from semisam.propagation import PropagationParams
from semisam.propagation.isotropic import SquarePixels
from semisam.scan.intensity import IntensityWindow


def test_view_holds_the_box_with_context_and_is_smaller_than_the_slice():
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(40, 600, 2))
        bw, bh = (int(v) for v in rng.integers(1, 60, 2))
        x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        box = (x0, y0, min(w - 1, x0 + bw - 1), min(h - 1, y0 + bh - 1))
        v = view_around(box, (h, w))
        longer = max(box[2] - box[0], box[3] - box[1]) + 1
        if v is None:
            assert 2 * max(MIN_SIDE, FACTOR * longer) >= max(h, w) * 0.8, (box, h, w)
            continue
        assert FACTOR * longer <= v.side and 2 * v.side < max(h, w) and v.side >= MIN_SIDE
        assert v.x0 <= box[0] and box[2] < v.x0 + v.side, (box, v)
        assert v.y0 <= box[1] and box[3] < v.y0 + v.side, (box, v)


def test_nearby_boxes_share_a_view():
    views = {view_around((100 + dx, 80, 115 + dx, 94), (217, 181)) for dx in range(3)}
    assert len(views) == 1, views
    assert view_around((0, 0, 200, 150), (217, 181)) is None  # the whole slice is as close


def test_crop_paste_and_prompt_mapping_are_exact():
    img = np.arange(50 * 70, dtype=np.float32).reshape(50, 70)
    v = View(y0=-4, x0=60, side=16)  # past the top and right edges
    crop = v.crop(img)
    assert crop.shape == (16, 16)
    assert crop[4, 0] == img[0, 60] and crop[0, 0] == 0 and crop[4, 10] == 0
    back = v.paste(crop, img.shape)
    assert np.array_equal(back[0:12, 60:70], img[0:12, 60:70])
    assert (back[12:, :] == OUTSIDE_LOGIT).all() and (back[:, :60] == OUTSIDE_LOGIT).all()
    p = v.prompt_in(SlicePrompt(box=(62, 1, 65, 5), points=np.array([[63, 2]]), point_labels=np.array([1])))
    assert p.box == (2, 5, 5, 9) and p.points.tolist() == [[3.0, 6.0]]
    # A point outside the view (a negative point on a false positive elsewhere) is left out, with its label.
    two = SlicePrompt(points=np.array([[63.0, 2.0], [10.0, 30.0]]), point_labels=np.array([1, 0]))
    p = v.prompt_in(two)
    assert p.points.tolist() == [[3.0, 6.0]] and p.point_labels.tolist() == [1]


def test_box_agreement_and_choice():
    m = np.zeros((20, 20), bool)
    m[5:10, 5:10] = True
    assert box_agreement(m, (5, 5, 9, 9)) == 1.0
    assert box_agreement(np.zeros_like(m), (5, 5, 9, 9)) == 0.0
    assert box_agreement(m, (5, 5, 14, 9)) == pytest.approx(0.5)
    assert box_agreement(m, (4, 5, 10, 9)) == 1.0  # one pixel off: a boundary pixel, not another answer
    assert box_agreement(m, (3, 5, 10, 9)) == pytest.approx(6 / 8)  # 2 px off on the left only

    class P:  # a prediction-like object: .mask and .score are read
        def __init__(self, mask, score=0.5):
            self.mask, self.score = mask, score

    leak = np.zeros_like(m)
    leak[2:18, 2:18] = True
    assert choose(P(leak, 0.9), P(m, 0.1), (5, 5, 9, 9)) is True  # the box outranks the model's score
    assert choose(P(m, 0.9), P(leak, 0.9), (5, 5, 9, 9)) is False
    assert choose(P(m), P(m), (5, 5, 9, 9)) is True  # same extent: the closer look


def test_an_unknown_field_of_view_is_refused():
    with pytest.raises(ValueError, match="field_of_view must be one of auto, whole"):
        PropagationParams(field_of_view="zoom")


@pytest.fixture(scope="module")
def registry_models(tmp_path_factory):
    """Every generalist of the registry, built from a tiny random checkpoint through the real loaders."""
    d = tmp_path_factory.mktemp("view")
    files = {
        "litemedsam": save_tiny(tiny_litemedsam(), d / "lite.pth"),
        "sam": save_tiny(tiny_sam(), d / "sam.safetensors"),
        "sam2": save_tiny(tiny_sam2(), d / "sam2.safetensors"),
    }
    files["medsam"], files["medsam2"] = files["sam"], files["sam2"]
    return {n: build_generalist(n, f, device="cpu", backend="eager") for n, f in files.items()}


@pytest.mark.parametrize("name", ["litemedsam", "sam", "medsam", "sam2", "medsam2", "square-pixels"])
def test_every_generalist_answers_in_slice_pixels_through_a_view(registry_models, name):
    model = registry_models["litemedsam" if name == "square-pixels" else name]
    if name == "square-pixels":
        model = SquarePixels(model, (2.0, 0.7))
    img = np.random.default_rng(3).random((90, 130), dtype=np.float32)
    box = (70, 40, 81, 49)
    v = view_around(box, img.shape)
    assert v is not None
    prompt = SlicePrompt(box=box, points=np.array([[75.0, 44.0]]), point_labels=np.array([1]))
    got = predict(model, encode_view(model, img, v), prompt)
    direct = model.predict(model.encode(v.crop(img)), v.prompt_in(prompt))
    assert got.logits.shape == img.shape and got.score == pytest.approx(direct.score)
    inside = np.zeros(img.shape, bool)
    inside[v.y0 : v.y0 + v.side, v.x0 : v.x0 + v.side] = True
    np.testing.assert_allclose(got.logits[inside], direct.logits.reshape(-1), atol=1e-5)
    assert (got.logits[~inside] == OUTSIDE_LOGIT).all()
    # the whole slice still answers as before
    whole = predict(model, encode_view(model, img, None), prompt)
    np.testing.assert_allclose(whole.logits, model.predict(model.encode(img), prompt).logits, atol=1e-5)


def test_views_are_cached_apart_from_the_whole_slice(registry_models):
    model = registry_models["litemedsam"]
    vol = np.random.default_rng(4).random((3, 90, 130), dtype=np.float32)
    enc = SliceEncoder(model, vol, "axial", IntensityWindow(0.0, 1.0), EmbeddingCache(), scan_id="v")
    v = View(10, 20, 46)
    whole, seen = enc.embedding(1), enc.embedding(1, v)
    assert enc.cached(1) and enc.cached(1, v) and not enc.cached(1, View(10, 20, 54))
    assert whole.slice_shape == (90, 130) and seen.slice_shape == (46, 46)
    assert enc.embedding(1, v) is seen and len(enc.cache) == 2
    job = enc.precompute([0, 2], views={2: v})
    assert job.wait(60) and job.error is None and job.done == 3
    assert enc.cached(0) and enc.cached(2, v) and enc.cached(2) and not enc.cached(0, v)


def test_views_along_a_proposal_follow_its_mask():
    mask = np.zeros((4, 200, 220), bool)
    mask[1, 50:62, 100:115] = True
    mask[2, 0:150, 0:150] = True  # too large for a closer look
    views = views_along(mask, [0, 1, 2, 3, 9])
    assert list(views) == [1]
    v = views[1]
    assert v.y0 <= 50 and 61 < v.y0 + v.side and v.x0 <= 100 and 114 < v.x0 + v.side


@pytest.fixture(scope="module")
def litemedsam():
    return build_generalist("litemedsam", device="cpu")


def _small_structure_slice(size: int = 400, r: int = 7):
    """A ``(size, size)`` slice: mottled soft tissue, a large bright body and a small bright disc."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:size, :size]
    img = 0.25 + 0.05 * rng.standard_normal((size, size))
    img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2.3) ** 2] += 0.2
    cy, cx = int(size * 0.62), int(size * 0.41)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[disc] = 0.85 + 0.03 * rng.standard_normal(int(disc.sum()))
    return np.clip(img, 0, 1).astype(np.float32), disc


def test_real_litemedsam_draws_a_small_structure_better_through_the_chosen_view(litemedsam):
    img, disc = _small_structure_slice()
    ys, xs = np.nonzero(disc)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    v = view_around(box, img.shape)
    assert v is not None and v.side < 64
    whole = predict(litemedsam, encode_view(litemedsam, img, None), SlicePrompt(box=box))
    closer = predict(litemedsam, encode_view(litemedsam, img, v), SlicePrompt(box=box))
    d_whole, d_closer = dice(whole.mask, disc), dice(closer.mask, disc)
    assert d_closer > 0.8, (d_whole, d_closer)
    # drawn at the right place of the slice grid: the centroid within a pixel of the disc's
    assert np.allclose(np.argwhere(closer.mask).mean(0), np.argwhere(disc).mean(0), atol=1.0)
    kept = closer if choose(whole, closer, box) else whole
    assert dice(kept.mask, disc) >= max(d_whole, d_closer) - 0.02


def test_the_cli_offers_the_fields_of_view_the_engine_knows():
    from semisam.cli.propagate import FIELD_OF_VIEW_CHOICES
    from semisam.propagation.params import FIELDS_OF_VIEW

    assert FIELD_OF_VIEW_CHOICES == FIELDS_OF_VIEW


def test_the_encoder_call_bound_counts_the_views():
    from semisam.budget import propagation_encoder_calls, views_possible

    assert views_possible((50, 217, 181), 0, "auto") and not views_possible((50, 217, 181), 0, "whole")
    assert not views_possible((10_000, 16, 16), 0, "auto")  # 16 px slices: no view is under half of them
    one = propagation_encoder_calls(40, [20])
    assert propagation_encoder_calls(40, [20], views=True) == one + 1 == 41  # the key slice's view


def test_propagate_answers_a_small_structures_key_slice_through_the_view(litemedsam):
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    img, disc = _small_structure_slice()
    vol = Volume(np.stack([img * 1000.0] * 3).astype(np.float32), (1.0, 1.0, 3.0))
    ys, xs = np.nonzero(disc)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    got = {}
    for fov in ("whole", "auto"):
        state = init_state(
            litemedsam, vol, "axial", modality="MR", params=PropagationParams(field_of_view=fov)
        )
        add_prompt(state, 1, box=box)
        res = propagate(state)
        got[fov] = (state.keys[1].closer, dice(res.mask[1] > 0, disc), state.n_encode)
    assert got["whole"][0] is False and got["auto"][0] is True, got
    # the view's answer, mapped back onto the slice, is as good here (both fill the box; ties go to the view)
    assert got["auto"][1] > 0.9 and got["auto"][1] >= got["whole"][1] - 0.02, got
    assert got["auto"][2] == got["whole"][2] + 1  # the key slice's view; the tracks use whole slices


def test_a_point_prompt_with_a_negative_point_far_from_the_structure_propagates(registry_models):
    """The simulated annotator's +/- points: a positive point on a small structure (its view placed around
    it) and a negative point on a false positive far away; the view's prompt leaves the far point out
    instead of handing the model a point outside its input (a real loop stopped on that)."""
    from semisam.propagation import add_prompt, init_state, propagate
    from semisam.scan.volume import Volume

    model = registry_models["litemedsam"]
    img = np.random.default_rng(5).random((3, 120, 120), dtype=np.float32)
    state = init_state(model, Volume(img * 1000.0, (1.0, 1.0, 3.0)), "axial", modality="MR")
    add_prompt(state, 1, point=(60, 60))
    add_prompt(state, 1, point=(5, 110), positive=False)
    res = propagate(state)
    assert state.n_encode == 3 + 1  # the three slices, and the view the positive point placed
    assert res.mask.shape == img.shape
