"""The simulated annotator: where it clicks, how it counts, and that real LiteMedSAM boxes reach the target."""

from __future__ import annotations

import numpy as np
import pytest
from loop_synth import ellipsoid_case

from semisam.clicks import error_point
from semisam.loop import AnnotatorConfig, SimulatedAnnotator
from semisam.loop.annotator import (
    jitter_box,
    new_cache,
    oracle_dice,
    per_slice_errors,
    precompute,
    remove_stray_pieces,
    start_session,
    stray_pieces,
    structure_boxes,
    structure_slices,
)
from semisam.metrics import dice


@pytest.fixture(scope="module")
def litemedsam():
    from semisam.generalists import build_generalist

    return build_generalist("litemedsam", device="cpu")  # the bundled real weights


@pytest.fixture(scope="module")
def case():
    """A small synthetic MR-like case: a bright ellipsoid over a few of 6 slices."""
    vol, label = ellipsoid_case((6, 32, 32), np.random.default_rng(3))
    return vol, label


def _correct(model, cfg, vol, truth, proposal, order, cache=None, target=0.999):
    """The simulated annotator's run over ``proposal`` (seed 0), reviewing ``order``."""
    return SimulatedAnnotator(model, cfg, modality="MR").annotate(
        vol, truth, target, np.random.default_rng(0), proposal=proposal, review_order=order, cache=cache
    )


def test_error_point_clicks_inside_the_largest_error():
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 1
    mask = truth.copy()
    mask[5:15, 5:9] = 0  # 40 missed pixels on the left
    mask[0:2, 18:20] = 1  # 4 extra pixels
    (col, row), positive = error_point(mask, truth)
    assert positive and 5 <= col < 9 and 5 <= row < 15 and truth[row, col] and not mask[row, col]
    mask = truth.copy()
    mask[16:20, 0:10] = 1  # only extra pixels: a negative point on them
    (col, row), positive = error_point(mask, truth)
    assert not positive and mask[row, col] and not truth[row, col]
    assert error_point(truth, truth) is None


def test_structure_boxes_boxes_each_part_and_jitter_stays_inside():
    s = np.zeros((30, 40), np.uint8)
    s[5:10, 2:8] = 1  # left part
    s[12:20, 25:35] = 1  # right part (larger)
    s[0, 39] = 1  # a speck: no box
    assert structure_boxes(s) == [(25, 12, 34, 19), (2, 5, 7, 9)]
    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0, x1, y1 = jitter_box((0, 0, 39, 29), s.shape, rng, 5.0)
        assert 0 <= x0 <= x1 <= 39 and 0 <= y0 <= y1 <= 29
    assert jitter_box((3, 4, 9, 9), s.shape, rng, 0.0) == (3, 4, 9, 9)


def test_per_slice_errors_counts_wrong_pixels():
    t = np.zeros((3, 4, 4), np.uint8)
    t[1, :2, :2] = 1
    m = np.zeros_like(t)
    m[1, :2, :1] = 1
    m[2, 0, 0] = 1
    d, err = per_slice_errors(m, t)
    assert d.tolist() == pytest.approx([1.0, 2 * 2 / 6, 0.0])
    assert err.tolist() == [0, 2, 1]


def test_no_budget_means_every_wrong_slice_is_drawn_by_hand(litemedsam, case):
    vol, truth = case
    ann = SimulatedAnnotator(litemedsam, AnnotatorConfig(budget=0), modality="MR")
    res = ann.annotate(vol, truth, 0.95, np.random.default_rng(0))
    n_slices = int(truth.any(axis=(1, 2)).sum())
    assert res.stop == "budget" and res.effort.prompts == 0 and res.proposal_dice == 0.0
    assert res.final_dice >= 0.95 and 1 <= res.effort.hand_slices <= n_slices
    assert [a.kind for a in res.actions] == ["hand"] * res.effort.hand_slices
    assert dice(res.mask, truth) == pytest.approx(res.final_dice)


def test_boxes_from_the_truth_reach_the_target_and_are_counted(litemedsam, case):
    vol, truth = case
    cache = new_cache(vol)
    precompute(start_session(litemedsam, vol, "axial", cache, "MR"), structure_slices(truth))
    oracle = oracle_dice(litemedsam, vol, truth, cache, "MR")
    assert oracle > 0.8  # real weights on a bright ellipsoid: boxes on every slice are good
    target = 0.9 * oracle
    res = SimulatedAnnotator(litemedsam, modality="MR").annotate(
        vol, truth, target, np.random.default_rng(0), cache=cache
    )
    kinds = [a.kind for a in res.actions]
    assert res.stop == "target" and res.final_dice >= target and res.prompt_dice >= target
    assert res.effort.hand_slices == 0 and res.effort.boxes == kinds.count("box") >= 1
    assert res.effort.points == kinds.count("point+") + kinds.count("point-")
    assert res.effort.compute_s > 0
    kept = [a.dice_after for a in res.actions if not a.undone]  # an undone propagation left no trace
    assert kept == sorted(kept) and res.prompt_dice == (kept[-1] if kept else 0.0)
    # A perfect proposal needs nothing at all.
    done = SimulatedAnnotator(litemedsam, modality="MR").annotate(
        vol, truth, target, np.random.default_rng(0), proposal=truth, review_order=list(range(6)), cache=cache
    )
    assert done.effort.prompts == 0 and done.effort.hand_slices == 0 and done.proposal_dice == 1.0


