"""The whole-scan propagation benchmark's bookkeeping: where a result ends against the structure, and the
summary the done-when ratios are read from."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "Testing" / "benchmarks"))
    import propagation_whole

    return propagation_whole


def _slab(lo: int, hi: int, n: int = 12) -> np.ndarray:
    m = np.zeros((n, 4, 4), bool)
    m[lo : hi + 1, 1:3, 1:3] = True
    return m


def test_ends_are_negative_when_short_and_positive_when_past(bench):
    truth = _slab(2, 9)
    assert bench.ends(_slab(3, 7), truth) == {"low": -1, "high": -2}
    assert bench.ends(_slab(0, 11), truth) == {"low": 2, "high": 2}
    assert bench.ends(np.zeros_like(truth), truth) == {"low": None, "high": None}


def test_subject_range_reads_ranges_and_lists(bench):
    assert bench.subject_range("8-10,12") == [8, 9, 10, 12]


def test_summary_ratio_is_mean_dice_over_mean_oracle_and_counts_ends(bench):
    def run(d, low, high):
        return {"dice": d, "ends": {"low": low, "high": high}}

    subjects = {
        "a": {"oracle": 0.8, "k1": run(0.4, -5, 0), "k1_middle": run(0.5, 3, 1), "k3": run(0.7, 0, 0)},
        "b": {"oracle": 0.6, "k1": run(0.6, None, None), "k1_middle": run(0.5, -3, 4), "k3": run(0.5, 1, -1)},
    }
    s = bench.summarise(subjects)
    assert s["oracle_mean"] == 0.7
    assert s["k1"]["ratio_to_oracle"] == round(0.5 / 0.7, 3)
    assert (s["k1"]["ends_short"], s["k1"]["ends_past"], s["k1"]["ends_within_2"]) == (1, 0, 1)
    assert (s["k1_middle"]["ends_short"], s["k1_middle"]["ends_past"]) == (1, 2)
    assert s["k3"]["ends_within_2"] == 4
