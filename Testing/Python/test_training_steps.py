"""The training job's named steps one by one (semisam.training.steps), on real stores."""

from __future__ import annotations

import threading

import pytest
import torch
from training_synth import FAST, make_store, one_thread, synthetic_case  # noqa: F401

from semisam import model_folder
from semisam.store import LabeledStore
from semisam.training import TrainConfig, runstate, steps, train
from semisam.training.errors import TrainError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plan_cases_takes_the_oldest_training_cases_and_a_new_model_without_an_active_version(tmp_path):
    store = make_store(tmp_path / "store", n_train=3, n_val=1)
    plan = steps.plan_cases(store, TrainConfig(max_cases=2, **FAST), None)
    assert plan.train_ids == store.train_ids()[:2] and plan.parent is None
    assert plan.val_ids == store.validation_ids()
    assert plan.manifest.arch == "mamba_unet" and plan.manifest.labels == {"lesion": 1}


def test_plan_cases_refuses_a_store_without_training_cases(tmp_path):
    store = make_store(tmp_path / "store", n_train=0, n_val=1)
    with pytest.raises(TrainError) as info:
        steps.plan_cases(store, TrainConfig(), None)
    assert info.value.kind == "no_training_cases"


def test_build_student_warm_starts_from_the_active_version(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=0)
    assert train(store.root, TrainConfig(iterations=1, device="cpu", **FAST)).promoted
    store = LabeledStore(store.root)
    plan = steps.plan_cases(store, TrainConfig(**FAST), None)
    assert plan.parent == "v0001"
    student = steps.build_student(plan, store, torch.device("cpu"))
    parent, _ = model_folder.load_model(store.models.get("v0001").path)
    a, b = student.state_dict(), parent.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_settle_config_on_resume_is_the_checkpoints_and_the_plan_its_cases(tmp_path):
    store = make_store(tmp_path / "store", n_train=2, n_val=0)
    stop = threading.Event()

    def on_event(ev):
        if ev["event"] == "iteration" and ev["iteration"] >= 1:
            stop.set()

    cfg = TrainConfig(iterations=30, device="cpu", checkpoint_every=1, seed=7, **FAST)
    assert train(store.root, cfg, events=on_event, cancel=stop).status == "cancelled"
    store.add_case(*synthetic_case(99), split="train")  # a case accepted meanwhile
    run = store.root / "training" / "run"
    config, ckpt = steps.settle_config(run, TrainConfig(), resume=True)
    assert config.seed == 7 and config.iterations == 30 and ckpt.iteration >= 1
    plan = steps.plan_cases(LabeledStore(store.root), config, ckpt)
    assert len(plan.train_ids) == 2  # the checkpoint's cases, not the store's three
    assert runstate.latest(run) == ckpt.path


def test_iterations_follow_the_labeled_set_within_their_bounds():
    cfg = TrainConfig(iterations_per_case=500, min_iterations=1000, max_iterations=20000)
    assert [cfg.resolved(n).iterations for n in (1, 2, 4, 12, 100)] == [1000, 1000, 2000, 6000, 20000]
    assert TrainConfig(iterations=7).resolved(12).iterations == 7  # given: kept
    with pytest.raises(TrainError, match="min_iterations 5 exceeds max_iterations 4"):
        TrainConfig.from_dict({"min_iterations": 5, "max_iterations": 4})


def test_plan_cases_resolves_iterations_for_its_training_cases(tmp_path):
    store = make_store(tmp_path / "store", n_train=3, n_val=0)
    plan = steps.plan_cases(store, TrainConfig(iterations_per_case=10, min_iterations=1, **FAST), None)
    assert plan.config.iterations == 30


def test_a_time_budget_plans_fewer_iterations_and_the_run_ends_done(tmp_path):
    store = make_store(tmp_path / "store", n_train=1, n_val=1)
    events = []
    # 4 seconds for a run that would take hours: the trainer measures its speed after the warm-up and
    # plans what fits; the run is then an ordinary finished run (validated, registered, promoted).
    cfg = TrainConfig(
        iterations=1_000_000,
        max_minutes=4 / 60,
        device="cpu",
        warmup=2,
        log_every=10,
        **{k: v for k, v in FAST.items() if k != "warmup"},
    )
    result = train(store.root, cfg, events=events.append)
    assert result.status == "done", result.message
    budget = [e for e in events if e["event"] == "budget"]
    assert budget and budget[0]["planned"] == 1_000_000 and budget[-1]["iterations"] == result.iterations
    assert cfg.warmup < result.iterations < 1_000_000  # how many fit in 4 s depends on the load
    last = [e for e in events if e["event"] == "iteration"][-1]
    assert last["iteration"] == last["iterations"] == result.iterations
    training = model_folder.read_manifest(LabeledStore(store.root).models.get(result.version).path).training
    assert (
        training["iterations"] == result.iterations and training["config"]["iterations"] == result.iterations
    )
    # The learning rate's cosine decay ended at the new plan: the last step ran at the lowest rate.
    assert last["lr"] == pytest.approx(cfg.lr * cfg.min_lr_ratio, rel=0.2)


def test_the_budget_plan_follows_the_measured_speed_both_ways():
    from types import SimpleNamespace

    from semisam.training.trainer import Trainer

    events = []
    t = SimpleNamespace(
        cfg=SimpleNamespace(max_minutes=1.0, warmup=0, iterations=1000),
        total=1000,
        wall=0.0,
        _budget_ref=None,
        ctx=SimpleNamespace(emit=events.append),
    )
    Trainer.fit_budget(t, 0)  # the reference point (after the warm-up)
    t.wall = 30.0
    Trainer.fit_budget(t, 100)  # 0.3 s per iteration, 30 s left: 100 more fit
    assert t.total == 200 and events[-1]["planned"] == 1000 and events[-1]["iterations"] == 200
    t.wall = 31.0
    Trainer.fit_budget(t, 150)  # the machine got faster: 0.207 s per iteration, 29 s left
    assert t.total == 290 and events[-1]["planned"] == 200
    t.wall = 31.5
    Trainer.fit_budget(t, 280)  # faster still: 0.1125 s per iteration, 28.5 s left
    assert t.total == 533
    t.cfg.iterations = 400
    t.wall = 31.6
    Trainer.fit_budget(t, 285)  # never more than the configured iterations
    assert t.total == 400
    n = len(events)
    t.wall = 31.7
    Trainer.fit_budget(t, 286)  # a plan within 2 % of the current one: no change, no event
    assert len(events) == n and t.total == 400
