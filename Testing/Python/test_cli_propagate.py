"""`semisam propagate` end to end through a real child process, on lung1 cropped around the nodule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semisam.propagation.simulate import crop_around, middle_slice
from semisam.scan.volume import read_mask, read_volume, write_mask, write_volume

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripted_modules"))
    return subprocess.run(
        [sys.executable, "-m", "semisam", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def crop_files(lung1, tmp_path_factory):
    """lung1 cropped to the nodule +-2 slices, +-24 px, written as NRRD with its exact geometry."""
    vol = read_volume(lung1.image)
    lab = read_mask(lung1.label, reference=vol).array
    cvol, clab = crop_around(vol, lab, (2, 24, 24))
    d = tmp_path_factory.mktemp("lungcrop")
    write_volume(cvol, d / "image.nrrd")
    write_mask(clab, cvol, d / "label.nrrd")
    return d / "image.nrrd", d / "label.nrrd", clab


def test_propagate_cli_writes_mask_on_the_image_grid(crop_files, tmp_path):
    image, label_path, lab = crop_files
    k = middle_slice(lab)
    ys, xs = np.nonzero(lab[k])
    prompts = {
        "axis": "axial",
        "prompts": [{"slice": k, "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]}],
    }
    pfile = tmp_path / "prompts.json"
    pfile.write_text(json.dumps(prompts), encoding="utf-8")
    out = tmp_path / "out" / "mask.nii.gz"
    conf = tmp_path / "conf.json"
    r = _run(
        "propagate",
        str(image),
        "--prompts",
        str(pfile),
        "--output",
        str(out),
        "--device",
        "cpu",
        "--confidence",
        str(conf),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ref = read_volume(image)
    mask = read_mask(out, reference=ref)  # raises GeometryMismatchError unless on exactly the image's grid
    assert ref.same_grid(mask)
    m, lab_on_disk = mask.array > 0, read_mask(label_path, reference=ref).array > 0
    d = 2 * (m & lab_on_disk).sum() / (m.sum() + lab_on_disk.sum())
    assert d > 0.5, d
    summary = json.loads(conf.read_text())
    assert summary["key_slices"] == [k] and str(k) in summary["slices"]
    assert 0 < summary["slices"][str(k)]["confidence"] <= 1
    assert summary["voxels"] == int(m.sum())
    assert json.loads(r.stdout)["output"] == str(out)


@pytest.mark.parametrize(
    "content, words",
    [
        ({"axis": "axial", "prompts": [{"slice": 2, "box": [0, 0, 500, 5]}]}, ["prompt 0", "outside"]),
        ({"axis": "axial", "prompts": [{"slice": 99, "point": [1, 1]}]}, ["prompt 0", "slice 99", "outside"]),
        (
            {"axis": "axial", "prompts": [{"slice": 2, "point": [1, 1]}, {"slice": 2, "box": [9, 9, 3, 12]}]},
            ["prompt 1", "inverted"],
        ),
        ({"axis": "diagonal", "prompts": [{"slice": 2, "point": [1, 1]}]}, ["unknown axis", "diagonal"]),
        ("{ this is not json", ["not valid JSON"]),
    ],
)
def test_bad_prompts_exit_1_with_the_problem_named(crop_files, tmp_path, content, words):
    image, _, _ = crop_files
    pfile = tmp_path / "prompts.json"
    pfile.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    out = tmp_path / "mask.nii.gz"
    r = _run(
        "propagate", str(image), "--prompts", str(pfile), "--output", str(out), "--device", "cpu", timeout=120
    )
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "semisam propagate: error:" in r.stderr and str(pfile) in r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr[-1000:])
    assert not out.exists()  # nothing written on bad input
