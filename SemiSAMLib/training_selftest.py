"""The retraining flows of SemiSAMTrain's self-test (``SemiSAMTrainTest``, inside Slicer), run unchanged by
pytest (``Testing/Python/test_slicer_train_job.py``) against slicer-core: a real ``semisam train`` child
on a tiny synthetic store (4 CT-like scans of 12 x 32 x 32 voxels with one ellipsoid lesion each).

Each flow takes the running ``unittest.TestCase`` (for its asserts), the scene, the Logic classes and a
temporary folder; ``idle`` is called while waiting (``slicer.app.processEvents`` inside Slicer, a short
sleep in pytest). No qt.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import training_job

SHAPE, SPACING = (12, 32, 32), (0.8, 0.8, 1.5)
#: Small and fast: whole-slice crops, a narrow network, an event every iteration (``--config`` file).
FAST = {
    "crop_size": [32, 32],
    "batch_size": 2,
    "warmup": 1,
    "lr": 3e-3,
    "log_every": 1,
    "validate_every": 0,
    "model_kwargs": {"channels": [8, 16, 16, 32, 32]},
}


def synthetic_case(seed: int):
    """``(Volume, mask)``: a CT-like scan (background -300 +- 60 HU, an ellipsoid lesion at +150)."""
    from semisam.scan.volume import Volume

    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    c = [rng.uniform(4, SHAPE[0] - 4), rng.uniform(10, SHAPE[1] - 10), rng.uniform(10, SHAPE[2] - 10)]
    inside = ((z - c[0]) / 3) ** 2 + ((y - c[1]) / 6) ** 2 + ((x - c[2]) / 6) ** 2 <= 1.0
    image = rng.normal(-300, 60, SHAPE).astype(np.float32)
    image[inside] = rng.normal(150, 60, int(inside.sum()))
    return Volume(image, spacing=SPACING), inside.astype(np.uint8)


def make_store(root: Path, n: int = 4):
    """A store with ``n`` labeled synthetic cases (all train while the validation split is empty)."""
    from semisam.store import LabeledStore

    store = LabeledStore.create(root, {1: "lesion"}, modality="CT")
    for i in range(n):
        store.add_case(*synthetic_case(i))
    return store


def fast_settings(tmp: Path, iterations: int, **kwargs) -> training_job.TrainSettings:
    """Supervised CPU settings with the :data:`FAST` config file; no adaptation phase unless asked
    (``adapt_generalist=True``: then with a few seconds' budget)."""
    config = Path(tmp) / "fast.json"
    config.write_text(json.dumps(FAST))
    kwargs.setdefault("adapt_generalist", False)
    extra = ["--config", str(config)] + (
        ["--adapt-max-minutes", "0.05"] if kwargs["adapt_generalist"] else []
    )
    return training_job.TrainSettings(
        method="supervised", iterations=iterations, device="cpu", extra=extra, **kwargs
    )


def adapt_flow(test, scene, train_logic, tmp: Path, idle: Callable[[], None]) -> None:
    """Retrain with the adaptation phase on: after the specialist's ``done`` the same job teaches the real
    LiteMedSAM the store's structure; the panel's progress names the generalist version it registered."""
    from semisam.adapt.versions import GeneralistRegistry
    from semisam.store import LabeledStore

    store = make_store(Path(tmp) / "store")
    store.add_case(*synthetic_case(4), split="validation")  # nothing can promote a version without one
    train_logic.startTraining(str(store.root), fast_settings(tmp, iterations=2, adapt_generalist=True), scene)
    wait_for(train_logic, train_logic.trainingFinished, idle, timeout=600)
    progress = train_logic.progress
    test.assertEqual(progress.outcome, "done", (progress, train_logic.lastLogLines()))
    test.assertEqual(
        progress.generalist.get("outcome"), "done", (progress.generalist, train_logic.lastLogLines())
    )
    versions = [v.version for v in GeneralistRegistry(LabeledStore(store.root)).versions()]
    test.assertEqual(versions, [progress.generalist["version"]])
    test.assertTrue(progress.generalist_text().startswith(f"Generalist {versions[0]} ("))


def registry(store) -> tuple[list[str], str | None]:
    """``(versions, active version)`` of the store's registry, read afresh."""
    from semisam.store import LabeledStore

    models = LabeledStore(store.root).models
    active = models.active()
    return [v.version for v in models.versions()], active.version if active else None


def wait_for(logic, predicate: Callable[[], bool], idle: Callable[[], None], timeout: float = 240.0) -> None:
    """Poll as the Widget's timer does until ``predicate()``; raises with the job's log on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; progress {logic.progress}; log:\n{logic.lastLogLines()}")
        logic.poll()
        idle()


def retrain_flow(test, scene, train_logic, segment_logic, tmp: Path, idle: Callable[[], None]) -> str:
    """Retrain runs a real child to ``done``; the version is registered and promoted (the store's first);
    the plot's table fills; the job-state file is gone; Auto-segment then uses the new version. Returns it."""
    store = make_store(Path(tmp) / "store")
    job = train_logic.startTraining(str(store.root), fast_settings(tmp, iterations=3), scene)
    test.assertEqual(json.loads((store.root / training_job.JOB_FILE).read_text())["pid"], job.pid)
    wait_for(train_logic, train_logic.trainingFinished, idle)
    progress = train_logic.progress
    test.assertEqual(progress.outcome, "done", (progress, train_logic.lastLogLines()))
    test.assertEqual(job.returncode, training_job.EXIT_DONE)
    kinds = [e["event"] for e in train_logic.events]
    test.assertTrue("start" in kinds and kinds.count("iteration") == 3 and kinds[-1] == "done", kinds)
    test.assertEqual((progress.iteration, progress.fraction), (3, 1.0))
    rows = train_logic.plot.rows()
    test.assertEqual([r["iteration"] for r in rows], [1.0, 2.0, 3.0])
    test.assertTrue(all(r["total"] > 0 for r in rows))
    test.assertGreaterEqual(train_logic.plot.chart.GetNumberOfPlotSeriesNodes(), 1)
    test.assertFalse((store.root / training_job.JOB_FILE).exists())  # ended: nothing to re-attach to
    version = progress.version
    test.assertEqual(registry(store), ([version], version))
    test.assertTrue(progress.promoted)
    test.assertEqual([r["version"] for r in train_logic.modelRows(str(store.root))], [version])
    # SemiSAM Segment's Auto-segment reads the store's active version each time it runs.
    from SemiSAMLib.mrml_volume import node_from_volume

    image, _ = synthetic_case(9)
    node = node_from_volume(image, scene, "new scan")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    worker = segment_logic.startAutoSegment(node, str(store.root), "", seg, "cpu")
    worker.wait(120)
    out = segment_logic.applyAutoSegment(worker.result)
    test.assertEqual(out.model_version, version)
    test.assertTrue(out.segment_ids)
    return version


def cancel_flow(test, scene, logic_class, tmp: Path, idle: Callable[[], None], forget_live: bool) -> None:
    """Cancel during training: the job checkpoints, writes ``cancelled`` and exits 3; its process group is
    gone; the registry is what it was. The run is watched by a second Logic that re-attached through the
    job-state file, as after reopening the module (``forget_live``: as in a new Slicer, from the file only)."""
    store = make_store(Path(tmp) / "store")
    before = registry(store)
    starter = logic_class()
    job = starter.startTraining(str(store.root), fast_settings(tmp, iterations=100000), scene)
    wait_for(starter, lambda: starter.progress.iteration >= 1, idle)
    if forget_live:
        training_job._LIVE.clear()
    watcher = logic_class()
    attached = watcher.attachTraining(str(store.root), scene)
    test.assertIsNotNone(attached)
    test.assertEqual(attached.pid, job.pid)
    test.assertGreaterEqual(watcher.progress.iteration, 1)  # the events so far were replayed
    watcher.cancelTraining()
    wait_for(watcher, watcher.trainingFinished, idle, timeout=60)
    test.assertEqual(watcher.progress.outcome, "cancelled", watcher.lastLogLines())
    test.assertTrue(job.wait(10))
    test.assertEqual(job.returncode, training_job.EXIT_CANCELLED)
    if hasattr(os, "killpg"):
        with test.assertRaises(ProcessLookupError):
            os.killpg(job.pid, 0)  # the whole process group is gone
    test.assertEqual(registry(store), before)
