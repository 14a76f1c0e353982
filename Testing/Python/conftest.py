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
