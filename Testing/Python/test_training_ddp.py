"""Data-parallel training for real: two processes on gloo (``torch.distributed.run``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from training_synth import child_env, make_store

HERE = Path(__file__).resolve().parent


def _torchrun(*args, timeout=240):
    """``torch.distributed.run --standalone --nproc_per_node=2 ARGS``; the whole group is killed on timeout."""
    env = child_env()
    env["PYTHONPATH"] = f"{HERE}{os.pathsep}{env['PYTHONPATH']}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *map(str, args),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        out, err = proc.communicate()
        raise AssertionError(f"torchrun timed out: {err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow  # ~30 s here (two processes importing torch + MONAI); `pytest -m slow`
def test_two_gloo_ranks_keep_identical_weights(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=0, n_unlabeled=2)
    out = tmp_path / "out"
    out.mkdir()
    r = _torchrun(HERE / "ddp_worker.py", store.root, out)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1))
    assert a["world_size"] == b["world_size"] == 2 and a["backend"] == "gloo"
    # Each rank saw its own batches (different losses) yet the weights stayed identical: gradients were
    # averaged (BatchNorm statistics averaged at the end); the EMA teachers follow identical students.
    assert a["losses"] != b["losses"]
    assert a["student"] == b["student"] and a["buffers"] == b["buffers"] and a["teacher"] == b["teacher"]


@pytest.mark.slow  # two processes importing torch and MONAI, then validation: ~30 s here; `pytest -m slow`
def test_torchrun_semisam_train_registers_once(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"crop_size": [48, 48], "batch_size": 2, "device": "cpu", "iterations": 4}))
    r = _torchrun("-m", "semisam", "train", store.root, "--config", cfg, "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("start") == 1  # only rank 0 writes events
    assert events[-1]["event"] == "done" and events[-1]["version"] == "v0001"
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2
    assert [v.version for v in store.models.versions()] == ["v0001"]
