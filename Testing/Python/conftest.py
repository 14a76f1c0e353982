"""Shared pytest fixtures: real sample cases (verified by SHA-256) and a real MRML scene."""

from __future__ import annotations

import os
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
    slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}
    for name, cls in (
        ("Colors", slicer.vtkSlicerColorLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
    ):
        logic = cls()
        # The application logic must be set before the scene: the Colors logic looks up its default
        # colour files through it when it sees the scene.
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    scene.semisam_logics = logics
    yield scene
    scene.Clear(1)
    for logic in logics.values():
        logic.SetMRMLScene(None)
