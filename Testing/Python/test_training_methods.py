"""Method parts: every loss term sends gradient into the student's weights; the EMA teacher follows."""

from __future__ import annotations

import pytest
import torch
from training_synth import one_thread  # noqa: F401 - fixture

from semisam.model_folder import new_manifest
from semisam.specialists import build_specialist
from semisam.training.config import TrainConfig
from semisam.training.methods import build_parts
from semisam.training.methods.base import Batch, StudentOutput, TrainContext

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"channels": [8, 16, 24, 32, 48], "mamba_depth": 1}


def _ctx(tmp_path, arch="mamba_unet", iterations=10):
    torch.manual_seed(0)
    kwargs = TINY if arch == "mamba_unet" else {"channels": [4, 8, 16, 32, 32]}
    man = new_manifest(arch, ["lesion"], "CT", kwargs=kwargs)
    student = build_specialist(arch, **man.kwargs).train()
    cfg = TrainConfig(iterations=iterations, device="cpu")
    return TrainContext(
        config=cfg,
        device=torch.device("cpu"),
        student=student,
        manifest=man,
        store=None,
        cache=tmp_path / "cache",
    )


def _batch(kind="2.5d", b=2):
    g = torch.Generator().manual_seed(1)
    if kind == "2.5d":
        x, xu = torch.rand(b, 3, 32, 32, generator=g), torch.rand(b, 3, 32, 32, generator=g)
        y = torch.zeros(b, 32, 32, dtype=torch.long)
        y[:, 8:20, 10:22] = 1
    else:
        x, xu = torch.rand(b, 1, 16, 32, 32, generator=g), torch.rand(b, 1, 16, 32, 32, generator=g)
        y = torch.zeros(b, 16, 32, 32, dtype=torch.long)
        y[:, 4:10, 8:20, 10:22] = 1
    return Batch(x=x, y=y, xu=xu, u_index=[(0, (0, 0, 0))] * b)


def _forward(ctx, batch):
    logits = ctx.student(torch.cat([batch.x, batch.xu]))
    b = batch.x.shape[0]
    return StudentOutput(logits=logits[:b], logits_u=logits[b:])


@pytest.mark.parametrize(
    "method,options",
    [
        ("supervised", {}),
        ("mean_teacher", {}),
        ("mean_teacher", {"uncertainty": True, "passes": 2}),
    ],
    ids=["supervised", "mean_teacher", "ua_mt"],
)
def test_each_term_sends_gradient_to_student(tmp_path, method, options):
    ctx = _ctx(tmp_path)
    parts = build_parts([method], {method: {**options, "rampup": 0}}, ctx)
    for p in parts:
        p.setup(ctx)
    # Make the teacher differ from the student, as after a few steps.
    for p in parts:
        p.after_step(ctx, 0)
    with torch.no_grad():
        for w in ctx.student.parameters():
            w.add_(0.01 * torch.randn_like(w))
    batch = _batch()
    terms = parts[0].losses(ctx, batch, _forward(ctx, batch), iteration=5)
    assert terms, f"{method} returned no loss term"
    for name in terms:
        ctx.student.zero_grad(set_to_none=True)
        out = _forward(ctx, batch)
        value = parts[0].losses(ctx, batch, out, iteration=5)[name]
        assert value.ndim == 0 and torch.isfinite(value), name
        value.backward()
        grads = [w.grad.abs().sum().item() for w in ctx.student.parameters() if w.grad is not None]
        assert grads and sum(grads) > 0, f"{method}.{name} sends no gradient into the student"


def test_mean_teacher_ema_follows_student_and_state_roundtrips(tmp_path):
    ctx = _ctx(tmp_path)
    (mt,) = build_parts(["mean_teacher"], {"mean_teacher": {"ema_decay": 0.9}}, ctx)
    mt.setup(ctx)
    w_s = next(ctx.student.parameters())
    w_t = next(mt.teacher.parameters())
    with torch.no_grad():
        w_s.add_(1.0)
    before = (w_s - w_t).abs().mean().item()
    for it in range(20, 30):  # past the warm-up: alpha = 0.9
        mt.after_step(ctx, it)
    after = (w_s - w_t).abs().mean().item()
    assert after < 0.5 * before
    assert not w_t.requires_grad
    state = mt.state_dict()
    (mt2,) = build_parts(["mean_teacher"], {}, ctx)
    mt2.setup(ctx)
    mt2.load_state_dict(state)
    assert torch.equal(next(mt2.teacher.parameters()), w_t)


def test_mean_teacher_rampup_and_unknown_option(tmp_path):
    ctx = _ctx(tmp_path, iterations=100)
    (mt,) = build_parts(["mean_teacher"], {"mean_teacher": {"noise": 0.0}}, ctx)
    mt.setup(ctx)
    with torch.no_grad():
        for w in ctx.student.parameters():
            w.add_(0.05 * torch.randn_like(w))
    batch = _batch()
    out = _forward(ctx, batch)
    early = mt.losses(ctx, batch, out, 0)["consistency"].item()
    late = mt.losses(ctx, batch, out, 40)["consistency"].item()
    assert 0 < early < 0.02 * late  # exp(-5) ramp at the start
    with pytest.raises(ValueError, match="unknown option"):
        build_parts(["mean_teacher"], {"mean_teacher": {"decay": 0.9}}, ctx)


def test_supervised_gradient_for_unet3d(tmp_path):
    ctx = _ctx(tmp_path, arch="unet3d")
    (sup,) = build_parts(["supervised"], {}, ctx)
    batch = _batch("3d")
    out = _forward(ctx, batch)
    sum(sup.losses(ctx, batch, out, 0).values()).backward()
    assert sum(w.grad.abs().sum().item() for w in ctx.student.parameters() if w.grad is not None) > 0
