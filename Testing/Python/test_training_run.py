"""``semisam train`` end to end on tiny synthetic stores: learning, events, registry, refusals, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from training_synth import FAST, child_env, make_store, one_thread, synthetic_case  # noqa: F401

from semisam.inference import segment
from semisam.metrics import dice
from semisam.model_folder import load_model
from semisam.store import LabeledStore
from semisam.training import TrainConfig, train
from semisam.training.events import read_events
from semisam.training.lock import TrainLock

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "semisam", *map(str, args)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
    )


def _config_file(tmp_path, **extra):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**FAST, "device": "cpu", **extra}))
    return path


def _held_out_dice(model, manifest, seeds=(900, 901, 902)) -> float:
    out = []
    for s in seeds:
        vol, mask = synthetic_case(s)
        out.append(dice(segment(vol, model, manifest, "cpu").labels, mask))
    return float(np.mean(out))


def test_cli_supervised_learns_registers_and_segments(tmp_path, capsys):
    store = make_store(tmp_path / "store")
    events = tmp_path / "events.jsonl"
    r = _cli(
        "train",
        store.root,
        "--iterations",
        40,
        "--config",
        _config_file(tmp_path),
        "--events",
        events,
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    stdout = [json.loads(line) for line in r.stdout.splitlines()]
    logged = read_events(events)
    assert [e["event"] for e in stdout] == [e["event"] for e in logged]
    assert logged[-1]["event"] == "done" and [e["event"] for e in logged[:2]] == ["process", "phase"]
    # The first event names the interpreter that ran the job (pid and start time from the process table).
    assert logged[0]["pid"] > 0 and logged[0]["start"]
    kinds = {e["event"] for e in logged}
    assert {"start", "iteration", "validation", "checkpoint", "done"} <= kinds
    assert all("time" in e and "elapsed_s" in e for e in logged)
    done = logged[-1]
    assert done["version"] == "v0001" and done["promoted"] and "no active version" in done["promotion"]
    assert done["validation"]["cases"] == store.validation_ids()
    # The registry has it, active; its manifest records how it was trained.
    v = store.models.active()
    assert v.version == "v0001" and v.metrics["dice"] == pytest.approx(done["validation"]["dice"])
    model, man = load_model(v.path)
    assert man.training["method"] == "supervised" and man.training["iterations"] == 40
    assert man.training["case_ids"]["train"] == store.train_ids()
    assert len(man.training["losses"]) == 40 and man.metrics["dice"] == pytest.approx(v.metrics["dice"])
    # It learned: clearly better than the same untrained network on cases it never saw.
    torch.manual_seed(0)
    from semisam.specialists import build_specialist

    untrained = build_specialist(man.arch, **man.kwargs)
    trained_dice, untrained_dice = _held_out_dice(model, man), _held_out_dice(untrained, man)
    assert trained_dice > untrained_dice + 0.3, (trained_dice, untrained_dice)
    # `semisam store list` shows it; `semisam segment --model <version folder>` runs.
    # (in-process through the real CLI entry point: a child process would add ~10 s of imports here)
    from semisam.cli import main
    from semisam.scan.volume import write_volume

    assert main(["store", "list", str(store.root)]) == 0
    assert "*v0001" in capsys.readouterr().out
    vol, _ = synthetic_case(900)
    write_volume(vol, tmp_path / "scan.nii.gz")
    args = ["segment", str(tmp_path / "scan.nii.gz"), "--model", done["model_dir"], "--output"]
    assert main([*args, str(tmp_path / "m.nii.gz"), "--device", "cpu", "--no-progress"]) == 0
    assert (tmp_path / "m.nii.gz").is_file()
    assert not list((store.root / "training" / "run").glob("ckpt-*")), "a finished run keeps no checkpoints"


def test_second_run_warm_starts_and_promotion_rules(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=0)
    cfg = TrainConfig(iterations=3, device="cpu", **FAST)
    first = train(store.root, cfg)
    assert first.status == "done" and first.promoted
    assert first.validation == {"dice": None, "per_case": {}, "cases": []}
    # Same cases, empty validation split: not promoted (training cases do not strictly grow).
    second = train(store.root, cfg)
    assert second.version == "v0002" and not second.promoted and "strictly include" in second.promotion
    assert store.models.active().version == "v0001"
    assert load_model(second.model_dir)[1].parent == "v0001"
    # One more training case: promoted by the empty-split rule.
    vol, mask = synthetic_case(77)
    store.add_case(vol, mask, split="train")
    third = train(store.root, cfg)
    assert (
        third.promoted and "strictly include" in third.promotion and store.models.active().version == "v0003"
    )
    # --no-promote registers only.
    store.add_case(*synthetic_case(78), split="validation")
    fourth = train(store.root, cfg, promote=False)
    assert fourth.version == "v0004" and not fourth.promoted and store.models.active().version == "v0003"


def test_validation_rule_compares_on_the_same_cases(tmp_path):
    from semisam.model_folder import new_manifest, save_model
    from semisam.specialists import build_specialist
    from semisam.training.promote import decide_and_promote

    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    val = store.validation_ids()
    man = new_manifest("mamba_unet", ["lesion"], "CT")
    for i in range(3):
        save_model(tmp_path / f"m{i}", build_specialist("mamba_unet", n_classes=2), man)
    active = store.models.add(tmp_path / "m0", metrics={"dice": 0.8}, evaluated_on=val)
    store.models.promote(active.version, require_better=False)
    calls = []

    def evaluate_active(v):
        calls.append(v.version)
        return {"dice": 0.7, "per_case": {val[0]: 0.7}, "cases": val}

    # The active version is scored case by case on the same cases (a recorded mean cannot be paired).
    worse = store.models.add(tmp_path / "m1", metrics={"dice": 0.5}, evaluated_on=val)
    ok, why = decide_and_promote(
        store, worse.version, {"dice": 0.5, "per_case": {val[0]: 0.5}, "cases": val}, [], evaluate_active
    )
    assert not ok and "weak decision, 1 validation case(s)" in why
    assert store.models.active().version == active.version and calls == [active.version]
    assert store.models.get(active.version).metrics["dice"] == 0.7  # recorded on the current split
    better = store.models.add(tmp_path / "m2", metrics={"dice": 0.75}, evaluated_on=val)
    ok, why = decide_and_promote(
        store, better.version, {"dice": 0.75, "per_case": {val[0]: 0.75}, "cases": val}, [], evaluate_active
    )
    assert ok and "better on every case" in why and store.models.active().version == better.version


def test_empty_store_is_an_error_event(tmp_path):
    store = LabeledStore.create(tmp_path / "empty", {1: "lesion"}, modality="CT")
    events = tmp_path / "ev.jsonl"
    r = _cli("train", store.root, "--iterations", 2, "--events", events, "--device", "cpu")
    assert r.returncode == 1
    last = read_events(events)[-1]
    assert last["event"] == "error" and last["kind"] == "no_training_cases"
    assert json.loads(r.stdout.splitlines()[-1]) == last
    assert store.models.versions() == []


def test_nan_loss_is_an_error_and_registry_unchanged(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    seen = []
    res = train(
        store.root, TrainConfig(iterations=5, device="cpu", inject_nan_at=2, **FAST), events=seen.append
    )
    assert res.status == "error" and res.exit_code == 1 and res.error_kind == "nan_loss"
    assert (
        seen[-1]["event"] == "error"
        and seen[-1]["kind"] == "nan_loss"
        and "iteration 3" in seen[-1]["message"]
    )
    assert [e["event"] for e in seen].count("error") == 1
    assert store.models.versions() == [] and store.models.active() is None


def test_corrupt_case_is_an_error(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=0)
    cid = store.train_ids()[1]
    store.image_path(cid).write_bytes(b"not a nifti at all")
    res = train(store.root, TrainConfig(iterations=2, device="cpu", **FAST))
    assert res.error_kind == "corrupt_case" and cid in res.message


def test_second_trainer_is_refused_and_stale_lock_taken_over(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    lock_path = store.root / "training" / "train.lock"
    held = TrainLock(lock_path)
    held.acquire()  # a running trainer (this process)
    try:
        r = _cli("train", store.root, "--iterations", 1, "--device", "cpu")
        assert r.returncode == 1
        last = json.loads(r.stdout.splitlines()[-1])
        assert last["event"] == "error" and last["kind"] == "locked" and "pid" in last["message"]
    finally:
        held.release()
    # A lock file left by a dead process (its pid written, no OS lock held) is taken over.
    lock_path.write_text(json.dumps({"pid": 999999, "host": "gone", "started": "2020-01-01T00:00:00Z"}))
    res = train(store.root, TrainConfig(iterations=1, device="cpu", **FAST))
    assert res.status == "done"


def test_bad_config_is_an_error_event(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    r = _cli("train", store.root, "--config", _config_file(tmp_path, itertions=3))
    assert r.returncode == 1
    last = json.loads(r.stdout.splitlines()[-1])
    assert last["kind"] == "bad_config" and "itertions" in last["message"]
    r = _cli("train", store.root, "--method", "supervised+bogus")
    assert json.loads(r.stdout.splitlines()[-1])["kind"] == "bad_config"


def test_unet3d_and_mean_teacher_run(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=1, n_unlabeled=2)
    seen = []
    res = train(
        store.root,
        TrainConfig(
            method="mean_teacher",
            arch="unet3d",
            iterations=2,
            device="cpu",
            model_kwargs={"channels": [4, 8, 16, 32, 32]},
            parts={"mean_teacher": {"uncertainty": True, "passes": 2}},
            **FAST,
        ),
        events=seen.append,
    )
    assert res.status == "done", res.message
    start = next(e for e in seen if e["event"] == "start")
    assert start["unlabeled_cases"] == 2 and start["method"] == "supervised+mean_teacher"
    it = [e for e in seen if e["event"] == "iteration"][-1]
    assert set(it["losses"]) == {"dice", "ce", "consistency", "total"}
    assert load_model(res.model_dir)[1].arch == "unet3d"


def test_unet2d_trains_registers_and_segments(tmp_path):
    """The 2D U-Net goes through the same trainer, registry and Auto-segment as mamba_unet."""
    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    res = train(store.root, TrainConfig(arch="unet2d", iterations=3, device="cpu", **FAST))
    assert res.status == "done", res.message
    model, man = load_model(res.model_dir)
    assert man.arch == "unet2d" and model.input_kind == "2.5d"
    vol, _ = synthetic_case(900)
    assert segment(vol, model, man, "cpu").labels.shape == vol.shape


def test_bad_store_and_device_are_error_results(tmp_path):
    res = train(tmp_path / "nowhere", TrainConfig(iterations=1, device="cpu"))
    assert res.status == "error" and res.error_kind == "bad_config" and "not a SemiSAM store" in res.message
    if not torch.cuda.is_available():
        store = make_store(tmp_path / "store", n_train=1, n_val=0)
        seen = []
        res = train(store.root, TrainConfig(iterations=1, device="cuda", **FAST), events=seen.append)
        assert res.error_kind == "bad_config" and "CUDA is not available" in res.message
        assert [e["event"] for e in seen] == ["error"]
        assert not (store.root / "training" / "train.lock").read_text()  # released and emptied


def test_error_kinds_of_unexpected_failures():
    from semisam.training.job import _classify

    kind, msg = _classify(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert kind == "cuda_oom" and "--batch-size" in msg
    assert _classify(KeyError("x"))[0] == "internal"


def test_bad_part_option_and_missing_part_module_are_bad_config(tmp_path, monkeypatch):
    from semisam.training.methods import METHOD_PARTS

    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    res = train(
        store.root,
        TrainConfig(
            method="mean_teacher", iterations=1, device="cpu", parts={"mean_teacher": {"decay": 0.9}}, **FAST
        ),
    )
    assert res.error_kind == "bad_config" and "decay" in res.message
    monkeypatch.setitem(METHOD_PARTS, "mean_teacher", "semisam.training.methods.not_built_here:build")
    res = train(store.root, TrainConfig(method="mean_teacher", iterations=1, device="cpu", **FAST))
    assert res.error_kind == "bad_config" and "not installed" in res.message
    assert store.models.versions() == []


def test_versions_are_compared_on_blind_validation_cases_when_there_are_any(tmp_path):
    """A mask corrected from a version's proposal favours that version: such cases leave the comparison."""
    from semisam.store import Provenance
    from semisam.training.promote import comparison_case_ids

    store = make_store(tmp_path / "store", n_train=2, n_val=0)
    proposed = [
        store.add_case(*synthetic_case(60 + i), Provenance(model_version="v0001"), split="validation").case_id
        for i in range(2)
    ]
    assert comparison_case_ids(store) == proposed  # none blind: all of them (and a warning)
    blind = store.add_case(*synthetic_case(70), Provenance(), split="validation").case_id
    assert comparison_case_ids(store) == [blind]
    result = train(store.root, TrainConfig(iterations=2, device="cpu", **FAST))
    assert result.validation["cases"] == [blind] and list(result.validation["per_case"]) == [blind]
    assert store.models.get(result.version).evaluated_on == [blind]


