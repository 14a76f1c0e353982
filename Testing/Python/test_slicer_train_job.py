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
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
for _module_dir in ("SemiSAMSegment", "SemiSAMTrain"):
    sys.path.insert(0, str(REPO / _module_dir))

from SemiSAMSegmentLib import mrml_io  # noqa: E402

from semisam.store import LabeledStore  # noqa: E402
from semisam.volume import Volume  # noqa: E402
from SemiSAMLib import training_job  # noqa: E402
from SemiSAMLib.training_plot import TrainingPlot, TrainingProgress  # noqa: E402

train_module = importlib.import_module("SemiSAMTrain")
segment_module = importlib.import_module("SemiSAMSegment")

needs_engine = pytest.mark.skipif(
    importlib.util.find_spec("semisam.cli.train") is None,
    reason="the retraining engine (semisam train) is absent",
)

SHAPE, SPACING = (12, 32, 32), (0.8, 0.8, 1.5)
#: Small and fast: whole-slice crops, a narrow network, events every iteration.
FAST = {
    "crop_size": [32, 32],
    "batch_size": 2,
    "warmup": 1,
    "lr": 3e-3,
    "log_every": 1,
    "validate_every": 0,
    "model_kwargs": {"channels": [8, 16, 16, 32, 32]},
}


def synthetic_case(seed: int) -> tuple[Volume, np.ndarray]:
    """A CT-like scan (background -300 +- 60 HU, an ellipsoid lesion at +150) and its mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    c = [rng.uniform(4, SHAPE[0] - 4), rng.uniform(10, SHAPE[1] - 10), rng.uniform(10, SHAPE[2] - 10)]
    inside = ((z - c[0]) / 3) ** 2 + ((y - c[1]) / 6) ** 2 + ((x - c[2]) / 6) ** 2 <= 1.0
    image = rng.normal(-300, 60, SHAPE).astype(np.float32)
    image[inside] = rng.normal(150, 60, int(inside.sum()))
    return Volume(image, spacing=SPACING), inside.astype(np.uint8)


def make_store(root: Path, n: int = 4) -> LabeledStore:
    store = LabeledStore.create(root, {1: "lesion"}, modality="CT")
    for i in range(n):
        store.add_case(*synthetic_case(i))
    return store


def settings(tmp_path: Path, iterations: int, **kwargs) -> training_job.TrainSettings:
    config = tmp_path / "fast.json"
    config.write_text(json.dumps(FAST))
    return training_job.TrainSettings(
        method="supervised", iterations=iterations, device="cpu", extra=["--config", str(config)], **kwargs
    )


def wait_for(logic, predicate, timeout: float = 240.0) -> None:
    """Poll as the Widget's timer does until ``predicate()``; fails with the job's log on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; progress {logic.progress}; log:\n{logic.lastLogLines()}")
        logic.poll()
        time.sleep(0.1)


def registry(store: LabeledStore) -> tuple[list[str], str | None]:
    active = store.models.active()
    return [v.version for v in store.models.versions()], active.version if active else None


@pytest.fixture(autouse=True)
def _no_leftover_jobs():
    """Each test starts with no job known to this process and ends with its children gone."""
    training_job._LIVE.clear()
    yield
    for job in list(training_job._LIVE.values()):
        job.kill()
        job.wait(10)
    training_job._LIVE.clear()