def test_the_annotator_stops_on_the_first_clearly_wrong_slice_of_the_review_order():
    truth = np.zeros((5, 20, 20), np.uint8)
    truth[1:4, 4:16, 4:16] = 1
    mask = truth.copy()
    mask[1, 4:16, 4:6] = 0  # slice 1 slightly wrong (24 px)
    mask[3] = 0  # slice 3 clearly wrong (144 px)
    ann = SimulatedAnnotator(None)  # choosing a slice needs no model
    pick = ann._next_prompt
    assert pick(mask, truth, [1, 3, 0, 2, 4], set(), {}, 0.95) == ("box", 3)
    mask[1, 4:16, 4:11] = 0  # now 84 px wrong: more than half the worst slice's
    assert pick(mask, truth, [1, 3, 0, 2, 4], set(), {}, 0.95) == ("box", 1)
    assert pick(mask, truth, [1, 3, 0, 2, 4], {1}, {}, 0.95) == ("point", 1)  # boxed already: a point
    assert pick(mask, truth, [1, 3, 0, 2, 4], {1}, {1: 2}, 0.95) == ("box", 3)  # points used up
    assert pick(mask, truth, None, set(), {}, 0.95) == ("box", 3)  # own order: the worst slice first
    assert pick(truth, truth, None, set(), {}, 0.95) is None


def test_a_slice_with_only_a_speck_of_structure_gets_a_point_not_an_empty_box(litemedsam, case):
    vol, truth = case
    truth = truth.copy()
    empty = int(np.flatnonzero(~truth.any(axis=(1, 2)))[0])
    truth[empty, 5, 5:7] = 1  # 2 pixels: too small for a box
    proposal = truth.copy()
    proposal[empty] = 0  # the only wrong slice
    res = SimulatedAnnotator(litemedsam, AnnotatorConfig(budget=1), modality="MR").annotate(
        vol, truth, 1.0, np.random.default_rng(0), proposal=proposal, review_order=list(range(6))
    )
    assert res.actions[0].kind == "point+" and res.actions[0].slice == empty
    assert res.effort.boxes == 0 and res.effort.points_pos == 1 and res.final_dice == 1.0


@pytest.mark.slow  # ~50 s on 2 loaded cores (two annotations of a 12-slice case); `-m slow` runs it
def test_a_box_on_the_one_bad_slice_keeps_the_good_ones(litemedsam):
    """The proposal is the truth with its middle slice missing. A box there is written by the product's
    keep-agreeing rule: the good slices stay, so the Dice rises; replacing the whole propagated range
    (rule ``replace``) overwrites them with the generalist's less exact answer."""
    vol, truth = ellipsoid_case((12, 48, 48), np.random.default_rng(5))
    key = int(np.argmax(truth.sum(axis=(1, 2))))
    proposal = truth.copy()
    proposal[key] = 0
    start = dice(proposal, truth)
    after, cache = {}, new_cache(vol)  # one cache: each slice is encoded once for both rules
    for rule in ("keep_agreeing", "replace"):
        cfg = AnnotatorConfig(budget=1, undo=False, merge_rule=rule)
        res = _correct(litemedsam, cfg, vol, truth, proposal, [key], cache, target=1.0)
        assert [a.kind for a in res.actions[:1]] == ["box"] and res.actions[0].slice == key
        after[rule] = res.actions[0].dice_after
    assert after["keep_agreeing"] > start and after["keep_agreeing"] > after["replace"] + 0.01, after
    assert AnnotatorConfig().merge_rule == "keep_agreeing"  # the simulation measures the product default


def test_after_an_undone_propagation_the_box_goes_on_its_slice_only(litemedsam, case):
    """The proposal is the truth with its largest slice eroded (slice Dice 0.66). A box there, written
    over the whole propagated range (rule ``replace``), overwrites the exact neighbours with the
    generalist's answers and lowers the Dice: it is undone and the same box is placed again with
    *Propagate across slices* off, which fixes that slice and keeps every other one."""
    from scipy import ndimage

    vol, truth = case
    key = int(np.argmax(truth.sum(axis=(1, 2))))
    proposal = truth.copy()
    proposal[key] = ndimage.binary_erosion(truth[key], iterations=2)
    start, cache = dice(proposal, truth), new_cache(vol)
    runs = {}
    for again in (True, False):
        cfg = AnnotatorConfig(budget=2, merge_rule="replace", slice_after_undo=again)
        runs[again] = _correct(litemedsam, cfg, vol, truth, proposal, [key], cache)
    first, second = runs[True].actions[:2]
    assert first.kind == "box" and first.undone and not first.slice_only and first.dice_after < start
    assert second.kind == "box" and second.slice == key and second.slice_only and not second.undone
    assert second.dice_after > start + 0.03, (start, second.dice_after)
    assert second.to_json()["slice_only"] is True and runs[True].effort.boxes == 2
    others = np.arange(len(truth)) != key
    assert np.array_equal(runs[True].mask[others], proposal[others])  # the good slices were kept
    assert not any(a.slice_only for a in runs[False].actions)  # off: the next prompt propagates again
    assert AnnotatorConfig().slice_after_undo  # the simulation measures it by default


