"""The review order ("Next uncertain slice"): the specialist's ranking, re-ranked by each propagation."""

from __future__ import annotations

import math

import numpy as np

from semisam.propagation.result import PropagationResult
from semisam.review import GENERALIST, SPECIALIST, ReviewOrder


def _result(confidence: dict[int, float], keys: list[int], flagged: dict[int, str] | None = None, n: int = 8):
    conf = np.full(n, np.nan, np.float32)
    for s, c in confidence.items():
        conf[s] = c
    return PropagationResult(
        mask=np.zeros((n, 4, 4), np.uint8),
        confidence=conf,
        source=np.full(n, -1),
        stops={},
        key_slices=keys,
        flagged=flagged or {},
    )


def test_a_propagation_puts_the_slices_it_answered_first_least_confident_first():
    before = ReviewOrder.from_specialist([7, 0, 3, 4, 5, 1, 2, 6], np.linspace(0.0, 0.7, 8))
    result = _result({2: 0.9, 3: 0.95, 4: 0.6, 5: 0.8, 6: 0.7}, keys=[3], flagged={6: "tracks disagree"})
    after = before.after_propagation(result)
    assert after.slices == [6, 4, 5, 2, 7, 0, 3, 1]  # flagged, then 0.6 < 0.8 < 0.9; the key slice stays
    assert after.source == [GENERALIST] * 4 + [SPECIALIST] * 4
    np.testing.assert_allclose(after.uncertainty[:4], [0.3, 0.4, 0.2, 0.1], atol=1e-6)
    np.testing.assert_allclose(after.uncertainty[4:], [0.7, 0.0, 0.3, 0.1], atol=1e-6)  # carried over
    assert sorted(after.slices) == list(range(8))


def test_a_propagation_across_another_axis_or_an_empty_one_changes_nothing():
    before = ReviewOrder.from_specialist([2, 0, 1], [0.1, 0.2, 0.3])
    result = _result({0: 0.5, 1: 0.4}, keys=[0], n=3)
    assert before.after_propagation(result, axis=1) is before
    assert before.after_propagation(_result({}, keys=[], n=3)).slices == [2, 0, 1]


def test_without_an_auto_segment_a_propagation_makes_the_order():
    after = ReviewOrder().after_propagation(_result({1: 0.9, 2: 0.5, 3: 0.7}, keys=[1]))
    assert after.slices == [2, 3] and after.next_after(None) == 2 and after.next_after(3) == 2
    assert ReviewOrder().next_after(4) is None
    assert ReviewOrder.from_specialist([5, 1]).next_after(5) == 1
    assert math.isnan(ReviewOrder.from_specialist([5, 1]).uncertainty[0])
