"""The time model's arithmetic and the summary's means and ratios (no models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semisam.loop import Effort, SimulationConfig, TimeModel
from semisam.loop.summary import run_stats, summarize


def test_effort_prices_interactions_with_the_time_model():
    e = Effort(boxes=2, points_pos=1, points_neg=2, hand_slices=1, compute_s=1.5)
    tm = TimeModel()
    assert (tm.box_s, tm.point_s, tm.hand_slice_s) == (4.0, 2.0, 30.0)
    assert e.points == 3 and e.prompts == 5
    assert e.interaction_s(tm) == pytest.approx(2 * 4 + 3 * 2 + 30)
    assert e.total_s(tm) == pytest.approx(44 + 1.5)
    other = TimeModel(box_s=10, point_s=1, hand_slice_s=60)
    assert e.total_s(other) == pytest.approx(20 + 3 + 60 + 1.5)
    j = e.to_json(tm)
    assert j == {
        "boxes": 2,
        "points": 3,
        "points_pos": 1,
        "points_neg": 2,
        "islands": 0,
        "hand_slices": 1,
        "hand_work": 1.0,
        "simulated_s": 44.0,
        "compute_s": 1.5,
        "effort_s": 45.5,
    }
    assert e.prompt_counts() == {"box": 2, "point+": 1, "point-": 2, "hand_slice": 1}
    assert Effort().prompt_counts() == {} and Effort().total_s(tm) == 0
    # A stray piece removed with the Islands effect is one click, not a prompt.
    e.islands = 3
    assert e.prompts == 5 and e.interaction_s(tm) == pytest.approx(44 + 3 * tm.island_s)
    assert e.prompt_counts()["island"] == 3 and e.to_json(tm)["islands"] == 3


def test_a_hand_fix_is_priced_by_how_wrong_the_slice_was():
    """Touching up a nearly right slice costs its wrong share of a drawn slice, never under the floor;
    a slice drawn from nothing (Dice 0) costs the whole slice; ``touch_up_min=1`` is the flat price."""
    tm = TimeModel()
    e = Effort()
    for d in (0.0, 0.7, 0.95):  # drawn from nothing, 30 % wrong, nearly right (floor 0.2)
        e.add_hand_slice(d)
    assert e.hand_slices == 3
    assert e.hand_work(tm) == pytest.approx(1.0 + 0.3 + 0.2)
    assert e.interaction_s(tm) == pytest.approx(1.5 * 30)
    assert e.interaction_s(TimeModel(touch_up_min=1.0)) == pytest.approx(3 * 30)
    assert e.to_json(tm)["hand_work"] == 1.5
    # A better slice never costs more, and no slice costs more than drawing it.
    shares = [tm.hand_share(d) for d in np.linspace(0, 1, 21)]
    assert all(a >= b for a, b in zip(shares, shares[1:], strict=False)) and max(shares) == 1.0


def _case(index: int, effort: float, proposal: float, cid: str | None = None) -> dict:
    return {
        "index": index,
        "case_id": cid or f"c{index}",
        "effort_s": effort,
        "proposal_dice": proposal,
        "final_dice": 0.9,
        "boxes": 1,
        "points": 0,
        "hand_slices": 0,
        "compute_s": 0.5,
        "model_version": "v0001" if proposal else None,
    }


def test_summary_compares_first_and_last_windows_and_the_baseline():
    loop = [
        _case(i, e, p)
        for i, (e, p) in enumerate(
            [
                (40, 0),
                (44, 0),
                (36, 0),
                (40, 0),
                (30, 0.5),
                (20, 0.6),
                (25, 0.6),
                (25, 0.7),
                (10, 0.8),
                (12, 0.8),
                (8, 0.85),
                (10, 0.85),
            ],
            1,
        )
    ]
    base = [_case(r["index"], 40.0, 0.0, r["case_id"]) for r in loop]
    cfg = SimulationConfig(dataset=Path("d"), work=Path("w"), retrain_every=4)
    s = summarize(loop, base, [{"after_cases": 4, "version": "v0001", "promoted": True, "seconds": 3}], cfg)
    assert s["event"] == "summary" and s["cases"] == 12 and s["window"] == 4
    assert s["loop"]["first_mean_effort_s"] == 40.0
    assert s["loop"]["last_mean_effort_s"] == 10.0
    assert s["last_over_first"] == 0.25
    assert s["baseline"]["same_last_mean_effort_s"] == 40.0
    assert s["last_over_baseline"] == 0.25
    assert s["loop"]["proposal_dice_blocks"] == [0.0, 0.6, 0.825]
    assert s["proposal_dice_rises"] is True
    assert s["loop"]["proposal_dice_slope"] > 0
    assert s["retrains"][0]["version"] == "v0001" and s["loop"]["proposing_versions"] == ["v0001"]
    # Proposals that fall after the first specialist do not "rise".
    flat = [_case(i, 10, 0.0 if i <= 4 else (0.8 if i <= 8 else 0.5)) for i in range(1, 13)]
    assert summarize(flat, [], [], cfg)["proposal_dice_rises"] is False


def test_blind_validation_cases_are_left_out_of_the_proposal_blocks():
    """A validation case drawn blind has an empty proposal and no proposing version: counting it as a
    proposal of Dice 0 would make a block with one blind case look like a model that got worse."""
    cfg = SimulationConfig(dataset=Path("d"), work=Path("w"), retrain_every=4)
    dice = [0, 0, 0, 0, 0, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7]  # case 5 blind, none in the last block
    loop = [_case(i, 10, p) for i, p in enumerate(dice, 1)]
    s = summarize(loop, [], [], cfg)
    assert s["loop"]["proposal_dice_blocks"] == [0.0, 0.45, 0.7]
    assert s["loop"]["proposal_dice_blocks_proposed"] == [None, 0.6, 0.7]
    assert s["proposal_dice_rises"] is True
    dice[-4:] = [0.55] * 4  # below the proposed cases of block 2, above the block's plain mean
    assert (
        summarize([_case(i, 10, p) for i, p in enumerate(dice, 1)], [], [], cfg)["proposal_dice_rises"]
        is False
    )


def test_run_stats_with_fewer_cases_than_a_window():
    s = run_stats([_case(1, 10.0, 0.0), _case(2, 20.0, 0.0)], 4)
    assert s["first_mean_effort_s"] == 15.0 and s["last_mean_effort_s"] is None
    assert s["effort_s_total"] == 30.0