def test_prompts_that_stop_helping_stop_slice_by_slice_too(litemedsam, case):
    """Every slice of the proposal is slightly off (the largest more). Slice by slice, ``patience``
    prompts in a row that do not raise the Dice end the prompting before the budget is spent (touching a
    nearly right slice up by hand costs less than prompts that do not help); the rest is drawn by hand."""
    from scipy import ndimage

    vol, truth = case
    key = int(np.argmax(truth.sum(axis=(1, 2))))
    proposal = truth.copy()
    for s in np.flatnonzero(truth.any(axis=(1, 2))):  # every slice slightly off, the largest more
        proposal[s] = ndimage.binary_erosion(truth[s], iterations=2 if s == key else 1)
    cfg = AnnotatorConfig(budget=8, merge_rule="replace", patience=2)
    order = [key] + [s for s in range(len(truth)) if s != key]
    res = _correct(litemedsam, cfg, vol, truth, proposal, order, new_cache(vol))
    prompts = [a for a in res.actions if a.kind != "hand"]
    assert res.stop == "stalled" and res.effort.prompts < 8, [a.to_json() for a in res.actions]
    assert any(a.slice_only for a in prompts)  # it had gone slice by slice
    current, raised = dice(proposal, truth), []
    for a in prompts:  # whether each prompt raised the case's Dice
        raised.append(not a.undone and a.dice_after > current + 1e-4)
        current = current if a.undone else a.dice_after
    assert raised[-cfg.patience :] == [False] * cfg.patience, [a.to_json() for a in prompts]
    assert res.final_dice >= 0.999 and res.effort.hand_slices > 0


def test_a_stray_piece_is_removed_with_one_click_and_a_piece_touching_the_structure_is_not():
    truth = np.zeros((8, 20, 20), np.uint8)
    truth[2:5, 6:14, 6:14] = 1
    mask = truth.copy()
    mask[5:8, 1:4, 1:4] = 1  # a stray piece over three slices without structure
    mask[5, 10:12, 10:12] = 1  # a spill past the structure's end, face-connected to it
    stray = stray_pieces(mask, truth)
    assert set(np.unique(stray[stray > 0]).tolist()) == {int(stray[6, 2, 2])}  # one piece, the far one
    assert stray[5, 10, 10] == 0
    ann = SimulatedAnnotator(None, AnnotatorConfig())  # choosing needs no model
    assert ann._next_prompt(mask, truth, [6, 5], set(), {}, 0.95) == ("island", 6)
    assert remove_stray_pieces(mask, truth, 6) == 1 and not mask[5:8, 1:4, 1:4].any()
    assert mask[5, 10:12, 10:12].all()  # what touches the structure stays: a point or a hand fix
    assert ann._next_prompt(mask, truth, [6, 5], set(), {}, 0.95) == ("point", 5)
    off = SimulatedAnnotator(None, AnnotatorConfig(islands=False))
    mask[6, 1:4, 1:4] = 1
    assert off._next_prompt(mask, truth, [6, 5], set(), {}, 0.95) == ("point", 6)


def test_stray_false_positives_cost_a_click_not_a_slice_drawn_by_hand(litemedsam, case):
    """A proposal right on the structure and with a stray piece over the empty slices: one Islands click
    (2 s) reaches the target, prompting or not; without islands each empty slice is drawn by hand."""
    from semisam.loop import TimeModel

    vol, truth = case
    empty = np.flatnonzero(~truth.any(axis=(1, 2)))
    proposal = truth.copy()
    proposal[empty, 2:6, 2:6] = 1
    proposal[empty[0] + 1 :, 2:6, 2:6] = (
        proposal[empty[0] + 1 :, 2:6, 2:6] | (truth[empty[0] + 1 :] == 0)[:, 2:6, 2:6]
    )  # the piece runs through the structure's slices too, in a corner the structure never reaches
    assert not (proposal[:, 2:6, 2:6] & truth[:, 2:6, 2:6]).any()
    for budget in (0, 4):  # drawn by hand (no prompts) or in the prompting loop
        res = _correct(litemedsam, AnnotatorConfig(budget=budget), vol, truth, proposal, list(range(6)))
        assert [a.kind for a in res.actions] == ["island"] and res.final_dice == 1.0
        assert res.effort.islands == 1 and res.effort.prompts == 0 and res.effort.hand_slices == 0
        assert res.effort.interaction_s(TimeModel()) == pytest.approx(2.0)
    res = _correct(litemedsam, AnnotatorConfig(budget=0, islands=False), vol, truth, proposal, list(range(6)))
    assert res.effort.islands == 0 and res.effort.hand_slices >= len(empty) and res.final_dice == 1.0
