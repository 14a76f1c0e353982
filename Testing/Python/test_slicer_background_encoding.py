"""SemiSAMSegment's background slice encoding sets itself up off the calling thread.

When a scan is shown (the module opening included) the Widget starts ``precomputeEmbeddings`` on the main
thread. Only cheap MRML reads may happen there: the generalist build (``import torch``, weights), the voxel
copy into the case and the encoding run on the job's thread. A tiny real SAM model stands in for the
generalist (built before the test, handed out by a ``generalistModel`` that waits for the test's go).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from SemiSAMSegmentLib import mrml_io, propagate, session  # noqa: E402

from semisam.scan.volume import Volume  # noqa: E402

segment_module = importlib.import_module("SemiSAMSegment")


class GatedModels:
    """``generalistModel`` stand-in: records the thread it runs on, waits for :meth:`go`, returns the model
    (or raises ``error``)."""

    def __init__(self, model, error: BaseException | None = None) -> None:
        self.model, self.error = model, error
        self.threads: list[threading.Thread] = []
        self._go = threading.Event()

    def __call__(self, generalist="litemedsam", checkpoint="", device="auto", version=None):
        self.threads.append(threading.current_thread())
        assert self._go.wait(60), "the test never let the build finish"
        if self.error is not None:
            raise self.error
        return self.model

    def go(self) -> None:
        self._go.set()


@pytest.fixture(scope="module")
def tiny_model():
    from tiny_generalists import tiny_sam

    return tiny_sam()


@pytest.fixture
def scan_node(mrml_scene):
    array = np.random.default_rng(0).uniform(-100, 100, (12, 40, 56)).astype(np.float32)
    return mrml_io.node_from_volume(Volume(array, (0.8, 0.8, 2.0)), mrml_scene, "scan")


@pytest.fixture
def copies(monkeypatch):
    """The threads the case's voxel copy ran on."""
    threads = []
    original = session.VolumeSnapshot.session

    def recorded(self):
        threads.append(threading.current_thread())
        return original(self)

    monkeypatch.setattr(session.VolumeSnapshot, "session", recorded)
    return threads


def test_the_build_the_copy_and_the_encoding_run_off_the_calling_thread(scan_node, tiny_model, copies):
    logic = segment_module.SemiSAMSegmentLogic()
    logic.generalistModel = models = GatedModels(tiny_model)
    started = time.perf_counter()
    slices = logic.slicesAround(scan_node, [5], 1)
    job = logic.precomputeEmbeddings(scan_node, slices, device="cpu")
    returned = time.perf_counter() - started
    # The build is held up: the call came back anyway, before any case (voxel copy) existed.
    assert slices == [5, 4, 6] and job.running() and job.done == 0 and logic._sessions == {}
    assert returned < 5.0, returned
    models.go()
    assert job.wait(60) and job.error is None and job.done == 3 and job.indices == [5, 4, 6]
    main = threading.current_thread()
    assert models.threads and all(t is not main for t in models.threads)
    assert len(copies) == 1 and copies[0] is not main
    # The case it made is the volume's case: a copy of the voxels, not a view of the node's buffer, whose
    # propagation state (kept for the first Propagate) already holds the three slices.
    case = logic.session(scan_node)
    assert logic._sessions == {scan_node.GetID(): case}
    voxels = mrml_io.array_from_volume_node(scan_node, copy=False)
    assert np.array_equal(case.volume.array, voxels) and not np.shares_memory(case.volume.array, voxels)
    assert all(case.state.encoder.cached(k) for k in (4, 5, 6)) and not case.state.encoder.cached(7)


def test_a_case_started_meanwhile_on_the_main_thread_is_kept(scan_node, tiny_model, copies):
    logic = segment_module.SemiSAMSegmentLogic()
    logic.generalistModel = models = GatedModels(tiny_model)
    job = logic.precomputeEmbeddings(scan_node, [3], device="cpu")
    mine = logic.session(scan_node)  # e.g. Auto-segment pressed while the generalist still loads
    models.go()
    assert job.wait(60) and job.error is None and job.done == 1
    assert logic.session(scan_node) is mine and copies == []  # used, not copied again or replaced
    # Its state is left to the Propagate that builds it (the job never swaps the state of a case the main
    # thread holds); that state finds the slice in the shared cache.
    assert mine.state is None
    state = propagate.make_state(mine, tiny_model, "axial", None, logic.embeddingCache())
    assert state.encoder.cached(3) and not state.encoder.cached(4)


