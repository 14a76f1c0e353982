"""distill: real LiteMedSAM encoder features teach a real mamba_unet's encoder through a trained projector;
each loss term sends gradient into the student's weights; the teacher's cells land where the student's are."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from semisam.model_folder import new_manifest
from semisam.specialists import build_specialist
from semisam.training.methods.base import Batch, CaseData, StudentOutput, TrainContext
from semisam.training.methods.distill import CELL, build, perturb, teacher_cells


def _case(seed: int, depth: int = 3, shape=(48, 64)) -> CaseData:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = ((yy - 24) / 10.0) ** 2 + ((xx - 30) / 8.0) ** 2 <= 1.0
    img = np.stack([np.where(inside, 0.8, 0.3) + rng.normal(0, 0.03, shape) for _ in range(depth)])
    mask = np.zeros((depth, *shape), dtype=np.uint8)
    mask[1] = inside  # one labeled slice: margin 0 -> one slice to encode
    return CaseData(
        f"c{seed}",
        torch.from_numpy(np.clip(img, 0, 1).astype(np.float32)),
        torch.from_numpy(mask),
        f"sha{seed}",
    )


def test_teacher_cells_follow_the_resize_geometry():
    # A 64 x 64 "embedding" whose value is its column index; a 48 x 96 slice fills 128 x 256 of the
    # 256 model frame (scale 256/96), i.e. embedding rows 0..31, all 64 columns.
    feats = torch.arange(64, dtype=torch.float32).view(1, 1, 1, 64).expand(1, 2, 64, 64).clone()
    cells = teacher_cells(feats, (48, 96), 256)
    assert cells.shape == (2, 3, 6)
    # Cell j covers slice columns 16j..16j+15, centre 16j+8 -> embedding column (16j+8) * (256/96)/4 - 0.5.
    expected = np.array([(16 * j + 8) * (256 / 96) / 4 - 0.5 for j in range(6)])
    np.testing.assert_allclose(cells[0, 1].numpy(), expected, atol=0.05)


def test_perturbation_is_the_same_for_teacher_slice_and_student_stack():
    img = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    stack = perturb(img, [1, 2, 3], 0.3, 0.05)
    alone = perturb(img[1], [1, 2, 3], 0.3, 0.05)
    np.testing.assert_array_equal(stack[1], alone)
    assert not np.array_equal(perturb(img[1], [1, 2, 4], 0.3, 0.05), alone)


def test_distill_terms_send_gradient_into_student_and_projector(tmp_path):
    from semisam.generalists import build_generalist

    torch.manual_seed(0)
    student = build_specialist("mamba_unet", in_slices=3, n_classes=2)
    cfg = types.SimpleNamespace(iterations=50, seed=0, refresh_every=25, parts={})
    ctx = TrainContext(
        config=cfg,  # type: ignore[arg-type]
        device=torch.device("cpu"),
        student=student,
        manifest=new_manifest("mamba_unet", ["object"], "MR"),
        store=None,
        cache=tmp_path / "cache",
        labeled=[_case(0)],
        generalists=[("litemedsam", None)],
    )
    ctx._generalist_objects["litemedsam:"] = build_generalist("litemedsam", device="cpu")
    part = build({"margin": 0, "rows": 1}, ctx)
    assert part.trainable() and all(p.requires_grad for p in part.trainable())  # known before setup
    part.setup(ctx)
    assert list(part.cells) == [("l", 0, 1)] and len(part.cells[("l", 0, 1)]) == 2  # clean + 1 perturbed
    assert part.store.encoded == 2
    cells = part.cells[("l", 0, 1)][0]
    assert cells.shape == (256, 48 // CELL, 64 // CELL)
    empty = Batch(x=torch.zeros(0, 3, 48, 64), y=torch.zeros(0, 48, 64, dtype=torch.long))
    out = StudentOutput(logits=torch.zeros(0, 2, 48, 64))
    for term in ("distill_feat", "distill_pert"):
        student.zero_grad()
        part.projector.zero_grad()
        terms = part.losses(ctx, empty, out, iteration=0)
        assert set(terms) == {"distill_feat", "distill_pert"}
        assert terms[term].item() > 0
        terms[term].backward()
        enc = student.enc[2]  # the 1/16 stage the hook reads
        grads = [p.grad.abs().sum().item() for p in enc.parameters() if p.grad is not None]
        assert grads and sum(grads) > 1e-6, term  # a real gradient, not a self-normalised loss's ~1e-16
        assert student.stem[0].weight.grad.abs().sum() > 1e-6, term
        assert part.projector.weight.grad.abs().sum() > 1e-6, term

    import copy

    copy.deepcopy(student)  # inference and saving copy the student: the hook must hold no graph tensor
    state = part.state_dict()
    other = build({}, ctx)
    other.load_state_dict(state)
    torch.testing.assert_close(other.projector.weight, part.projector.weight)


def test_distill_refuses_a_3d_student(tmp_path):
    student = build_specialist("unet3d", n_classes=2)
    cfg = types.SimpleNamespace(iterations=10, seed=0, parts={})
    ctx = TrainContext(cfg, torch.device("cpu"), student, new_manifest("unet3d", ["o"], "MR"), None, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2.5D student"):
        build({}, ctx)
