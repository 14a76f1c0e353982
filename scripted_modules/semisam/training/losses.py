"""Loss functions of the training methods; small, pure and tested (each sends gradient to its input).

Shapes: ``logits`` ``(B, C, *S)`` (``S`` = ``(H, W)`` or ``(D, H, W)``), ``target`` ``(B, *S)`` int64
class indices, ``weight`` ``(B, *S)`` float in [0, 1] (per-pixel confidence). Every function returns a
0-dim tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Smoothing of the soft Dice; small, so an empty-foreground batch gives loss ~0 only when the
#: prediction is empty too (1e-5 voxels of "agreement" against thousands of predicted voxels).
DICE_SMOOTH = 1e-5


def _one_hot(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(B, *S)`` int64 -> ``(B, C, *S)`` float one-hot."""
    oh = F.one_hot(target.long().clamp_min(0), n_classes)  # (B, *S, C)
    return oh.movedim(-1, 1).to(torch.float32)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    include_background: bool = False,
) -> torch.Tensor:
    """Soft Dice loss ``1 - mean_c 2|P_c T_c| / (|P_c| + |T_c|)`` over the whole batch.

    Sums run over the batch and all pixels (a "batch Dice"): a small lesion present in one sample of
    the batch is not drowned by empty slices, and an all-background sample does not give 0/0.
    ``weight`` (per pixel, in [0, 1]) scales each pixel's contribution to all three sums.
    """
    n_classes = logits.shape[1]
    prob = torch.softmax(logits.float(), dim=1)
    oh = _one_hot(target, n_classes)
    if weight is not None:
        w = weight.unsqueeze(1).to(prob.dtype)
        prob, oh = prob * w, oh * w
    dims = [0, *range(2, logits.ndim)]
    inter = (prob * oh).sum(dims)
    denom = prob.sum(dims) + oh.sum(dims)
    dice = (2 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)
    if not include_background and n_classes > 1:
        dice = dice[1:]
    return 1.0 - dice.mean()


def ce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy, mean over pixels; with ``weight`` a weighted mean ``sum(w * ce) / sum(w)``."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    if weight is None:
        return ce.mean()
    w = weight.to(ce.dtype)
    return (w * ce).sum() / w.sum().clamp_min(1.0)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + cross-entropy (equal weights), the supervised loss."""
    return dice_loss(logits, target) + ce_loss(logits, target)


def confidence_weighted_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Confidence-aware Dice + CE for pseudo-labels: pixel ``p`` teaches with weight ``weight[p]``.

    A pseudo-label pixel with confidence 0 contributes nothing (no gradient either); one with 1 counts
    like a labeled pixel. The CE is normalised by ``sum(weight)`` (clamped to >= 1), so a batch of
    low confidence teaches less rather than being rescaled back up. (Dividing a loss by its own value,
    ``L / (L + eps)``, would give a constant 1 and no gradient; nothing here does that.)
    """
    return dice_loss(logits, target, weight=weight) + ce_loss(logits, target, weight=weight)


def consistency_mse(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared difference of softmax probabilities (the mean-teacher consistency).

    The teacher side is detached: only the student learns from it. ``weight`` ``(B, *S)`` masks
    pixels (UA-MT: 1 where the teacher is certain); the mean is then over masked pixels and classes.
    """
    ps = torch.softmax(student_logits.float(), dim=1)
    pt = torch.softmax(teacher_logits.detach().float(), dim=1)
    sq = (ps - pt) ** 2
    if weight is None:
        return sq.mean()
    w = weight.unsqueeze(1).to(sq.dtype)
    return (sq * w).sum() / (w.sum() * sq.shape[1]).clamp_min(1.0)


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = current / length`` clipped to [0, 1] (Laine & Aila 2017)."""
    if length <= 0:
        return 1.0
    t = min(max(float(current) / float(length), 0.0), 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2)))


def entropy(prob: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy (nats) of class probabilities ``(B, C, *S)`` -> ``(B, *S)``."""
    return -(prob * torch.log(prob.clamp_min(1e-8))).sum(1)