# ------------------------------------------------------------------ without a child process
def test_settings_become_the_documented_command_line(tmp_path):
    s = training_job.TrainSettings(
        method="semisam_plus", iterations=50, device="cuda", promote_if_better=False
    )
    store, events = tmp_path / "store", tmp_path / "e.jsonl"
    assert s.arguments(store, events) == [
        "train", str(store), "--method", "semisam_plus", "--iterations", "50", "--device", "cuda",
        "--events", str(events), "--no-progress", "--generalist", "litemedsam", "--no-promote",
    ]  # fmt: skip
    s = training_job.TrainSettings(generalist="sam", generalist_checkpoint="/w/sam.pth", method="distill")
    assert s.arguments(store, events)[-2:] == ["--generalist", "sam:/w/sam.pth"]
    assert "--generalist" not in training_job.TrainSettings(method="mean_teacher").arguments(store, events)
    with pytest.raises(training_job.TrainingJobError, match="iterations must be at least 1"):
        training_job.TrainSettings(iterations=0).arguments(store, events)
    node = train_module.SemiSAMTrainLogic.settingsFrom(
        type("P", (), dict(trainingMethod=train_module.TrainingMethod.distill, iterations=7,
                           device=train_module.Device.cpu, generalist=train_module.Generalist.litemedsam,
                           generalistCheckpoint="", promoteIfBetter=True))
    )  # fmt: skip
    assert (node.method, node.iterations, node.device, node.promote_if_better) == ("distill", 7, "cpu", True)


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
    store = make_store(tmp_path / "store")
    logic = train_module.SemiSAMTrainLogic()
    job = logic.startTraining(str(store.root), settings(tmp_path, iterations=3), mrml_scene)
    assert (store.root / training_job.JOB_FILE).is_file()
    assert json.loads((store.root / training_job.JOB_FILE).read_text())["pid"] == job.pid
    wait_for(logic, logic.trainingFinished)
    assert logic.progress.outcome == "done", (logic.progress, logic.lastLogLines())
    assert job.returncode == training_job.EXIT_DONE
    assert [e["event"] for e in logic.events][0] == "start" and logic.events[-1]["event"] == "done"
    version = logic.progress.version
    assert logic.progress.iteration == 3 and logic.progress.fraction == 1.0
    rows = logic.plot.rows()
    assert [r["iteration"] for r in rows] == [1.0, 2.0, 3.0] and all(r["total"] > 0 for r in rows)
    assert logic.plot.chart.GetNumberOfPlotSeriesNodes() >= 1
    assert not (store.root / training_job.JOB_FILE).exists()  # the job ended: nothing to re-attach to
    # The version is in the registry and, as the first one, promoted; the table rows show it.
    assert registry(LabeledStore(store.root)) == ([version], version) and logic.progress.promoted
    assert [r["version"] for r in logic.modelRows(str(store.root))] == [version]
    # SemiSAMSegment's Auto-segment reads the store's active version when it runs.
    image, _ = synthetic_case(9)
    node = mrml_io.node_from_volume(image, mrml_scene, "new scan")
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segment = segment_module.SemiSAMSegmentLogic()
    worker = segment.startAutoSegment(node, str(store.root), "", seg, "cpu")
    out = segment.applyAutoSegment(worker.wait(120) and worker.result)
    assert out.model_version == version and out.segment_ids


@needs_engine
def test_cancel_ends_the_real_child_and_leaves_the_registry_as_it_was(mrml_scene, tmp_path):
    """Cancel (SIGTERM to the process group) during training: the job checkpoints, writes ``cancelled``
    and exits 3; its process group is gone and the registry is what it was before the run. The run is
    watched by a second Logic that re-attached through the job-state file, as after reopening the module."""
    store = make_store(tmp_path / "store")
    before = registry(store)
    starter = train_module.SemiSAMTrainLogic()
    job = starter.startTraining(str(store.root), settings(tmp_path, iterations=100000), mrml_scene)
    wait_for(starter, lambda: starter.progress.iteration >= 1)
    training_job._LIVE.clear()  # as in a new Slicer session: only the job-state file is left
    watcher = train_module.SemiSAMTrainLogic()
    attached = watcher.attachTraining(str(store.root), mrml_scene)
    assert attached is not None and attached.pid == job.pid and attached.process is None
    assert watcher.progress.iteration >= 1 and watcher.events[0]["event"] == "start"  # replayed
    t0 = time.monotonic()
    watcher.cancelTraining()
    wait_for(watcher, watcher.trainingFinished, timeout=60)
    assert watcher.progress.outcome == "cancelled", watcher.lastLogLines()
    assert job.wait(10) and job.returncode == training_job.EXIT_CANCELLED
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)  # the whole group is gone
    assert registry(LabeledStore(store.root)) == before
    assert time.monotonic() - t0 < 60


@needs_engine
def test_an_error_event_and_a_killed_run_are_reported_with_the_log(mrml_scene, tmp_path):
    empty = LabeledStore.create(tmp_path / "empty", {1: "lesion"}, modality="CT")
    logic = train_module.SemiSAMTrainLogic()
    logic.startTraining(str(empty.root), settings(tmp_path, iterations=2), mrml_scene)
    wait_for(logic, logic.trainingFinished, timeout=120)
    assert logic.progress.outcome == "error" and "no_training_cases" in logic.progress.message
    assert logic.job.returncode == training_job.EXIT_ERROR and not logic.trainingRunning()
    # A run that dies without a final event (killed here) is reported as crashed, with its log.
    store = make_store(tmp_path / "store")
    job = logic.startTraining(str(store.root), settings(tmp_path, iterations=100000), mrml_scene)
    wait_for(logic, lambda: logic.progress.iteration >= 1)
    os.killpg(job.pid, signal.SIGKILL)
    wait_for(logic, logic.trainingFinished, timeout=30)
    assert logic.progress.outcome == "crashed"
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
            assert job.stop(30.0)  # cleanly: SIGTERM, checkpoint, exit 3
    assert started == [False, False, True, False]
