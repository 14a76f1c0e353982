"""Property-based fuzzing of ``semisam simulate``'s work folder: a resumed simulation reads its
``simulation.json`` (case order and options); whatever a crash, a full disk or a hand edit left there,
the resume either continues with an order of the dataset's own cases or refuses with one ``ValueError``
naming the file, and the file is left as it was. Derandomized, no model runs (the plan is read before
any case is replayed)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semisam.loop.replay import PLAN_FILE, Simulation, SimulationConfig

VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(), st.text(max_size=12)),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=8,
)


def _dataset(root: Path, n: int = 3) -> Path:
    """A tiny MSD-layout dataset: ``n`` 6 x 16 x 16 scans with a box label."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.normal(0, 1, (6, 16, 16)).astype(np.float32)
        label = np.zeros((6, 16, 16), np.uint8)
        label[2:4, 5:10, 5:10] = 1
        sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(root / "labelsTr" / f"case_{i:03d}.nii.gz"))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "tiny",
                "channel_names": {"0": "MR"},
                "labels": {"background": 0, "lesion": 1},
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    dataset = _dataset(base / "tiny")
    config = SimulationConfig(dataset=dataset, work=base / "work")
    Simulation(config)._plan()  # the first run writes the plan
    return config, json.loads((config.work / PLAN_FILE).read_text())


@st.composite
def damaged(draw, plan):
    how = draw(st.sampled_from(["replace", "replace", "delete", "whole", "truncate", "garble"]))
    text = json.dumps(plan)
    if how == "truncate":
        return text.encode()[: draw(st.integers(0, len(text) - 1))]
    if how == "garble":
        raw = bytearray(text.encode())
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    doc = json.loads(text)
    if how == "whole":
        return json.dumps(draw(VALUES)).encode()
    key = draw(st.sampled_from(sorted(doc)))
    if how == "delete":
        del doc[key]
    else:
        doc[key] = draw(VALUES)
    return json.dumps(doc).encode()


@settings(
    derandomize=not os.environ.get("SEMISAM_FUZZ_RANDOM"),
    database=None,
    deadline=None,
    max_examples=max(1, int(80 * float(os.environ.get("SEMISAM_FUZZ_EXAMPLES", "1")))),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_damaged_plan_is_resumed_or_refused_naming_the_file(world, data):
    config, plan = world
    raw = data.draw(damaged(plan))
    path = config.work / PLAN_FILE
    path.write_bytes(raw)
    try:
        order = Simulation(config)._plan()
    except ValueError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc), str(exc)
    else:
        assert sorted(order) == sorted(set(order)) and set(order) <= set(plan["order"])
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(raw).digest()
