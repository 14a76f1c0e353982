"""semisam_plus through the public `semisam.training.train` API on a store whose unlabeled scans have no
labels at all; the second identical run finds its pseudo-labels in the store's cache."""

from __future__ import annotations

import pytest
from training_synth import one_thread, semi_store_and_config  # noqa: F401

from semisam.training import train

pytestmark = pytest.mark.slow  # ~1-2 min: real LiteMedSAM encodes the unlabeled slices; run with -m slow


def test_semisam_plus_trains_from_unlabeled_scans_and_reuses_its_cache(tmp_path, one_thread):  # noqa: F811
    parts = {"semisam_plus": {"start": 40, "rampup": 0, "rounds": 2}}
    store, cfg = semi_store_and_config(tmp_path / "store", "semisam_plus", 50, parts)
    runs = []
    for _ in range(2):
        events: list[dict] = []
        res = train(store.root, cfg, events=events.append, promote=False)
        assert res.status == "done", res.message
        pl = [e for e in events if e["event"] == "phase" and e["phase"] == "pseudo_labels" and "cached" in e]
        losses = [e["losses"] for e in events if e["event"] == "iteration"]
        runs.append((pl, losses))
    (first, losses1), (second, losses2) = runs
    assert [e["iteration"] for e in first] == [40]
    assert first[0]["cached"] == 0 and first[0]["encoded"] > 0 and first[0]["teaching_slices"] > 0
    assert all(lo["pseudo"] == 0.0 for lo in losses1[:40]) and any(lo["pseudo"] > 0 for lo in losses1[40:])
    # Same config, seed and store: the same specialist weights at iteration 40 -> pseudo-labels from disk,
    # no slice encoded again.
    assert second[0]["cached"] == 2 and second[0]["encoded"] == 0
    assert losses2[-1]["pseudo"] == pytest.approx(losses1[-1]["pseudo"], rel=1e-4)


def test_a_cancel_while_pseudo_labels_are_made_ends_the_refresh_between_cases(tmp_path, one_thread):  # noqa: F811
    import threading

    store, cfg = semi_store_and_config(
        tmp_path / "store", "semisam_plus", 60, {"semisam_plus": {"start": 20}}
    )
    stop = threading.Event()
    events: list[dict] = []

    def on_event(e: dict) -> None:
        events.append(e)
        if e["event"] == "phase" and e["phase"] == "pseudo_labels" and e.get("done") == 0:
            stop.set()  # the refresh starts: cancel it

    cut = train(store.root, cfg, events=on_event, cancel=stop, promote=False)
    assert cut.status == "cancelled", cut.message
    made = [e["done"] for e in events if e["event"] == "phase" and e["phase"] == "pseudo_labels"]
    assert made == [0, 1], made  # stopped after the first of the 2 unlabeled scans, no summary event
