"""SemiSAMTrain's retraining job from the Logic's side, with a real ``semisam train`` child process on a
tiny synthetic store (4 scans of 12 x 32 x 32 voxels): it runs to ``done``, the version appears, the plot's
table nodes fill, and SemiSAMSegment's Auto-segment then uses the new version; Cancel ends a real child and
leaves the registry as it was; re-attaching through the job-state file; a failing and a killed run are
reported with their message and log; Accept starts a run every N cases.

The child is started with this interpreter (``sys.executable``), as Slicer starts it with its own Python.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import sys
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
for _module_dir in ("SemiSAMSegment", "SemiSAMTrain"):
    sys.path.insert(0, str(REPO / _module_dir))

from SemiSAMSegmentLib import mrml_io  # noqa: E402

from semisam.store import LabeledStore  # noqa: E402
from SemiSAMLib import training_job, training_selftest  # noqa: E402
from SemiSAMLib.training_plot import TrainingPlot, TrainingProgress  # noqa: E402
from SemiSAMLib.training_selftest import fast_settings, make_store, synthetic_case  # noqa: E402

train_module = importlib.import_module("SemiSAMTrain")
segment_module = importlib.import_module("SemiSAMSegment")

needs_engine = pytest.mark.skipif(
    importlib.util.find_spec("semisam.cli.train") is None,
    reason="the retraining engine (semisam train) is absent",
)


def settings(tmp_path: Path, iterations: int, **kwargs) -> training_job.TrainSettings:
    return fast_settings(tmp_path, iterations, **kwargs)


def wait_for(logic, predicate, timeout: float = 240.0) -> None:
    training_selftest.wait_for(logic, predicate, lambda: time.sleep(0.1), timeout)


@pytest.fixture(autouse=True)
def _no_leftover_jobs(no_leftover_training_jobs):
    """Each test starts with no job known to this process and ends with its children gone."""


# ------------------------------------------------------------------ without a child process
def test_settings_become_the_documented_command_line(tmp_path):
    s = training_job.TrainSettings(
        method="semisam_plus", iterations=50, device="cuda", promote_if_better=False
    )
    store, events = tmp_path / "store", tmp_path / "e.jsonl"
    assert s.arguments(store, events) == [
        "train", str(store), "--method", "semisam_plus", "--iterations", "50", "--max-minutes", "10",
        "--device", "cuda", "--events", str(events), "--no-progress", "--generalist", "litemedsam",
        "--no-promote", "--adapt-generalist",
    ]  # fmt: skip
    # The generalist is taught the structure after every retrain unless the user turned it off.
    off = training_job.TrainSettings(adapt_generalist=False).arguments(store, events)
    assert "--adapt-generalist" not in off
    # Iterations 0 follow the labeled set (semisam train's default rule); a time budget of 0 is none.
    auto = training_job.TrainSettings(iterations=0, max_minutes=0).arguments(store, events)
    assert "--iterations" not in auto and auto[auto.index("--max-minutes") + 1] == "0"
    s = training_job.TrainSettings(generalist="sam", generalist_checkpoint="/w/sam.pth", method="distill")
    assert s.arguments(store, events)[-3:-1] == ["--generalist", "sam:/w/sam.pth"]
    assert "--generalist" not in training_job.TrainSettings(method="mean_teacher").arguments(store, events)
    with pytest.raises(training_job.TrainingJobError, match="iterations must be 0"):
        training_job.TrainSettings(iterations=-1).arguments(store, events)
    node = train_module.SemiSAMTrainLogic.settingsFrom(
        type("P", (), dict(trainingMethod=train_module.TrainingMethod.distill, iterations=7,
                           device=train_module.Device.cpu, generalist=train_module.Generalist.litemedsam,
                           generalistCheckpoint="", promoteIfBetter=True, adaptGeneralist=False))
    )  # fmt: skip
    assert (node.method, node.iterations, node.device, node.promote_if_better) == ("distill", 7, "cpu", True)
    assert node.adapt_generalist is False


def test_events_are_read_incrementally_and_only_complete_lines(tmp_path):
    """The poller reads what was appended since its last call; a line still being written waits."""
    events = tmp_path / "events.jsonl"
    state = training_job.JobState(os.getpid(), str(tmp_path), str(events), str(tmp_path / "log"), [], "now")
    job = training_job.TrainingJob(state)
    assert job.poll() == []  # no file yet
    with open(events, "w") as f:
        f.write(json.dumps({"event": "start", "iterations": 4, "elapsed_s": 0.1}) + "\n")
        f.write('{"event": "iteration", "iteration": 1, "iter')
        f.flush()
        assert [e["event"] for e in job.poll()] == ["start"]
        f.write('ations": 4, "losses": {"total": 0.9}, "elapsed_s": 1.0}\nnot json\n')
        f.flush()
        (event,) = job.poll()
        assert event["iteration"] == 1 and event["losses"] == {"total": 0.9}
        assert job.poll() == []
        f.write(json.dumps({"event": "done", "version": "v0002", "promoted": True}) + "\n")
    assert job.poll()[0]["event"] == "done" and job.final["version"] == "v0002"


def test_progress_and_plot_follow_the_events(mrml_scene):
    progress, plot = TrainingProgress(), TrainingPlot(mrml_scene)
    events = [
        {"event": "start", "iterations": 4, "elapsed_s": 0.0},
        {"event": "phase", "phase": "training", "elapsed_s": 0.5},
        {"event": "iteration", "iteration": 1, "iterations": 4, "losses": {"total": 1.2, "dice": 0.8},
         "eta_s": 30.0, "elapsed_s": 10.0},
        {"event": "iteration", "iteration": 2, "iterations": 4,
         "losses": {"total": 1.0, "dice": 0.7, "consistency": 0.1}, "eta_s": 20.0, "elapsed_s": 20.0},
        {"event": "validation", "iteration": 2, "dice": 0.41, "per_case": {}, "elapsed_s": 21.0},
    ]  # fmt: skip
    for event in events:
        progress.apply(event)
        plot.add(event)
    assert progress.describe() == (
        "training: iteration 2/4, 0:21 elapsed, about 0:20 left; loss 1, validation Dice 0.4100"
    )
    assert progress.fraction == 0.5
    rows = plot.rows()
    assert [r["iteration"] for r in rows] == [1.0, 2.0] and rows[1]["consistency"] == pytest.approx(0.1)
    assert np.isnan(rows[0]["consistency"])  # a term that appeared later
    assert plot.rows("dice") == [{"iteration": 2.0, "dice": pytest.approx(0.41)}]
    names = {
        plot.chart.GetNthPlotSeriesNode(i).GetName() for i in range(plot.chart.GetNumberOfPlotSeriesNodes())
    }
    assert names == {f"SemiSAM training: loss {n}" for n in ("total", "dice", "consistency")} | {
        "SemiSAM training: validation Dice"
    }
    progress.apply(
        {
            "event": "budget",
            "iteration": 2,
            "iterations": 3,
            "planned": 4,
            "max_minutes": 10,
            "elapsed_s": 22.0,
        }
    )
    assert progress.fraction == pytest.approx(2 / 3)
    assert progress.describe().endswith("3 iterations fit the 10 min budget (of 4 planned)")
    progress.apply({"event": "error", "message": "store x: no training cases", "kind": "no_training_cases"})
    assert (
        progress.outcome == "error" and progress.message == "store x: no training cases (no_training_cases)"
    )
    again = TrainingPlot(mrml_scene)  # the same nodes, found by name
    assert again.chart.GetID() == plot.chart.GetID() and [r["iteration"] for r in again.rows()] == [1.0, 2.0]
    again.reset()
    assert again.rows() == [] and again.chart.GetNumberOfPlotSeriesNodes() == 0


# ------------------------------------------------------------------ real child processes
@needs_engine
def test_a_real_run_reaches_done_the_plot_fills_and_auto_segment_uses_the_new_version(mrml_scene, tmp_path):
    """The flow SemiSAMTrainTest runs inside Slicer (SemiSAMLib/training_selftest.py)."""
    training_selftest.retrain_flow(
        unittest.TestCase(), mrml_scene, train_module.SemiSAMTrainLogic(), segment_module.SemiSAMSegmentLogic(),
        tmp_path, lambda: time.sleep(0.1),
    )  # fmt: skip


@pytest.mark.slow  # real LiteMedSAM encodes the store's slices: ~1 min on one thread; `-m slow`
@needs_engine
def test_retrain_with_the_generalist_phase_reports_the_generalist_version(mrml_scene, tmp_path):
    """The adaptation phase of the background job, as SemiSAMTrainTest runs it inside Slicer."""
    training_selftest.adapt_flow(
        unittest.TestCase(), mrml_scene, train_module.SemiSAMTrainLogic(), tmp_path, lambda: time.sleep(0.1)
    )


@needs_engine
def test_cancel_ends_the_real_child_and_leaves_the_registry_as_it_was(mrml_scene, tmp_path):
    """Cancel (SIGTERM to the process group) during training, from a Logic that re-attached through the
    job-state file only (as in a new Slicer session)."""
    training_selftest.cancel_flow(
        unittest.TestCase(), mrml_scene, train_module.SemiSAMTrainLogic, tmp_path, lambda: time.sleep(0.1),
        forget_live=True,
    )  # fmt: skip


@pytest.mark.slow
@needs_engine
def test_an_error_event_and_a_killed_run_are_reported_with_the_log(mrml_scene, tmp_path):
    """Two real children (slow: ~27 s on a loaded 2-core machine). Run with
    ``pytest -m slow Testing/Python/test_slicer_train_job.py``."""
    empty = LabeledStore.create(tmp_path / "empty", {1: "lesion"}, modality="CT")
    logic = train_module.SemiSAMTrainLogic()
    logic.startTraining(str(empty.root), settings(tmp_path, iterations=2), mrml_scene)
    wait_for(logic, logic.trainingFinished, timeout=120)
    assert logic.progress.outcome == "error" and "no_training_cases" in logic.progress.message
    details = logic.lastLogLines()  # what the error dialog shows as details
    assert '"event": "error"' in details.replace('":"', '": "') or details == "\n".join(
        logic.job.log_tail(20)
    )
    assert logic.job.returncode == training_job.EXIT_ERROR and not logic.trainingRunning()
    # A run that dies without a final event (killed here) is reported as crashed, with its log.
    store = make_store(tmp_path / "store")
    job = logic.startTraining(str(store.root), settings(tmp_path, iterations=100000), mrml_scene)
    wait_for(logic, lambda: logic.progress.iteration >= 1)
    os.killpg(job.pid, signal.SIGKILL)
    wait_for(logic, logic.trainingFinished, timeout=30)
    assert logic.progress.outcome == "crashed"
    details = logic.lastLogLines()
    assert details.splitlines()[-1] in logic.job.log_tail(1) + logic.job.events_tail(1), details
    assert logic.progress.message == f"the training process ended without a final event (exit status {-9})"
    assert training_job.attach(store.root) is None  # the job-state file went with it


@needs_engine
def test_accept_starts_retraining_every_n_cases(mrml_scene, tmp_path):
    store_dir = tmp_path / "store"
    segment = segment_module.SemiSAMSegmentLogic()
    started = []
    for i in range(4):
        image, mask = synthetic_case(i)
        node = mrml_io.node_from_volume(image, mrml_scene, f"scan {i}")
        seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        mrml_io.import_mask(mask, node, seg, {1: "lesion"})
        segment.accept(node, seg, str(store_dir))
        assert segment.startRetrainingIfDue(str(store_dir), 0) is None  # off by default
        job = segment.startRetrainingIfDue(str(store_dir), 3, settings(tmp_path, iterations=100000))
        started.append(job is not None)
        if job is not None:
            assert training_job.attach(store_dir) is job  # SemiSAM Train finds it
            job.stop(30.0)  # SIGTERM to the group (before the job's handler is set up it simply ends)
            assert not job.running() and job.returncode in (training_job.EXIT_CANCELLED, -signal.SIGTERM)
    assert started == [False, False, True, False]


def test_progress_follows_the_generalist_phase_after_the_run(mrml_scene):
    """After ``done``, the adaptation phase's ``generalist`` events move the bar by its steps, and the
    finish text names the generalist version (or why there is none); the plot ignores them."""
    progress, plot = TrainingProgress(), TrainingPlot(mrml_scene)
    events = [
        {"event": "start", "iterations": 4, "elapsed_s": 0.0},
        {"event": "done", "version": "v0003", "promoted": True, "promotion": "better", "iterations": 4,
         "elapsed_s": 30.0},
        {"event": "generalist", "kind": "start", "train": 3, "validation": 1, "elapsed_s": 31.0},
        {"event": "generalist", "kind": "budget", "steps": 200, "elapsed_s": 32.0},
        {"event": "generalist", "kind": "iteration", "step": 50, "steps": 200, "loss": 0.3, "elapsed_s": 95.0},
    ]  # fmt: skip
    for event in events:
        progress.apply(event)
        plot.add(event)
    assert progress.outcome == "done" and progress.fraction == 0.25
    assert (
        progress.describe() == "retrained v0003 (active); teaching the generalist: step 50/200, 1:35 elapsed"
    )
    assert progress.generalist_text() == "" and plot.rows() == []
    progress.apply({"event": "generalist", "kind": "done", "version": "v0001", "promoted": True,
                    "reason": "better on 1 of 1 validation case (weak)", "elapsed_s": 120.0})  # fmt: skip
    assert progress.generalist_text() == (
        "Generalist v0001 (now answers Propagate). better on 1 of 1 validation case (weak)"
    )
    assert progress.describe() == "retrained v0003 (active); " + progress.generalist_text()
    failed = TrainingProgress()
    failed.apply({"event": "generalist", "kind": "error", "code": "no_labeled_case", "message": "no case"})
    assert failed.generalist_text() == "The generalist was not adapted: no case"
