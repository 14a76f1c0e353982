"""The rule that writes a propagation into an existing segment (semisam.merge): fix the wrong slices,
keep the ones the new answer agrees with. Synthetic masks; no model."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.merge import AGREE_DICE, MergeRule, merge_keep_agreeing, slice_agrees, write_propagation
from semisam.metrics import dice
from semisam.slices import merge_in_range


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.uint8)


def structure(n=11, shape=(32, 32)):
    """A ``(n, 32, 32)`` truth: a disc on every slice, its radius growing to the middle."""
    out = np.zeros((n, *shape), np.uint8)
    for s in range(n):
        out[s] = disc(shape, (16, 16), 4 + min(s, n - 1 - s))
    return out


def test_slice_agreement():
    a = disc((32, 32), (16, 16), 8)
    assert slice_agrees(np.zeros((4, 4)), np.zeros((4, 4)))  # both empty
    assert not slice_agrees(a, np.zeros_like(a))  # one empty
    assert slice_agrees(a, disc((32, 32), (16, 17), 8))  # a one-pixel shift: Dice ~0.95
    assert not slice_agrees(a, disc((32, 32), (16, 22), 8))  # Dice ~0.5
    assert AGREE_DICE == 0.8


def test_a_box_on_one_bad_slice_of_a_good_proposal_keeps_the_good_slices():
    """The proposal is the truth except slice 5 (empty). The generalist's answer to a box there is right
    on 4..6 but drifts badly further out (shifted discs). Only the slices the answer disagrees with up to
    the first agreeing one are taken: slice 5; 4 and 6 agree, so everything beyond them is kept."""
    truth = structure()
    proposal = truth.copy()
    proposal[5] = 0
    answer = np.zeros_like(truth)
    for s in range(truth.shape[0]):
        answer[s] = np.roll(truth[s], 6 * abs(s - 5), axis=1)  # right at 5, worse with distance
    answer[4], answer[6] = truth[4], truth[6]
    out = merge_keep_agreeing(proposal, answer, "axial", 0, 10, [5])
    assert out.replaced == [5] and out.kept == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert np.array_equal(out.mask, truth)
    # The whole-range rule, for contrast, takes the drifted slices too and loses most of the Dice.
    replaced = merge_in_range(proposal, answer, "axial", 0, 10)
    assert dice(replaced, truth) < 0.8 < dice(out.mask, truth) == 1.0


def test_the_walk_replaces_until_the_first_agreeing_slice_then_keeps_even_disagreeing_ones():
    truth = structure()
    current = np.zeros_like(truth)
    current[1:10] = np.roll(truth[1:10], 8, axis=2)  # wrong everywhere
    current[8] = truth[8]  # ... except slice 8 (and slice 2, below)
    current[2] = truth[2]
    new = truth.copy()
    out = merge_keep_agreeing(current, new, "axial", 0, 10, [5])
    # Up from 5: 6, 7 disagree (replaced), 8 agrees (kept), 9 disagrees but lies beyond 8 (kept).
    # Down from 5: 4, 3 replaced, 2 agrees; 1 and 0 kept.
    assert out.replaced == [3, 4, 5, 6, 7]
    assert np.array_equal(out.mask[9], current[9]) and np.array_equal(out.mask[1], current[1])
    assert np.array_equal(out.mask[3:8], truth[3:8])


def test_a_key_slice_is_always_replaced_and_two_keys_walk_towards_each_other():
    truth = structure()
    current = truth.copy()
    new = truth.copy()
    new[2] = disc((32, 32), (10, 10), 3)  # the user's answer on key 2 differs from what is there
    out = merge_keep_agreeing(current, new, "axial", 0, 10, [2, 8])
    assert out.replaced == [2, 8]  # keys always; every other slice agrees
    assert np.array_equal(out.mask[2], new[2])
    # Between two keys with nothing agreeing, both walks cover the gap; beyond them the range edge stops.
    current2 = np.roll(truth, 9, axis=2)
    out2 = merge_keep_agreeing(current2, truth, "axial", 0, 10, [3, 7])
    assert out2.replaced == list(range(11))


def test_an_empty_segment_gets_the_whole_propagation():
    truth = structure()
    new = truth.copy()
    new[7] = 0  # a gap in the answer: with an empty segment it agrees, but the whole range is written
    new[7, 0, 0] = 1
    out = merge_keep_agreeing(np.zeros_like(truth), new, "axial", 2, 9, [5])
    assert out.replaced == list(range(2, 10)) and out.kept == []
    assert np.array_equal(out.mask, merge_in_range(np.zeros_like(truth), new, "axial", 2, 9))


def test_slices_outside_the_range_are_never_touched_and_other_axes_work():
    truth = structure()
    current = np.ones_like(truth)
    new = np.zeros_like(truth)
    out = write_propagation(current, new, "axial", 3, 6, [4], MergeRule.REPLACE)
    assert out.mask[:3].all() and out.mask[7:].all() and not out.mask[3:7].any()
    # Coronal: slices are current[:, j]; the key column j = 16 is replaced, agreeing neighbours kept.
    vol = np.zeros((8, 32, 32), np.uint8)
    vol[2:6, 10:22, 10:22] = 1
    answer = vol.copy()
    answer[:, 16] = 0
    out = write_propagation(vol, answer, "coronal", 10, 21, [16])
    assert out.replaced == [16] and not out.mask[:, 16].any() and out.mask[:, 15].sum() == vol[:, 15].sum()


def test_replace_rule_is_merge_in_range_and_bad_input_is_refused():
    truth = structure()
    current = np.roll(truth, 3, axis=2)
    out = write_propagation(current, truth, "axial", 2, 8, [5], "replace")
    assert np.array_equal(out.mask, merge_in_range(current, truth, "axial", 2, 8))
    assert out.replaced == list(range(2, 9))
    with pytest.raises(ValueError, match="differ in shape"):
        merge_keep_agreeing(truth, truth[:5], "axial", 0, 4, [2])
    with pytest.raises(ValueError, match="slice range 3..20"):
        merge_keep_agreeing(truth, truth, "axial", 3, 20, [5])
    with pytest.raises(ValueError):
        write_propagation(truth, truth, "axial", 0, 4, [2], "overwrite")
    # No key slice inside the range: nowhere to walk from, the range is replaced.
    out = merge_keep_agreeing(current, truth, "axial", 2, 8, [0])
    assert out.replaced == list(range(2, 9))


def test_propagated_range_spans_mask_keys_and_the_previous_write():
    from semisam.merge import propagated_range

    assert propagated_range([5, 6, 7], [6]) == (5, 7)
    assert propagated_range([5, 6], [9]) == (5, 9)  # a key slice where the new answer is empty
    assert propagated_range([5, 6], [6], previous=(2, 12)) == (2, 12)  # the earlier write is redone
    with pytest.raises(ValueError, match="no range"):
        propagated_range([], [])


def test_key_slices_rule_writes_the_prompted_slices_only():
    truth = structure()
    current = np.roll(truth, 3, axis=2)  # every slice wrong
    out = write_propagation(current, truth, "axial", 2, 8, [3, 6, 10], MergeRule.KEY_SLICES)
    assert out.replaced == [3, 6] and out.kept == [2, 4, 5, 7, 8]  # key 10 lies outside the range
    for s in range(truth.shape[0]):
        want = truth[s] if s in (3, 6) else current[s]
        assert np.array_equal(out.mask[s], want), s
    # Coronal slices, and an empty answer on a key slice empties it.
    vol = np.ones((4, 8, 8), np.uint8)
    out = write_propagation(vol, np.zeros_like(vol), "coronal", 0, 7, [5], "key_slices")
    assert out.replaced == [5] and not out.mask[:, 5].any() and out.mask.sum() == vol.sum() - 4 * 8
    with pytest.raises(ValueError, match="slice range"):
        write_propagation(vol, vol, "axial", 2, 9, [3], "key_slices")