def test_a_failed_setup_is_the_jobs_error_not_the_callers(scan_node):
    logic = segment_module.SemiSAMSegmentLogic()
    logic.generalistModel = models = GatedModels(None, ImportError("No module named 'torch'"))
    job = logic.precomputeEmbeddings(scan_node, [1, 2], device="cpu")
    models.go()
    assert job.wait(60) and isinstance(job.error, ImportError) and logic._sessions == {}
    assert logic.precomputeProblem(job) == (
        "Background slice encoding stopped after 0 of 2 slices (ImportError: No module named 'torch'); "
        "Propagate encodes the slices it needs."
    )


def test_cancel_during_the_setup_encodes_nothing_and_keeps_no_case(scan_node, tiny_model, copies):
    logic = segment_module.SemiSAMSegmentLogic()
    logic.generalistModel = models = GatedModels(tiny_model)
    job = logic.precomputeEmbeddings(scan_node, [1, 2], device="cpu")
    job.cancel()
    models.go()
    assert job.wait(60) and job.error is None and job.done == 0 and job.cancelled
    assert logic._sessions == {} and copies == []


def test_the_generalists_checkpoint_is_checked_on_the_calling_thread(scan_node):
    logic = segment_module.SemiSAMSegmentLogic()
    with pytest.raises(ValueError, match="sam needs a checkpoint file"):
        logic.precomputeEmbeddings(scan_node, [1], "sam", "", device="cpu")


#: precomputeEmbeddings with torch unimportable, as in a Slicer where the PyTorch extension has not
#: installed it yet: the caller gets a job; the job's thread hits the ImportError.
_NO_TORCH = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    sys.modules["torch"] = None
    repo = Path(sys.argv[1])
    sys.path[:0] = [str(repo), str(repo / "SemiSAMSegment")]
    import numpy as np
    from SemiSAMSegmentLib import mrml_io
    from semisam.scan.volume import Volume
    import SemiSAMSegment

    scene = mrml_io.batch_scene()
    node = mrml_io.node_from_volume(Volume(np.zeros((6, 8, 8), np.float32)), scene, "scan")
    logic = SemiSAMSegment.SemiSAMSegmentLogic()
    job = logic.precomputeEmbeddings(node, logic.slicesAround(node, [3], 2), device="cpu")
    print(json.dumps({"finished": job.wait(60), "error": type(job.error).__name__,
                      "problem": logic.precomputeProblem(job), "cases": len(logic._sessions)}))
    """
)


def test_without_torch_the_caller_gets_a_job_that_says_what_is_missing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["finished"] and out["error"] == "ModuleNotFoundError" and out["cases"] == 0
    assert out["problem"].startswith("Background slice encoding stopped after 0 of 5 slices")


def test_the_widgets_encoding_settings_are_precompute_arguments(scan_node):
    """The Widget captures ``encoding_settings`` when Auto-segment is pressed (or a scan is shown) and
    calls ``precomputeEmbeddings(slices=..., **settings)`` later, perhaps after the module was left."""
    import inspect
    from types import SimpleNamespace

    from SemiSAMSegmentLib.encoding import encoding_settings

    node = SimpleNamespace(
        inputVolume="shown",
        generalist="litemedsam",
        generalistCheckpoint="",
        intensityPreset="auto",
        device="cpu",
    )
    assert encoding_settings(None) is None
    assert encoding_settings(node)["volumeNode"] == "shown"
    settings = encoding_settings(node, scan_node)
    assert settings["volumeNode"] is scan_node
    logic = segment_module.SemiSAMSegmentLogic()
    inspect.signature(logic.precomputeEmbeddings).bind(slices=[1], **settings)  # raises TypeError if not


def test_after_auto_segment_the_closer_views_around_the_proposal_are_encoded_too(mrml_scene, tiny_model):
    array = np.random.default_rng(1).uniform(-100, 100, (4, 160, 170)).astype(np.float32)
    node = mrml_io.node_from_volume(Volume(array, (0.8, 0.8, 2.0)), mrml_scene, "big")
    logic = segment_module.SemiSAMSegmentLogic()
    logic.generalistModel = models = GatedModels(tiny_model)
    models.go()
    proposal = np.zeros(array.shape, np.uint8)
    proposal[1:3, 60:72, 80:95] = 1  # a small structure on slices 1-2
    logic.session(node).proposal = proposal
    slices = logic.slicesAroundProposal(node, [1], 8)
    views = logic.viewsAroundProposal(node, slices)
    assert sorted(views) == [1, 2]
    job = logic.precomputeEmbeddings(node, slices, device="cpu", views=views)
    assert job.wait(60) and job.error is None and job.done == len(slices) + 2
    # the first Propagate's state finds them in the shared cache
    encoder = propagate.make_state(
        logic.session(node), tiny_model, "axial", None, logic.embeddingCache()
    ).encoder
    assert all(encoder.cached(k) for k in slices)
    assert encoder.cached(1, views[1]) and encoder.cached(2, views[2]) and not encoder.cached(0, views[1])
