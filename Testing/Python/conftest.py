"""Shared pytest fixtures: real sample cases (verified by SHA-256) and a real MRML scene."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from semisam import samples

REPO = Path(__file__).resolve().parents[2]
#: The development data beside the checkout (present on developers' machines and in CI, optional).
SHARED_DATA = REPO.parent / "shared" / "data"


def _sample(name: str) -> samples.SampleCase:
    case = samples.find_case(name, extra=[SHARED_DATA])
    if case is not None:
        return case
    if os.environ.get("SEMISAM_NO_DOWNLOAD"):
        pytest.skip(f"sample case {name!r} not found locally and SEMISAM_NO_DOWNLOAD is set")
    try:
        return samples.get_case(name, download=True)
    except samples.SampleUnavailableError as exc:
        pytest.skip(
            f"sample case {name!r} unavailable: not in {SHARED_DATA} nor the cache, and fetching failed: {exc}"
        )


@pytest.fixture(scope="session")
def sample_case():
    """Factory: ``sample_case("lung1")`` -> verified :class:`semisam.samples.SampleCase` (read-only files)."""
    return _sample


@pytest.fixture(scope="session")
def lung1(sample_case):
    return sample_case("lung1")


@pytest.fixture(scope="session")
def brain1(sample_case):
    return sample_case("brain1")


@pytest.fixture(scope="session")
def breast1(sample_case):
    return sample_case("breast1")


@pytest.fixture
def mrml_scene():
    """A real ``vtkMRMLScene`` (slicer-core wheel) with the Colors, Segmentations and Volumes logics
    registered on one application logic, as Slicer's application sets them up; skips without slicer-core.

    Yields the scene; ``scene.semisam_logics`` maps "Colors", "Segmentations", "Volumes" to the logics.
    """
    pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")
    if str(REPO / "SemiSAMSegment") not in sys.path:
        sys.path.insert(0, str(REPO / "SemiSAMSegment"))
    from SemiSAMSegmentLib.mrml_io import batch_scene

    scene = batch_scene()
    logics = {k: v for k, v in scene.semisam_logics.items() if k != "Application"}
    yield scene
    scene.Clear(1)
    for logic in logics.values():
        logic.SetMRMLScene(None)


@pytest.fixture
def no_leftover_training_jobs():
    """Each test starts with no retraining job known to this process and ends with its children gone
    (SemiSAMLib.training_job keeps the jobs it started by store)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from SemiSAMLib import training_job

    training_job._LIVE.clear()
    yield
    for job in list(training_job._LIVE.values()):
        job.kill()
        job.wait(10)
    training_job._LIVE.clear()
