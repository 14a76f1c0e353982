"""The retraining job started through a launcher, as Slicer starts it: ``PythonSlicer`` is a CTK
AppLauncher that starts the real interpreter as its own child and forwards no signals. Cancel must end
the real interpreter (``cancelled``, exit 3, registry unchanged, no "crashed"); a second Retrain is refused
while it runs, also after the launcher was killed and the job found again from its job-state file; and a
stale job-state file naming an unrelated live process is neither watched nor signalled.

Select them with ``pytest -k launcher``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMTrain"))

from SemiSAMTrainLib.job_logic import JobLogic  # noqa: E402

from semisam import procinfo  # noqa: E402
from SemiSAMLib import training_job, training_selftest  # noqa: E402
from SemiSAMLib.training_selftest import fast_settings, make_store, registry  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_leftover_training_jobs")


def _launcher(tmp_path: Path) -> Path:
    """An executable that behaves like PythonSlicer: it runs the real interpreter as its child with the
    arguments it was given, waits, returns the child's exit status, and handles no signal (SIGTERM ends
    the launcher alone; the child goes on)."""
    path = tmp_path / "PythonSlicer"
    path.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        f"sys.exit(subprocess.call([{sys.executable!r}, *sys.argv[1:]]))\n"
    )
    path.chmod(0o755)
    return path


def _wait(logic: JobLogic, predicate, timeout: float = 240.0) -> None:
    training_selftest.wait_for(logic, predicate, lambda: time.sleep(0.1), timeout)


def _start(tmp_path: Path, logic: JobLogic, store):
    settings = fast_settings(tmp_path, iterations=100000)
    logic.job = training_job.TrainingJob.start(store.root, settings, python=str(_launcher(tmp_path)))
    logic._watchNew(None)
    _wait(logic, lambda: logic.progress.iteration >= 1)
    return logic.job


def test_launcher_cancel_ends_the_real_interpreter_with_cancelled(tmp_path):
    store = make_store(tmp_path / "store")
    before = registry(store)
    logic = JobLogic()
    job = _start(tmp_path, logic, store)
    launcher_pid = job.state.pid
    child = job.child()
    assert child is not None and child.pid != launcher_pid  # the job is the interpreter, not the launcher
    assert json.loads((store.root / training_job.JOB_FILE).read_text())["child"]["pid"] == child.pid
    assert job.pid == child.pid
    # A second Retrain is refused while it runs.
    with pytest.raises(training_job.TrainingJobError, match="still running"):
        training_job.TrainingJob.start(store.root, fast_settings(tmp_path, iterations=2))
    logic.cancelTraining()
    _wait(logic, logic.trainingFinished, timeout=120)
    assert logic.progress.outcome == "cancelled", (logic.progress, logic.lastLogLines())
    assert logic.events[-1]["event"] == "cancelled"
    assert job.returncode == training_job.EXIT_CANCELLED  # the launcher passed the child's status on
    assert not procinfo.is_same(child)
    assert registry(store) == before
    assert not (store.root / training_job.JOB_FILE).exists()
    assert not (store.root / training_job.CANCEL_FILE).exists()


def test_launcher_killed_then_job_found_again_refuses_retrain_and_cancels(tmp_path):
    store = make_store(tmp_path / "store")
    before = registry(store)
    job = _start(tmp_path, JobLogic(), store)
    child = job.child()
    os.kill(job.state.pid, signal.SIGKILL)  # the launcher dies; the interpreter goes on training
    job.process.wait(10)
    assert procinfo.is_same(child)
    training_job._LIVE.clear()  # as in a new Slicer: only the job-state file is left
    watcher = JobLogic()
    attached = watcher.attachTraining(str(store.root))
    assert attached is not None and attached.running() and attached.pid == child.pid
    with pytest.raises(training_job.TrainingJobError, match="still running"):
        training_job.TrainingJob.start(store.root, fast_settings(tmp_path, iterations=2))
    watcher.cancelTraining()
    _wait(watcher, watcher.trainingFinished, timeout=120)
    assert watcher.progress.outcome == "cancelled", (watcher.progress, watcher.lastLogLines())
    assert not procinfo.is_same(child)
    assert registry(store) == before
    # The run has ended: Retrain starts again.
    again = training_job.TrainingJob.start(store.root, fast_settings(tmp_path, iterations=1))
    assert again.wait(240) and again.returncode == training_job.EXIT_DONE


@pytest.mark.parametrize("recorded", ["wrong start time", "no start time", "wrong command"])
def test_stale_job_file_naming_an_unrelated_live_process_is_never_signalled(tmp_path, recorded):
    store = make_store(tmp_path / "store", n=1)
    # An unrelated process that got the pid a crashed job once had (in this test's own process group,
    # as a process in Slicer's group would be).
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        ident = procinfo.identity(other.pid)
        assert ident is not None
        start = {"wrong start time": "0:0", "no start time": "", "wrong command": ident.start}[recorded]
        state = training_job.JobState(
            other.pid,
            str(store.root.resolve()),
            str(store.root / training_job.EVENTS_FILE),
            str(store.root / training_job.LOG_FILE),
            [sys.executable, "-m", "semisam", "train", str(store.root)],
            "2026-01-01T00:00:00+00:00",
            start,
            str(store.root / training_job.CANCEL_FILE),
        )
        (store.root / "training").mkdir(exist_ok=True)
        state.write(store.root / training_job.JOB_FILE)
        logic = JobLogic()
        job = logic.attachTraining(str(store.root))
        assert job is not None and not job.running()  # reported as ended, not watched as running
        logic.cancelTraining()
        logic.killTraining()
        job.stop(grace_s=0.5)
        assert other.poll() is None and procinfo.is_same(ident)  # untouched
        # The stale file does not block Retrain.
        logic.poll()
        assert logic.progress.outcome == "crashed" and not (store.root / training_job.JOB_FILE).exists()
        again = training_job.TrainingJob.start(store.root, fast_settings(tmp_path, iterations=1))
        assert again.wait(240) and again.returncode == training_job.EXIT_DONE
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(10)


def test_a_group_holding_the_caller_is_never_signalled():
    assert not procinfo.may_signal_group(os.getpid())
    assert not procinfo.may_signal_group(2**22 + 12345)  # no such process
