"""The modules' self-tests under Reload and Test: a skip is reported and the next test runs; before torch
is installed the tests that need it skip and the others pass without importing it.

Slicer calls ``<Module>Test.runTest`` directly inside ``tryWithErrorDisplay``; here the modules' real
``runTest`` and test methods run on a unittest.TestCase (the headless stand-in of
``ScriptedLoadableModuleTest`` refuses to be created) with ``slicer.mrmlScene`` a slicer-core scene.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from SemiSAMLib import selftest_runner  # noqa: E402


class _Three(unittest.TestCase):
    """A self-test class of three tests, the second skipping as one without its sample case does."""

    __test__ = False  # run by the tests below, not collected by pytest

    def __init__(self) -> None:
        super().__init__("runTest")
        self.calls: list[str] = []

    def runTest(self) -> None:  # unittest needs a method to name
        pass

    def setUp(self) -> None:
        self.calls.append("setUp")

    def test_first(self) -> None:
        self.calls.append("first")

    def test_offline(self) -> None:
        self.calls.append("offline")
        self.skipTest("sample case lung1 not found locally")

    def test_last(self) -> None:
        self.calls.append("last")


def test_a_skip_is_reported_and_the_next_test_runs():
    case, reports = _Three(), []
    outcomes = selftest_runner.run_each(
        (case.test_first, case.test_offline, case.test_last), case.setUp, reports.append
    )
    assert case.calls == ["setUp", "first", "setUp", "offline", "setUp", "last"]
    assert outcomes == {
        "test_first": "passed",
        "test_offline": "skipped: sample case lung1 not found locally",
        "test_last": "passed",
    }
    assert reports == [
        "test_offline skipped: sample case lung1 not found locally",
        "2 of 3 self-tests passed; skipped: test_offline",
    ]


def test_a_failure_still_ends_the_run():
    case, reports = _Three(), []

    def test_broken() -> None:
        case.fail("wrong mask")

    with pytest.raises(AssertionError, match="wrong mask"):
        selftest_runner.run_each((case.test_first, test_broken, case.test_last), case.setUp, reports.append)
    assert case.calls == ["setUp", "first", "setUp"] and reports == []


def test_require_packages_skips_before_torch_and_the_requirements(monkeypatch):
    from SemiSAMLib import dependencies

    case = _Three()
    monkeypatch.setattr(dependencies, "torch_available", lambda: False)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: ["monai>=1.3"])
    with pytest.raises(unittest.SkipTest, match=r"not installed yet \(torch, monai>=1\.3\)"):
        selftest_runner.require_packages(case)
    monkeypatch.setattr(dependencies, "torch_available", lambda: True)
    monkeypatch.setattr(dependencies, "missing_requirements", lambda: [])
    selftest_runner.require_packages(case)  # everything there: no skip


#: Runs both modules' runTest with torch unimportable (``sys.modules["torch"] = None``), as in a Slicer
#: where the PyTorch extension has not installed it yet; prints what each runTest reported.
_HEADLESS_RUN = textwrap.dedent(
    """
    import json, sys, types, unittest
    from pathlib import Path

    sys.modules["torch"] = None
    repo, shared = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path[:0] = [str(repo), str(repo / "SemiSAMSegment"), str(repo / "SemiSAMTrain")]
    import slicer
    from SemiSAMSegmentLib.mrml_io import batch_scene
    from semisam import samples

    slicer.mrmlScene = batch_scene()
    slicer.app = types.SimpleNamespace(processEvents=lambda: None)
    search = samples.search_folders
    samples.search_folders = lambda extra=(): [shared, *search(extra)]
    import SemiSAMSegment, SemiSAMTrain

    def headless(test_class, **overrides):
        reports = []
        methods = {k: v for k, v in vars(test_class).items() if callable(v) and not k.startswith("__")}
        methods.update(overrides, delayDisplay=lambda self, message, *a, **k: reports.append(message))
        case = type(test_class.__name__, (unittest.TestCase,), methods)("runTest")
        case.runTest()
        return reports

    def test_ParameterNode(self):  # the parameter node wrapper needs the application
        self.skipTest("headless")

    print(json.dumps({
        "segment": headless(SemiSAMSegment.SemiSAMSegmentTest),
        "train": headless(SemiSAMTrain.SemiSAMTrainTest, test_ParameterNode=test_ParameterNode),
        "torch": sys.modules["torch"] is None,
    }))
    """
)


def test_the_modules_self_tests_skip_what_needs_torch_before_it_is_installed(tmp_path):
    pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")
    from conftest import SHARED_DATA

    from semisam import samples

    result = subprocess.run(
        [sys.executable, "-c", _HEADLESS_RUN, str(REPO), str(SHARED_DATA)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    assert reports["torch"]  # nothing replaced the block
    needs = "needs Python packages that are not installed yet (torch"
    segment = reports["segment"]
    if samples.find_case("lung1", extra=[SHARED_DATA]) is not None:
        # the mask round trip needs no torch: it really ran (load, import, export, compare)
        assert "Mask round trip: load and save a label map" in segment
        assert "mask_round_trip_flow passed" in segment
        passed = "2 of 5"
    else:
        passed = "1 of 5"
    for name in ("test_AutoSegment", "test_PropagateAndAccept", "test_PropagateOffTheGuiThread"):
        assert any(r.startswith(f"{name} skipped: {needs}") for r in segment), segment
    assert segment[-1].startswith(f"{passed} self-tests passed; skipped: ")
    train = reports["train"]
    train_tests = ("test_PromoteRollback", "test_RetrainAndAutoSegment", "test_RetrainTeachesTheGeneralist")
    for name in (*train_tests, "test_CancelAndReattach"):
        assert any(r.startswith(f"{name} skipped: {needs}") for r in train), train
    assert train[-1] == (
        "1 of 6 self-tests passed; skipped: test_ParameterNode, test_PromoteRollback, "
        "test_RetrainAndAutoSegment, test_RetrainTeachesTheGeneralist, test_CancelAndReattach"
    )
