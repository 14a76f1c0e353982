"""The promotion rule compares versions case by case (semisam.training.promote)."""

from __future__ import annotations

import pytest
from training_synth import FAST, make_store, one_thread, synthetic_case  # noqa: F401

from semisam.store import LabeledStore
from semisam.training import TrainConfig, train
from semisam.training.promote import CASE_SPREAD, MIN_GAIN, compare, more_labels_tolerance

pytestmark = pytest.mark.usefixtures("one_thread")


def _cases(values):
    return {f"c{i}": v for i, v in enumerate(values)}


def test_a_paired_gain_must_clear_the_margin_and_its_standard_error():
    old = _cases([0.70, 0.60, 0.80, 0.65])
    clear = compare(_cases([0.74, 0.63, 0.83, 0.69]), old, more_labels=False)
    assert clear.better and clear.strength == "paired" and clear.gain == pytest.approx(0.035)
    # The same mean gain carried by one case out of four: not promoted (one case's luck).
    lucky = compare(_cases([0.84, 0.59, 0.79, 0.64]), old, more_labels=True)
    assert not lucky.better and lucky.gain == pytest.approx(0.0275) and lucky.stderr > lucky.gain
    # A mean that differs by 0.002: noise, not promoted even with more labels.
    noise = compare(_cases([0.702, 0.602, 0.802, 0.652]), old, more_labels=True)
    assert not noise.better and noise.gain < MIN_GAIN


def test_a_version_worse_on_held_out_cases_is_never_promoted_on_a_paired_decision():
    old = _cases([0.70, 0.60, 0.80, 0.65, 0.75])
    worse = compare(_cases([0.69, 0.58, 0.79, 0.66, 0.70]), old, more_labels=True)
    assert not worse.better and worse.gain < 0 and "not" not in worse.strength


def test_few_cases_give_a_weak_decision_that_favours_more_labels_within_a_tolerance():
    old = _cases([0.666])
    assert compare(_cases([0.651]), old, more_labels=True).better  # -0.015 on one case, more labels
    slightly = compare(_cases([0.651]), old, more_labels=False)
    assert not slightly.better and "weak decision, 1 validation case(s)" in slightly.reason
    assert not compare(_cases([0.666 - more_labels_tolerance(1) - 0.01]), old, more_labels=True).better
    both = compare(_cases([0.70, 0.80]), _cases([0.68, 0.78]), more_labels=False)
    assert both.better and both.strength == "weak"  # better by the margin on every case
    with pytest.raises(ValueError, match="no validation case"):
        compare({"a": 0.5}, {"b": 0.5}, more_labels=False)


def test_more_labels_are_refused_on_few_cases_only_beyond_what_the_seed_alone_moves():
    # Two trainings of the same labels moved one whole-head case's Dice by about CASE_SPREAD (0.029):
    # a one-sided 5 % test of a mean of n such gains tolerates 0.048, 0.034, 0.028 for n = 1, 2, 3.
    assert [round(more_labels_tolerance(n), 3) for n in (1, 2, 3)] == [0.048, 0.034, 0.028]
    assert more_labels_tolerance(1) == pytest.approx(1.645 * CASE_SPREAD)
    with pytest.raises(ValueError, match="at least one validation case"):
        more_labels_tolerance(0)
    # Inside that spread, a version with more labels is promoted (a fixed 0.02 refused these); the same
    # differences without more labels are not.
    one = compare(_cases([0.760 - 0.040]), _cases([0.760]), more_labels=True)
    assert one.better and "not below -0.048" in one.reason and "weak decision" in one.reason
    two = compare(_cases([0.772 - 0.030, 0.820 - 0.018]), _cases([0.772, 0.820]), more_labels=True)
    assert two.better and two.gain == pytest.approx(-0.024)
    assert not compare(_cases([0.720]), _cases([0.760]), more_labels=False).better
    # Beyond the spread: refused, more labels or not.
    assert not compare(_cases([0.760 - 0.049]), _cases([0.760]), more_labels=True).better
    assert not compare(_cases([0.70, 0.75]), _cases([0.74, 0.79]), more_labels=True).better  # -0.04 on 2
    # Four cases or more: the paired rule alone decides (the gains' own spread is measured there).
    assert not compare(
        _cases([0.69, 0.79, 0.64, 0.74]), _cases([0.70, 0.80, 0.65, 0.75]), more_labels=True
    ).better


def test_a_retrain_with_one_validation_case_says_its_decision_is_weak(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=1)
    cfg = TrainConfig(iterations=3, device="cpu", **FAST)
    assert train(store.root, cfg).promoted
    store.add_case(*synthetic_case(77), split="train")
    second = train(store.root, cfg)
    assert second.status == "done", second.message
    assert "weak decision, 1 validation case(s)" in second.promotion, second.promotion
    active = LabeledStore(store.root).models.active().version
    assert (active == second.version) == second.promoted
