"""One-click auto-segmentation: preprocessing -> MONAI sliding window -> post-processing -> input grid."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from semisam.budget import POST_CHUNK, SlidingWindowPlan, plan_sliding_window
from semisam.device import resolve_device
from semisam.model_folder import CheckpointError, ModelManifest
from semisam.scan.volume import Volume

from .preprocess import GridMap, model_grid, to_input_grid, to_model_grid

log = logging.getLogger(__name__)

#: ``progress(fraction in [0, 1], stage)``; stages: "preprocess", "infer", "postprocess", "done".
ProgressFn = Callable[[float, str], None]

#: Sliding-window defaults per input kind, used where the manifest's ``inference`` block says nothing.
#: 2.5D: the whole slice is one window (the network is fully convolutional; roi -1 = image size) and
#: 16 slices go through together. 3D: 128^3 windows with MONAI's default 25 % overlap. The bounds on
#: these values are :func:`semisam.model_folder.check_inference`'s and :mod:`semisam.budget`'s.
DEFAULT_INFERENCE = {
    "2.5d": {"roi_size": [-1, -1], "overlap": 0.25, "sw_batch_size": 16, "mode": "constant"},
    "3d": {"roi_size": [128, 128, 128], "overlap": 0.25, "sw_batch_size": 1, "mode": "constant"},
}
#: Slices per post-processing chunk (bounds the float32 probability temporaries).
_POST_CHUNK = POST_CHUNK


@dataclass
class SegmentationResult:
    """Output of :func:`segment`, everything on the input scan's grid.

    Attributes:
        labels: ``(Z, Y, X)`` uint8 label map (manifest label values; 0 = background).
        uncertainty: ``(Z, Y, X)`` float32 normalised entropy of the class probabilities, in [0, 1]
            (0 = certain, 1 = uniform over classes).
        slice_uncertainty: ``(Z,)`` float32 mean uncertainty of each input slice (array axis 0, ``k``).
        review_order: ``(Z,)`` int64 slice indices ``k``, most uncertain first (ties: lower ``k`` first).
        volume: the input :class:`Volume` (its geometry is the output's).
        model_spacing: spacing (i, j, k) mm of the grid the model ran on.
        model_shape: ``(Z', Y', X')`` of that grid.
        seconds: wall-clock seconds per stage.
    """

    labels: np.ndarray
    uncertainty: np.ndarray
    slice_uncertainty: np.ndarray
    review_order: np.ndarray
    volume: Volume
    model_spacing: tuple[float, float, float]
    model_shape: tuple[int, int, int]
    seconds: dict[str, float]

    def label_volume(self) -> Volume:
        """The label map as a :class:`Volume` on the input grid."""
        return self.volume.with_array(self.labels)


def _settings(model: torch.nn.Module, manifest: ModelManifest) -> dict:
    kind = getattr(model, "input_kind", "3d")
    if kind not in DEFAULT_INFERENCE:
        raise ValueError(f"model input_kind must be one of {sorted(DEFAULT_INFERENCE)}, got {kind!r}")
    inference = manifest.inference or {}
    if not isinstance(inference, dict):
        raise CheckpointError(
            f"{manifest.source}: inference: expected an object, got {type(inference).__name__}"
        )
    s = dict(DEFAULT_INFERENCE[kind])
    s.update({k: v for k, v in inference.items() if k in s or k == "min_component_voxels"})
    s["kind"] = kind
    return s


def _post(logits: torch.Tensor, lut: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, ...)`` logits -> (labels uint8 ``(N, ...)``, normalised entropy float32 ``(N, ...)``).

    ``lut`` maps class index -> label value (``None``: the identity). Written to make few passes over
    memory: on lung1 a plain ``log_softmax`` / ``argmax`` / ``lut[index]`` version cost more CPU time
    than the network itself (5.4 s vs 4.4 s).
    """
    logits = logits.float()
    n_classes = logits.shape[1]
    if n_classes == 2:
        # Binary: d = l1 - l0; entropy of sigmoid(d) = log(1 + e^-|d|) + |d| e^-|d| / (1 + e^-|d|).
        d = logits[:, 1] - logits[:, 0]
        labels = (d > 0).to(torch.uint8)
        a = d.abs_()
        t = torch.exp(-a)
        ent = torch.log1p(t).add_(a.mul_(t).div_(t.add_(1.0)))
    else:
        mx, idx = logits.max(dim=1)
        e = (logits - mx.unsqueeze(1)).exp_()
        z = e.sum(dim=1)
        # H = log Z - sum_c e_c (l_c - max) / Z
        ent = torch.log(z).sub_((e * (logits - mx.unsqueeze(1))).sum(dim=1).div_(z))
        labels = idx.to(torch.uint8)
    if lut is not None:
        labels = lut[labels.long()]
    return labels, ent.mul_(1.0 / math.log(n_classes)).clamp_(0.0, 1.0)


def _infer_25d(
    model, x: torch.Tensor, s: dict, plan: SlidingWindowPlan, lut, report: ProgressFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice stacks through the 2.5D model, ``_POST``-processed chunk by chunk to bound memory."""
    depth = x.shape[0]
    r = int(getattr(model, "in_slices", 1)) // 2
    chunk = plan.sw_batch_size
    labels = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    ent = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for z0 in range(0, depth, chunk):
        z1 = min(z0 + chunk, depth)
        idx = torch.arange(z0 - r, z1 + r, device=x.device).clamp_(0, depth - 1)  # edge slices repeat
        stacks = x[idx].unfold(0, 2 * r + 1, 1).permute(0, 3, 1, 2).contiguous()  # (n, 2r+1, H, W)
        logits = sliding_window_inference(
            stacks, list(plan.roi), chunk, model, overlap=plan.overlap, mode=s["mode"]
        )
        labels[z0:z1], ent[z0:z1] = _post(logits, lut)
        report(z1 / depth, "infer")
    return labels, ent


def _infer_3d(
    model, x: torch.Tensor, s: dict, plan: SlidingWindowPlan, lut, report: ProgressFn
) -> tuple[torch.Tensor, torch.Tensor]:
    total = plan.windows
    done = [0]

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        out = model(batch)
        done[0] += batch.shape[0]
        report(min(1.0, done[0] / total), "infer")
        return out

    logits = sliding_window_inference(
        x[None, None], list(plan.roi), plan.sw_batch_size, predictor, overlap=plan.overlap, mode=s["mode"]
    )[0]
    labels = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    ent = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for z0 in range(0, x.shape[0], _POST_CHUNK):
        z1 = min(z0 + _POST_CHUNK, x.shape[0])
        labels[z0:z1], ent[z0:z1] = _post(logits[:, z0:z1].transpose(0, 1), lut)
    return labels, ent


def _remove_small_components(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop connected components (26-connectivity) smaller than ``min_voxels`` on the model grid."""
    from scipy import ndimage

    for value in np.unique(labels[labels > 0]):
        comp, n = ndimage.label(labels == value, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(comp.ravel())
        small = np.flatnonzero(sizes < min_voxels)
        small = small[small > 0]
        if small.size:
            labels[np.isin(comp, small)] = 0
    return labels


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``model`` for inference: eval mode, BatchNorm folded (if it offers that), on ``device``."""
    m = copy.deepcopy(model).eval()
    from semisam.specialists.mamba_unet import fold_batchnorm

    fold_batchnorm(m)
    return m.to(device)


def segment(
    volume: Volume,
    model: torch.nn.Module,
    manifest: ModelManifest,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
) -> SegmentationResult:
    """Segment ``volume`` with a specialist; the result lies exactly on ``volume``'s grid.

    Args:
        volume: the scan (any spacing, orientation, origin).
        model: a specialist from :func:`semisam.model_folder.load_model` (not modified: a copy runs).
        manifest: its manifest (preprocessing, labels, inference settings).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``; ``None`` follows the model.
        progress: optional ``progress(fraction, stage)`` callback.

    Deterministic: the same input, model and device give identical outputs.

    Raises:
        CheckpointError: the manifest's ``inference`` settings cannot run on this network, or would slide
            more windows or need more memory than allowed (:func:`semisam.budget.plan_sliding_window`),
            checked before any compute.
        GridTooLargeError: the scan's model grid is too large (header spacing, or the machine's memory).
    """
    import time

    dev = next(model.parameters()).device if device is None else resolve_device(device)
    report: ProgressFn = progress or (lambda f, s: None)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    s = _settings(model, manifest)
    lut = torch.tensor(manifest.class_values(), dtype=torch.uint8, device=dev)
    if int(getattr(model, "n_classes", len(lut))) != len(lut):
        raise ValueError(
            f"model has {model.n_classes} classes but the manifest names {len(lut) - 1} label(s)"
        )
    # Work bounds from the header and the manifest alone, before anything is resampled or run.
    grid = model_grid(volume, manifest.preprocessing)
    plan = plan_sliding_window(
        model, manifest, grid.model_shape, s, input_shape=volume.shape, device=dev, scan=volume.source
    )
    report(0.0, "preprocess")
    with torch.inference_mode():
        x, grid = to_model_grid(volume, manifest.preprocessing, dev, grid)
        net = prepare_model(model, dev)
        seconds["preprocess"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        infer = _infer_25d if s["kind"] == "2.5d" else _infer_3d
        labels, ent = infer(net, x, s, plan, lut, lambda f, st: report(0.1 + 0.8 * f, st))
        del x
        seconds["infer"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        report(0.9, "postprocess")
        min_vox = int(s.get("min_component_voxels", 0) or 0)
        if min_vox > 0:
            labels = torch.from_numpy(_remove_small_components(labels.cpu().numpy(), min_vox)).to(dev)
        out_labels = to_input_grid(labels, grid, "nearest-exact")
        unc = to_input_grid(ent, grid, "trilinear").astype(np.float32, copy=False)
    slice_unc = unc.reshape(unc.shape[0], -1).mean(axis=1).astype(np.float32)
    order = np.argsort(-slice_unc, kind="stable")
    seconds["postprocess"] = time.perf_counter() - t2
    report(1.0, "done")
    return SegmentationResult(
        labels=out_labels,
        uncertainty=unc,
        slice_uncertainty=slice_unc,
        review_order=order,
        volume=volume,
        model_spacing=grid.model_spacing,
        model_shape=grid.model_shape,
        seconds=seconds,
    )


__all__ = ["DEFAULT_INFERENCE", "GridMap", "ProgressFn", "SegmentationResult", "prepare_model", "segment"]