def _train_then_adapt(tmp_path, adapt_minutes: float):
    """``(store, events)`` of ``semisam train --adapt-generalist`` (2 iterations) on a 2 + 1 case store;
    the run must exit 0 whatever the adaptation does."""
    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    events = tmp_path / "events.jsonl"
    args = ["--iterations", 2, "--config", _config_file(tmp_path), "--events", events, "--no-progress"]
    args += ["--adapt-generalist", "--adapt-max-minutes", adapt_minutes]
    r = _cli("train", store.root, *args, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return store, read_events(events)


@pytest.mark.slow  # real LiteMedSAM encodes ~40 slices: ~60 s on one thread; `-m slow`
def test_cli_adapt_generalist_phase_follows_the_run_and_registers_a_generalist_version(tmp_path):
    """``--adapt-generalist``: after ``done``, the same process adapts the real LiteMedSAM on the store's
    cases; its events follow as ``generalist`` events ending in ``done`` with a registered version."""
    from semisam.adapt.versions import GeneralistRegistry

    store, logged = _train_then_adapt(tmp_path, 0.05)
    kinds = [e["event"] for e in logged]
    done_at = kinds.index("done")
    after = logged[done_at + 1 :]
    assert after and {e["event"] for e in after} == {"generalist"}, kinds
    assert [e["kind"] for e in after][0] == "start" and after[-1]["kind"] == "done", after[-1]
    assert set(after[-1]["validation"]) >= {"frozen", "adapted"}
    versions = GeneralistRegistry(LabeledStore(store.root)).versions()
    assert [v.version for v in versions] == [after[-1]["version"]] == ["v0001"]
    assert LabeledStore(store.root).models.active().version == logged[done_at]["version"]


def test_cli_adapt_generalist_with_a_bad_budget_reports_and_keeps_the_specialist(tmp_path):
    """A bad adaptation budget ends the phase with one ``generalist`` error; the specialist's run is done
    and registered, and the exit status is the run's."""
    store, logged = _train_then_adapt(tmp_path, -1)
    assert [e["event"] for e in logged][-2:] == ["done", "generalist"]
    last = logged[-1]
    assert last["kind"] == "error" and last["code"] == "bad_config" and "max_minutes" in last["message"]
    assert LabeledStore(store.root).models.active().version == "v0001"
