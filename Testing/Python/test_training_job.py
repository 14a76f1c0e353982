"""The training job survives real life: SIGKILL + ``--resume``, SIGTERM = cancel, exact resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from training_synth import FAST, child_env, make_store, one_thread  # noqa: F401

from semisam.store import LabeledStore
from semisam.training import TrainConfig, runstate, train
from semisam.training.events import read_events

pytestmark = pytest.mark.usefixtures("one_thread")


def _start(store, events, *extra, config):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "semisam",
            "train",
            str(store.root),
            "--config",
            str(config),
            "--events",
            str(events),
            "--no-progress",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def _wait_for(events, predicate, proc, timeout=180):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if events.is_file():
            for e in read_events(events) if events.stat().st_size else []:
                if predicate(e):
                    return e
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for an event")


def _weights(model_dir):
    return load_file(str(model_dir / "weights.safetensors"))


@pytest.mark.slow  # ~25 s on an idle 2-core machine (two child processes); `pytest -m slow`
def test_kill9_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    cfg = {**FAST, "device": "cpu", "iterations": 40, "checkpoint_every": 5}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    store = make_store(tmp_path / "killed", n_train=2, n_val=1)
    events = tmp_path / "events.jsonl"
    proc = _start(store, events, config=tmp_path / "cfg.json")
    try:
        _wait_for(events, lambda e: e["event"] == "checkpoint" and e["iteration"] >= 5, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    run_dir = store.root / "training" / "run"
    ckpt = runstate.latest(run_dir)
    assert ckpt is not None
    killed_at = runstate.load(ckpt).iteration
    assert 5 <= killed_at < 40
    # Killed: nothing registered, the store is healthy, the lock is free.
    s = LabeledStore(store.root)
    assert s.models.versions() == [] and s.check() == []
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "semisam",
            "train",
            str(store.root),
            "--resume",
            "--events",
            str(events),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    evs = read_events(events)
    starts = [e for e in evs if e["event"] == "start"]
    assert starts[-1]["resumed_from"] == killed_at
    assert evs[-1]["event"] == "done" and evs[-1]["version"] == "v0001"
    assert [v.version for v in s.models.versions()] == ["v0001"] and s.models.active().version == "v0001"
    assert s.check() == []
    # The same run without the kill (same seed, same config) ends with the same weights.
    ref_store = make_store(tmp_path / "reference", n_train=2, n_val=1)
    ref = train(ref_store.root, TrainConfig(**cfg))
    a, b = _weights(s.models.active().path), _weights(ref_store.models.active().path)
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst
    assert abs(evs[-1]["validation"]["dice"] - ref.validation["dice"]) < 1e-4


def test_sigterm_cancels_checkpoints_and_keeps_the_active_version(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=0)
    first = train(store.root, TrainConfig(iterations=2, device="cpu", **FAST))
    assert first.promoted
    (tmp_path / "cfg.json").write_text(json.dumps({**FAST, "device": "cpu", "iterations": 500}))
    events = tmp_path / "events.jsonl"
    proc = _start(store, events, config=tmp_path / "cfg.json")
    try:
        _wait_for(events, lambda e: e["event"] == "iteration" and e["iteration"] >= 2, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 3
    last = read_events(events)[-1]
    assert last["event"] == "cancelled" and 2 <= last["iteration"] < 500
    assert (
        os.path.isdir(last["checkpoint"])
        and runstate.load(runstate.latest(store.root / "training" / "run")).iteration == last["iteration"]
    )
    s = LabeledStore(store.root)
    assert [v.version for v in s.models.versions()] == ["v0001"] and s.models.active().version == "v0001"
    # The cancelled run resumes from its checkpoint (in-process; a short remaining budget is not
    # possible since the checkpoint's config is used, so cancel again at once and check it stops).
    import threading

    stop = threading.Event()
    stop.set()
    again = train(store.root, TrainConfig(), resume=True, cancel=stop)
    assert again.status == "cancelled" and again.exit_code == 3 and again.iterations == last["iteration"]
    assert [v.version for v in s.models.versions()] == ["v0001"]


def test_checkpoint_state_loads_with_weights_only(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    import threading

    stop = threading.Event()
    seen = []

    def cb(e):
        seen.append(e)
        if e["event"] == "iteration" and e["iteration"] == 3:
            stop.set()

    res = train(
        store.root,
        TrainConfig(method="mean_teacher", iterations=50, device="cpu", **FAST),
        events=cb,
        cancel=stop,
    )
    assert res.status == "cancelled" and res.iterations == 3
    path = runstate.latest(store.root / "training" / "run")
    state = torch.load(path / runstate.STATE, weights_only=True)
    assert {"optimizer", "scheduler", "parts", "rng"} <= set(state)
    assert "teacher" in state["parts"]["mean_teacher"]
    assert seen[-1]["event"] == "cancelled" and seen[-2]["event"] == "checkpoint"


def test_cancelled_and_resumed_run_equals_uninterrupted(tmp_path):
    """Resume is exact: the same batches, augmentation, optimiser and schedule state."""
    import threading

    cfg = TrainConfig(iterations=12, checkpoint_every=4, device="cpu", **FAST)
    ref_store = make_store(tmp_path / "ref", n_train=2, n_val=0)
    ref = train(ref_store.root, cfg)
    store = make_store(tmp_path / "cut", n_train=2, n_val=0)
    stop = threading.Event()

    def cb(e):
        if e["event"] == "iteration" and e["iteration"] == 5:
            stop.set()

    cut = train(store.root, cfg, events=cb, cancel=stop)
    assert cut.status == "cancelled" and cut.iterations == 5
    resumed = train(store.root, cfg, resume=True)
    assert resumed.status == "done" and resumed.iterations == 12
    a, b = _weights(store.models.active().path), _weights(ref_store.models.active().path)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6
    assert [x["total"] for x in resumed.losses] == pytest.approx([x["total"] for x in ref.losses], abs=1e-6)
