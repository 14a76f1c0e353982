"""``semisam simulate``'s arguments become a SimulationConfig; bad values fail with one clear message."""

from __future__ import annotations

import json

import pytest

from semisam.cli import build_parser
from semisam.cli.simulate import config_from_args


def test_simulate_arguments_make_the_config(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"batch_size": 2}), encoding="utf-8")
    args = build_parser().parse_args(
        [
            "simulate",
            "DS",
            "--work",
            "W",
            "--retrain-every",
            "3",
            "--iterations",
            "7",
            "--baseline",
            "--budget",
            "5",
            "--target",
            "0.8",
            "--train-config",
            str(tmp_path / "t.json"),
            "--box-s",
            "6",
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.retrain_every, cfg.iterations, cfg.baseline) == (3, 7, True)
    assert (cfg.annotator.budget, cfg.annotator.target_fraction) == (5, 0.8) and cfg.target_dice is None
    assert cfg.train_options == {"batch_size": 2} and cfg.time_model.box_s == 6
    assert cfg.time_model.point_s == 2 and cfg.generalist == "litemedsam" and cfg.device == "cpu"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "1.5"], "--target"),
        (["--retrain-every", "-1"], "--retrain-every"),
        (["--target-dice", "0"], "--target-dice"),
        (["--target-dice", "0.8", "--target", "0.9"], "not both"),
        (["--train-config", "/no/such.json"], "--train-config"),
        (["--held-out", "-1"], "--held-out"),
        (["--touch-up-min", "0"], "--touch-up-min"),
        (["--touch-up-min", "1.5"], "--touch-up-min"),
        (["--iterations", "0"], "--iterations"),
    ],
)
def test_bad_simulate_arguments_are_named(extra, message):
    args = build_parser().parse_args(["simulate", "DS", "--work", "W", *extra])
    with pytest.raises(ValueError, match=message):
        config_from_args(args)


def test_the_default_target_is_an_absolute_dice_against_the_truth():
    from semisam.cli.simulate import DEFAULT_TARGET_DICE

    cfg = config_from_args(build_parser().parse_args(["simulate", "DS", "--work", "W"]))
    assert cfg.target_dice == DEFAULT_TARGET_DICE == 0.85
    cfg = config_from_args(
        build_parser().parse_args(["simulate", "DS", "--work", "W", "--target-dice", "0.9"])
    )
    assert cfg.target_dice == 0.9


def test_by_default_a_retrain_runs_what_the_products_retrain_runs():
    """No ``--iterations``: the trainer's plan that follows the labeled set (not a fixed count), with a
    warm-up of a tenth of the planned iterations; the hand-fix price floor and held-out cases are set."""
    args = build_parser().parse_args(
        ["simulate", "DS", "--work", "W", "--held-out", "4", "--touch-up-min", "0.5"]
    )
    cfg = config_from_args(args)
    assert cfg.iterations is None and cfg.held_out == 4 and cfg.time_model.touch_up_min == 0.5
    assert cfg.annotator.islands and cfg.time_model.island_s == 2.0  # stray pieces: one Islands click
    off = build_parser().parse_args(["simulate", "DS", "--work", "W", "--no-islands", "--island-s", "3"])
    assert not config_from_args(off).annotator.islands and config_from_args(off).time_model.island_s == 3.0
    from semisam.loop import Simulation

    sim = Simulation.__new__(Simulation)  # train_config reads only the config
    sim.config = cfg
    four, twelve = sim.train_config(4), sim.train_config(12)
    assert four.iterations is None and twelve.iterations is None  # the trainer resolves them
    assert (four.warmup, twelve.warmup) == (200, 200)  # a tenth of 2,000; 6,000 planned: the cap
