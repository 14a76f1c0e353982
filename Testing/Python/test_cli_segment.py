"""`semisam model init` / `verify` (in process) and `semisam segment` (a real child process)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from semisam.scan.volume import Volume, read_mask, read_volume, write_volume


def _cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "semisam", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"semisam {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import contextlib
    import io

    from semisam.cli import main

    d = tmp_path_factory.mktemp("models") / "lesion_ct"
    # In process: each child process costs seconds of torch/MONAI imports (tens under load); the
    # segment test below is the real child process.
    args = ["model", "init", "--arch", "mamba_unet", "--labels", "lesion", "--modality", "CT"]
    args += [
        "--output",
        str(d),
        "--target-spacing",
        "2",
        "2",
        "3",
        "--kwargs",
        '{"channels": [8, 16, 16, 32, 32]}',
    ]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(args) == 0
    info = json.loads(buf.getvalue())
    assert info["arch"] == "mamba_unet" and info["labels"] == {"lesion": 1} and info["parameters"] > 0
    return d


def test_init_writes_a_verifiable_model(model_dir):
    # In process (a child process costs ~10 s of imports on the shared CPU); the CLI path is the same.
    from semisam.cli import main

    assert main(["model", "verify", str(model_dir)]) == 0
    man = json.loads((model_dir / "manifest.json").read_text())
    assert man["modality"] == "CT" and man["preprocessing"]["target_spacing"] == [2.0, 2.0, 3.0]
    assert man["training"] == {} and man["parent"] is None and len(man["sha256"]) == 64
    assert main(["model", "init", "--labels", "lesion", "--modality", "CT", "--output", str(model_dir)]) == 1


def test_segment_writes_mask_and_uncertainty_on_the_input_grid(model_dir, tmp_path):
    a = np.full((12, 40, 36), -800, dtype=np.int16)
    a[4:8, 10:30, 8:20] = 60
    direction = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], dtype=float)
    img = tmp_path / "scan.nii.gz"
    write_volume(Volume(a, spacing=(0.8, 0.9, 3.5), origin=(10.0, -20.0, 30.0), direction=direction), img)
    mask, unc = tmp_path / "mask.nii.gz", tmp_path / "unc.nrrd"
    proc = _cli(
        "segment", img, "--model", model_dir, "--output", mask, "--uncertainty", unc, "--device", "cpu"
    )
    summary = json.loads(proc.stdout)
    assert "segment" in proc.stderr and "100%" in proc.stderr  # the progress bar went to stderr
    vol = read_volume(img)
    m = read_mask(mask, reference=vol)  # raises unless it is exactly on the image's grid
    assert m.array.shape == a.shape
    u = read_volume(unc)
    assert vol.same_grid(u) and u.array.dtype == np.float32 and 0 <= u.array.min() <= u.array.max() <= 1
    assert len(summary["review_slices_k"]) == 5 and summary["seconds"]["total"] > 0
    assert summary["model"]["sha256"] == json.loads((model_dir / "manifest.json").read_text())["sha256"]


def test_segment_errors_are_one_clear_line(model_dir, tmp_path, capsys):
    from semisam.cli import main

    out = tmp_path / "o.nii.gz"
    assert (
        main(["segment", str(tmp_path / "missing.nii.gz"), "--model", str(model_dir), "--output", str(out)])
        == 1
    )
    err = capsys.readouterr().err
    assert "missing.nii.gz" in err and "no such file" in err and "Traceback" not in err
    assert (
        main(
            [
                "segment",
                str(tmp_path / "x.nii.gz"),
                "--model",
                str(tmp_path / "nomodel"),
                "--output",
                str(out),
            ]
        )
        == 1
    )
    assert "model directory does not exist" in capsys.readouterr().err
    assert not out.exists()
