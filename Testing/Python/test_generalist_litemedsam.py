"""LiteMedSAM with the REAL bundled weights on real slices: quality with ground-truth boxes, the fast
(onnxruntime) encoder against the eager fp32 reference, and masks mapped back to non-square slices."""

from __future__ import annotations

import numpy as np
import pytest

from semisam.generalists import SlicePrompt, build_generalist
from semisam.generalists.fast_encoder import apply_backend
from semisam.metrics import dice
from semisam.scan.intensity import apply_window, window_for
from semisam.scan.volume import read_mask, read_volume
from semisam.slices import box_from_mask


@pytest.fixture(scope="module")
def model():
    m = build_generalist("litemedsam", device="cpu")  # default backend: onnxruntime on CPU
    assert m.encoder_backend == "onnxruntime"
    return m


def _case(case):
    vol = read_volume(case.image)
    lab = read_mask(case.label, vol).array > 0
    win = window_for(vol, case.modality)
    zs = np.nonzero(lab.reshape(lab.shape[0], -1).any(1))[0]
    return vol, lab, win, zs


@pytest.fixture(scope="module")
def lung(lung1):
    return _case(lung1)


@pytest.fixture(scope="module")
def brain(brain1):
    return _case(brain1)


def test_ground_truth_box_on_lung_lesion_gives_dice_above_0_7(model, lung):
    vol, lab, win, zs = lung
    z = int(zs[len(zs) // 2])
    img = apply_window(vol.array[z], win)
    pred = model.predict(model.encode(img), SlicePrompt(box=box_from_mask(lab[z])))
    assert pred.logits.shape == lab[z].shape and pred.logits.dtype == np.float32
    assert dice(pred.mask, lab[z]) > 0.7
    assert 0.5 < pred.score <= 1.0


@pytest.mark.parametrize("which", ["lung", "brain"])
def test_fast_path_masks_match_eager_fp32(model, which, request):
    """The default (onnxruntime encoder + decoder) against eager fp32 end to end: Dice >= 0.99."""
    vol, lab, win, zs = request.getfixturevalue(which)
    z = int(zs[len(zs) // 2])
    img = apply_window(vol.array[z], win)
    prompt = SlicePrompt(box=box_from_mask(lab[z]))
    fast = model.encode(img)
    fast_pred = model.predict(fast, prompt)
    model.use_eager_encoder()
    try:
        assert model.encoder_backend == "eager-fp32" and model.decoder_backend == "eager"
        eager = model.encode(img)
        eager_pred = model.predict(eager, prompt)
        # the fast decoder alone, on the eager embedding, for every kind of prompt
        inside = np.array([[float(c) for c in np.argwhere(lab[z]).mean(0)[::-1]]])
        prompts = [
            prompt,
            SlicePrompt(points=inside),
            SlicePrompt(points=np.vstack([inside, [[2.0, 2.0]]]), point_labels=np.array([1, 0])),
            SlicePrompt(box=box_from_mask(lab[z]), mask=eager_pred.logits),
        ]
        refs = [model.predict(eager, p) for p in prompts]
    finally:
        apply_backend(model, "onnxruntime")
    rel = float((fast.features - eager.features).abs().max() / eager.features.abs().max())
    assert rel < 1e-3
    assert dice(fast_pred.mask, eager_pred.mask) >= 0.99
    for p, ref in zip(prompts, refs, strict=True):
        got = model.predict(eager, p)
        np.testing.assert_allclose(got.logits, ref.logits, atol=1e-2)
        assert got.score == pytest.approx(ref.score, abs=1e-3)


@pytest.mark.cuda
def test_cuda_masks_match_cpu(lung):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    vol, lab, win, zs = lung
    z = int(zs[len(zs) // 2])
    img = apply_window(vol.array[z], win)
    prompt = SlicePrompt(box=box_from_mask(lab[z]))
    cpu = build_generalist("litemedsam", device="cpu", backend="eager")
    gpu = build_generalist("litemedsam", device="cuda")
    assert gpu.encoder_backend == "eager-fp32"  # auto keeps PyTorch on the GPU
    assert dice(gpu.predict(gpu.encode(img), prompt).mask, cpu.predict(cpu.encode(img), prompt).mask) >= 0.99


def test_box_on_non_square_crop_lands_on_the_object(model, lung):
    vol, lab, win, zs = lung
    z = int(zs[len(zs) // 2])
    ys, xs = np.nonzero(lab[z])
    cy = int(ys.mean())
    # a 300 x 512 band (H != W) with the nodule off-centre: the longest side stays 512, so the model sees
    # the nodule at the same scale as on the full slice, and a wrong scale, axis swap or padding side
    # would move or lose it
    r0 = min(max(0, cy - 80), lab.shape[1] - 300)
    r1 = r0 + 300
    img = apply_window(vol.array[z, r0:r1, :], win)
    gt = lab[z, r0:r1, :]
    pred = model.predict(model.encode(img), SlicePrompt(box=box_from_mask(gt)))
    assert pred.logits.shape == (300, 512)
    full = model.predict(
        model.encode(apply_window(vol.array[z], win)), SlicePrompt(box=box_from_mask(lab[z]))
    )
    assert dice(pred.mask, full.mask[r0:r1]) > 0.9
    assert dice(pred.mask, gt) > 0.7
    my, mx = np.nonzero(pred.mask)
    assert abs(my.mean() - (ys.mean() - r0)) < 3 and abs(mx.mean() - xs.mean()) < 3


def test_points_and_mask_prompts(model, brain):
    vol, lab, win, zs = brain
    z = int(zs[len(zs) // 2])
    emb = model.encode(apply_window(vol.array[z], win))
    ys, xs = np.nonzero(lab[z])
    inside = np.array([[xs.mean(), ys.mean()]])
    # LiteMedSAM was trained with boxes only, so a lone point gives no reliable mask; it must still answer
    # at the slice's shape with a score in [0, 1] (SAM-style best-of-three for a single point).
    one_point = model.predict(emb, SlicePrompt(points=inside))
    assert one_point.logits.shape == lab[z].shape and 0.0 <= one_point.score <= 1.0
    with_point = model.predict(
        emb, SlicePrompt(box=box_from_mask(lab[z]), points=inside, point_labels=np.array([1]))
    )
    assert dice(with_point.mask, lab[z]) > 0.7
    box = model.predict(emb, SlicePrompt(box=box_from_mask(lab[z])))
    refined = model.predict(emb, SlicePrompt(box=box_from_mask(lab[z]), mask=box.logits))
    assert dice(refined.mask, lab[z]) > 0.7
    with pytest.raises(ValueError, match="outside the slice"):
        model.predict(emb, SlicePrompt(points=np.array([[1000.0, 5.0]])))
    with pytest.raises(ValueError, match="x0 <= x1"):
        model.predict(emb, SlicePrompt(box=(50, 50, 40, 60)))
    with pytest.raises(ValueError, match="empty prompt"):
        model.predict(emb, SlicePrompt())


def test_building_the_default_model_warns_nothing():
    """A fresh process (imports are cached per process) builds LiteMedSAM with every warning an error:
    the wheel's timm deprecation warnings are silenced where we import it, and nothing else is."""
    import subprocess
    import sys

    code = "from semisam.generalists import build_generalist; build_generalist('litemedsam')"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
