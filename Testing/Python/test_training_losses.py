"""Loss functions and the method registry of the training engine."""

from __future__ import annotations

import pytest
import torch

from semisam.training import losses
from semisam.training.methods import METHOD_PARTS, MethodError, build_fn, parse_method


def _logits_target(shape=(2, 2, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, requires_grad=True)
    target = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    target[:, 4:10, 5:12] = 1
    return logits, target


def test_dice_perfect_and_worst():
    _, target = _logits_target()
    perfect = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 40 - 20
    assert losses.dice_loss(perfect, target).item() < 1e-3
    assert losses.dice_loss(-perfect, target).item() > 0.99


@pytest.mark.parametrize(
    "fn",
    [
        lambda lg, t, w: losses.dice_loss(lg, t),
        lambda lg, t, w: losses.ce_loss(lg, t),
        lambda lg, t, w: losses.dice_ce_loss(lg, t),
        lambda lg, t, w: losses.confidence_weighted_loss(lg, t, w),
        lambda lg, t, w: losses.consistency_mse(lg, torch.randn_like(lg), w),
    ],
    ids=["dice", "ce", "dice_ce", "confidence", "consistency"],
)
def test_every_loss_sends_gradient(fn):
    logits, target = _logits_target()
    w = torch.rand(target.shape)
    loss = fn(logits, target, w)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_confidence_zero_weight_pixels_carry_no_gradient():
    logits, target = _logits_target()
    w = torch.ones(target.shape)
    w[0] = 0.0  # the whole first sample is untrusted
    losses.confidence_weighted_loss(logits, target, w).backward()
    assert logits.grad[0].abs().max() == 0
    assert logits.grad[1].abs().max() > 0


def test_consistency_teacher_is_detached_and_3d_shapes():
    s = torch.randn(1, 3, 4, 8, 8, requires_grad=True)
    t = torch.randn(1, 3, 4, 8, 8, requires_grad=True)
    losses.consistency_mse(s, t).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    assert losses.consistency_mse(s, s).item() == pytest.approx(0.0)


def test_sigmoid_rampup():
    assert losses.sigmoid_rampup(0, 100) == pytest.approx(float(torch.exp(torch.tensor(-5.0))))
    assert losses.sigmoid_rampup(100, 100) == 1.0
    assert losses.sigmoid_rampup(500, 100) == 1.0
    assert losses.sigmoid_rampup(10, 0) == 1.0


def test_parse_method():
    assert parse_method("supervised") == ["supervised"]
    assert parse_method("semisam_plus+distill") == ["supervised", "semisam_plus", "distill"]
    assert parse_method("mean_teacher+supervised+mean_teacher") == ["supervised", "mean_teacher"]
    for bad in ["", "+", "foo", "supervised++mean_teacher", "mean_teacher+bogus"]:
        with pytest.raises(MethodError):
            parse_method(bad)
    assert {"supervised", "mean_teacher", "semisam_plus", "distill"} <= set(METHOD_PARTS)
    assert parse_method("semisam_plus+cotrain") == ["supervised", "semisam_plus", "cotrain"]
    for bad in ["cotrain", "cotrain+semisam_plus", "mean_teacher+cotrain"]:  # it needs semisam_plus first
        with pytest.raises(MethodError, match="use 'semisam_plus\\+cotrain'"):
            parse_method(bad)


def test_missing_part_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(METHOD_PARTS, "ghost", "semisam.training.methods.ghost_part:build")
    with pytest.raises(MethodError, match="ghost"):
        build_fn("ghost")
