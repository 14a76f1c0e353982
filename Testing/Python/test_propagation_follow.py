"""Propagation that keeps to the target: registration carrying, rim refusal, key-slice agreement, review.

The model in these tests is a scripted stand-in (its answers are the point of the test: a drift, a rim);
everything else (registration, intensity models, reconciliation, the engine) runs for real.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from scipy import ndimage as ndi

from semisam.generalists.base import SliceEmbedding, SlicePrediction, SlicePrompt
from semisam.metrics import dice as mask_dice
from semisam.propagation import PropagationParams, add_prompt, init_state, propagate
from semisam.propagation.engine import _answer_prompt, _reconcile
from semisam.propagation.follow import follow_one, is_thin
from semisam.propagation.lesion import LesionModel
from semisam.propagation.rim import rim_like
from semisam.propagation.state import KeySlice
from semisam.propagation.step import SliceResult
from semisam.propagation.track import agreement, best_shift, carry_mask
from semisam.scan.volume import Volume
from semisam.slices import take_slice


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _textured(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 2.0)


def _logits(mask):
    return np.where(mask, 5.0, -5.0).astype(np.float32)


def _result(slice_index, mask, key, score=0.9, candidate="carried"):
    return SliceResult(slice_index, _logits(mask), score, 0.8, key, SlicePrompt(box=(0, 0, 1, 1)), candidate)


def test_carry_mask_follows_a_known_shift_of_a_blob():
    tex = _textured((120, 120))
    blob = _disc((120, 120), 60, 60, 12)
    big = 0.25 + 0.5 * blob + 0.2 * tex
    prev_img, prev_mask = big[10:106, 10:106], blob[10:106, 10:106]
    nxt_img, nxt_mask = big[7:103, 12:108], blob[7:103, 12:108]  # content moved by (dy, dx) = (+3, -2)
    shift, ncc = best_shift(prev_img, nxt_img, prev_mask, max_shift=5, ring=4)
    assert shift == (3, -2) and ncc > 0.99
    carried = carry_mask(prev_img, nxt_img, prev_mask, max_shift=5)
    assert carried.shift == (3, -2)
    assert mask_dice(carried.mask, nxt_mask) > 0.97
    assert mask_dice(prev_mask, nxt_mask) < 0.85  # not carrying would be far off


def test_deformable_refinement_follows_a_growing_blob():
    shape = (80, 80)
    tex = 0.05 * _textured(shape)
    prev_mask, nxt_mask = _disc(shape, 40, 40, 10), _disc(shape, 40, 40, 13)
    prev_img = (0.2 + 0.6 * prev_mask + tex).astype(np.float32)
    nxt_img = (0.2 + 0.6 * nxt_mask + tex).astype(np.float32)
    rigid = carry_mask(prev_img, nxt_img, prev_mask, max_shift=3, deform=False)
    flowed = carry_mask(prev_img, nxt_img, prev_mask, max_shift=3)
    assert mask_dice(flowed.mask, nxt_mask) > mask_dice(rigid.mask, nxt_mask) + 0.05
    assert mask_dice(flowed.mask, nxt_mask) > 0.9


def test_agreement_refuses_drift_and_collapse_but_allows_growth():
    shape = (60, 60)
    c = _disc(shape, 30, 20, 8)
    assert agreement(_disc(shape, 30, 45, 8), c, 4) == 0.0  # on a neighbour
    assert agreement(_disc(shape, 30, 20, 3), c, 4) < 0.2  # collapsed onto a small part
    assert agreement(_disc(shape, 30, 20, 11), c, 4) > 0.95  # grew back by 3 px
    assert agreement(c | _disc(shape, 30, 45, 8), c, 4) < 0.6  # leaked into the neighbour


class ScriptedModel:
    """A stand-in generalist with prescribed answers: ``answer(slice_image, prompt) -> mask``."""

    name = "scripted"
    image_size = 64

    def __init__(self, answer, score=0.9):
        self.answer, self.score = answer, score
        self.device = torch.device("cpu")

    def encode(self, image):
        return SliceEmbedding(torch.zeros(1, 1, 4, 4), tuple(image.shape), {"image": np.array(image)})

    def predict(self, embedding, prompt):
        out = self.answer(embedding.extras["image"], prompt)
        mask, score = out if isinstance(out, tuple) else (out, self.score)
        return SlicePrediction(_logits(mask), score)


def _rim_slice(shape=(64, 64)):
    """A darker lesion (0.5) on 0.3 background, with a bright (0.95) crescent rim on its right side."""
    lesion = _disc(shape, 32, 30, 9)
    rim = (
        _disc(shape, 32, 33, 13) & ~_disc(shape, 32, 30, 10) & (np.mgrid[0 : shape[0], 0 : shape[1]][1] > 32)
    )
    img = np.full(shape, 0.3, np.float32)
    img[lesion] = 0.5
    img[rim] = 0.95
    return img, lesion, rim


def test_key_slice_answer_on_a_brighter_rim_is_asked_again():
    img, lesion, rim = _rim_slice()

    def answer(image, prompt):  # the box alone returns the rim; box + points returns the lesion
        return lesion if prompt.points is not None else rim

    model = ScriptedModel(answer)
    state = SimpleNamespace(predict=model.predict)
    box = (18, 18, 46, 46)
    assert rim_like(img, rim, box) and not rim_like(img, lesion, box)
    pred = _answer_prompt(state, model.encode(img), img, SlicePrompt(box=box))
    assert mask_dice(pred.mask, lesion) == 1.0
    # A darker structure whose box centre lies outside it (an elongated, curved one) is not a rim.
    crescent = _disc((64, 64), 32, 30, 14) & ~_disc((64, 64), 32, 36, 12)
    dark = np.full((64, 64), 0.7, np.float32)
    dark[crescent] = 0.4
    assert not rim_like(dark, crescent, (16, 18, 44, 46))


def test_propagated_answer_on_a_brighter_rim_is_refused():
    img, lesion, rim = _rim_slice()

    def answer(image, prompt):
        # Box-only prompts go to the rim (or the rim with the lesion), and the model is surer of those.
        if prompt.points is not None:
            return lesion, 0.8
        return (rim | lesion if prompt.box[2] > 44 else rim), 0.95

    model = ScriptedModel(answer)
    prev = _result(9, lesion, 10)
    lesion_model = LesionModel.fit(img, lesion)
    trace: list = []
    out = follow_one(
        model, model.encode(img), img, img, prev, lesion_model, PropagationParams(), (1.0, 1.0), 1.0, 8, trace
    )
    assert out.stop is None and out.result is not None
    assert out.result.candidate == "carried+points"
    assert mask_dice(out.result.mask, lesion) == 1.0
    rim_tries = [t for t in trace if not t[0].startswith("carried+points")]
    assert rim_tries and all(t[3] < 0.5 or t[5] < 0.5 for t in rim_tries)  # unlike the lesion or elsewhere


def _state_with_keys(n=12):
    keys = {
        0: KeySlice(result=_result(0, _disc((40, 40), 20, 20, 6), 0)),
        n: KeySlice(result=_result(n, _disc((40, 40), 20, 20, 6), n)),
    }
    return SimpleNamespace(keys=keys, params=PropagationParams())


def test_slices_between_key_slices_agree_with_both_tracks_or_are_flagged():
    state = _state_with_keys()
    here, there = _disc((40, 40), 20, 12, 6), _disc((40, 40), 20, 30, 6)
    a, b = _result(5, here, 0, score=0.9), _result(5, here, 12, score=0.8)
    logits, conf, src, flag = _reconcile(state, 5, [a, b])
    assert flag is None and src == 0 and mask_dice(logits > 0, here) == 1.0
    a2, b2 = _result(5, here, 0, score=0.9), _result(5, there, 12, score=0.8)
    logits, conf, src, flag = _reconcile(state, 5, [a2, b2])
    assert flag is not None and "disagree" in flag
    assert src == 0 and conf < 0.1  # the more confident track, scaled by the tracks' agreement (0)
    # Reached by one track only although both neighbouring key slices have a mask: flagged.
    _, _, _, flag = _reconcile(state, 5, [a])
    assert flag is not None and "only the track" in flag


def _drift_volume(n=14, drift=(9, 10)):
    """A tube (disc radius 7) along 14 slices, a look-alike neighbour beside it; on the ``drift`` slices a
    corner marker tells the scripted model to answer with the neighbour (a drift)."""
    shape = (64, 64)
    target, neighbour = _disc(shape, 32, 22, 7), _disc(shape, 32, 44, 7)
    vol = np.zeros((n, *shape), np.float32)
    label = np.zeros((n, *shape), np.uint8)
    for z in range(n):
        vol[z] = 0.2 + 0.05 * _textured(shape, z)
        vol[z][target | neighbour] = 0.7
        label[z][target] = 1
        if z in drift:
            vol[z, 0, 0] = 1.0
    return Volume(vol, (1.0, 1.0, 1.0)), label, target, neighbour


def test_confidence_puts_drifted_slices_first():
    volume, label, target, neighbour = _drift_volume()

    def answer(image, prompt):
        if image[0, 0] > 0.9:  # a drift slice: whatever the prompt, the neighbour
            return neighbour
        x0, y0, x1, y1 = (int(v) for v in prompt.box)
        box = np.zeros(image.shape, bool)
        box[y0 : y1 + 1, x0 : x1 + 1] = True
        return (image > 0.5) & box & ndi.binary_dilation(target, iterations=1)

    model = ScriptedModel(answer)
    state = init_state(model, volume, "axial", modality="MR")
    assert is_thin(LesionModel.fit(np.ones((64, 64)) * 0.5, target), (1.0, 1.0), 1.0)
    add_prompt(state, 4, box=(15, 25, 29, 39))
    result = propagate(state)
    drifted = {9, 10}
    assert drifted <= set(result.flagged)
    assert set(result.review_order[:2]) == drifted
    others = [float(result.confidence[s]) for s in result.slices if s not in drifted and s != 4]
    assert max(float(result.confidence[s]) for s in drifted) < min(others)
    for s in drifted:  # the carried mask stands for the slice: still on the target, not on the neighbour
        m = take_slice(result.mask, "axial", s) > 0
        assert mask_dice(m, target) > 0.8 and not (m & neighbour).any()


def test_growth_out_of_the_key_slice_is_judged_against_the_users_box():
    """The key answer covers a third of the user's box; the next slice's answer fills the box. That is
    the structure, not a leak: growth is measured against the ellipse inscribed in the box."""
    from semisam.propagation.follow import _end_reason
    from semisam.propagation.step import SliceResult

    h = w = 64
    key_logits = np.full((h, w), -4.0, np.float32)
    key_logits[28:36, 28:36] = 4.0  # 64 px answer
    box = (16.0, 16.0, 47.0, 47.0)  # 32 x 32 box: inscribed ellipse ~804 px
    key = SliceResult(10, key_logits, 0.9, 1.0, 10, SlicePrompt(box=box), "key")
    nxt_logits = np.full((h, w), -4.0, np.float32)
    nxt_logits[18:46, 18:46] = 4.0  # 784 px: 12x the key answer, inside the box
    nxt = SliceResult(11, nxt_logits, 0.9, 1.0, 10, SlicePrompt(box=box), "carried", 1.0)
    assert _end_reason(nxt, key, PropagationParams(), 1.0) is None
    # The same growth from a carried slice (no user box) is still a leak.
    carried = SliceResult(10, key_logits, 0.9, 1.0, 10, SlicePrompt(box=box), "carried", 1.0)
    assert "area grew" in _end_reason(nxt, carried, PropagationParams(), 1.0)


def test_shrinking_out_of_the_key_slice_is_judged_against_the_key_answer():
    """A model that answers the user's box with a small part of the structure answers the next slice
    alike: 48 px after a 64 px key answer in a 32 x 32 box (ellipse ~804 px) goes on; 8 px ends."""
    from semisam.propagation.follow import _end_reason
    from semisam.propagation.step import SliceResult

    h = w = 64
    box = (16.0, 16.0, 47.0, 47.0)
    key_logits = np.full((h, w), -4.0, np.float32)
    key_logits[28:36, 28:36] = 4.0  # 64 px answer
    key = SliceResult(10, key_logits, 0.9, 1.0, 10, SlicePrompt(box=box), "key")
    for rows, expect_stop in ((slice(28, 34), False), (slice(28, 29), True)):  # 48 px, 8 px
        nxt_logits = np.full((h, w), -4.0, np.float32)
        nxt_logits[rows, 28:36] = 4.0
        nxt = SliceResult(11, nxt_logits, 0.9, 1.0, 10, SlicePrompt(box=box), "carried", 1.0)
        reason = _end_reason(nxt, key, PropagationParams(), 1.0)
        assert (reason is not None and "area shrank" in reason) if expect_stop else reason is None
