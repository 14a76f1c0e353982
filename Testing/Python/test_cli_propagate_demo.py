"""`semisam demo` end to end (child process, full-size lung1 slices): slow, run with `pytest -m slow`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from semisam.scan.volume import read_mask, read_volume

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_lung1_writes_mask_montage_and_reports_dice(lung1, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripted_modules"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "semisam",
            "demo",
            "--case",
            "lung1",
            "--output-dir",
            str(tmp_path),
            "--samples-dir",
            str(lung1.image.parent),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["prompt"]["prompts"][0]["slice"] == 33
    assert out["dice"] >= 0.7, out  # oracle (label box on every slice) is ~0.82 with this model
    mask = read_mask(out["files"]["mask"], reference=read_volume(lung1.image))
    assert mask.array.sum() > 0
    png = Image.open(out["files"]["montage"])
    assert png.mode == "RGB" and png.width > 3 * png.height  # one row of >= 3 tiles
