"""Small cross-cutting guarantees: device choice, CLI error reporting, lock time-outs, model overwrite."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from semisam.cli import main
from semisam.device import resolve_device
from semisam.scan.volume import Volume, write_volume
from semisam.store._fs import StoreLock


def test_auto_device_and_unavailable_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cli_reports_bad_device_in_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(
        [
            "model",
            "init",
            "--arch",
            "mamba_unet",
            "--labels",
            "lesion",
            "--modality",
            "CT",
            "--output",
            str(tmp_path / "m"),
        ]
    )
    assert code == 0
    write_volume(Volume(np.zeros((4, 16, 16), np.int16)), tmp_path / "scan.nrrd")
    code = main(
        [
            "segment",
            str(tmp_path / "scan.nrrd"),
            "--model",
            str(tmp_path / "m"),
            "--output",
            str(tmp_path / "o.nii.gz"),
            "--device",
            "cuda",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "CUDA is not available" in err


def test_store_lock_timeout_applies_to_threads_of_one_process(tmp_path):
    lock = StoreLock(tmp_path / ".lock", timeout_s=0.2)
    assert lock.acquire()
    got = []
    t = threading.Thread(target=lambda: got.append(lock.acquire()))
    t.start()
    t.join(5)
    assert got == [False]
    lock.release()


def test_save_model_overwrite_replaces_and_leaves_no_leftovers(tmp_path):
    from semisam import model_folder
    from semisam.specialists import build_specialist

    first = model_folder.new_manifest("mamba_unet", ["lesion"], "CT")
    model = build_specialist(first.arch, **first.kwargs)
    dest = tmp_path / "model"
    a = model_folder.save_model(dest, model, first)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    b = model_folder.save_model(dest, model, first, overwrite=True)
    assert a.sha256 != b.sha256 and model_folder.verify_model_dir(dest).sha256 == b.sha256
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
