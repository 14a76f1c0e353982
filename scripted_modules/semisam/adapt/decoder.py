"""The differentiable decoder pass of a SAM-family generalist, and the loss terms that adapt it.

Only the mask decoder (with its IoU head) learns; the image embeddings are computed once, frozen, by the
same encoder the product uses, so an adapted decoder keeps every cached embedding valid. The pass is
:meth:`semisam.generalists.sam_family.SamLikeModel.decode`, the one ``predict`` runs, for one box with or
without one correction click (no ``inference_mode``): the prompt goes through the model frame's transform,
and the low-resolution logits come back onto the pixel grid of what the model saw (the whole slice, or the
view), where the loss compares them with the target.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from semisam.clicks import error_point
from semisam.generalists.base import SliceEmbedding
from semisam.generalists.geometry import ResizeLongestSide
from semisam.generalists.sam_family import frame_prompts

from .samples import Sample


def adaptable(model) -> bool:
    """Whether ``model`` has the parts this module trains (a SAM-family ``SamLikeModel``)."""
    return all(hasattr(model, a) for a in ("mask_decoder", "decode", "image_size"))


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    """The mask decoder's parameters (its IoU head included); everything else stays frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def seen_target(sample: Sample) -> np.ndarray:
    """The sample's target on the grid the model saw: the view's ``(side, side)`` or the whole slice."""
    if sample.view is None:
        return sample.target
    return sample.view.crop(sample.target.astype(np.float32)) > 0.5


def seen_box(sample: Sample) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = sample.box
    if sample.view is None:
        return float(x0), float(y0), float(x1), float(y1)
    v = sample.view
    return float(x0 - v.x0), float(y0 - v.y0), float(x1 - v.x0), float(y1 - v.y0)


def forward(model, embedding: SliceEmbedding, box: tuple[float, float, float, float], click=None):
    """``(logits (h, w), predicted IoU ())`` for one box on an embedding of an ``(h, w)`` image, with one
    ``click = ((column, row), positive)`` on the same grid when given (the box + point a correction asks)."""
    tf = ResizeLongestSide(embedding.slice_shape, model.image_size)
    pts = labels = None
    if click is not None:
        (col, row), positive = click
        pts, labels = [[col, row]], [1 if positive else 0]
    points, boxes = frame_prompts(tf, embedding.features.device, box, pts, labels)
    low_res, iou = model.decode(embedding.features, points=points, boxes=boxes)
    return tf.logits_to_slice(low_res[:, :1].float())[0, 0], iou[0, 0]


def correction_click(model, embedding: SliceEmbedding, box, target: np.ndarray):
    """Where the annotator would click on the decoder's own answer to ``box`` (:func:`semisam.clicks.
    error_point` on the seen grid), or ``None`` when that answer is right. Computed without gradient: the
    click is part of the prompt, not of what is learned."""
    with torch.no_grad():
        logits, _ = forward(model, embedding, box)
    return error_point(logits.cpu().numpy() > 0, target)


def bce_term(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the pixels (the only term an empty target has)."""
    return F.binary_cross_entropy_with_logits(logits, target)


def dice_term(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice; 0 for an empty target (nothing to overlap; the cross-entropy teaches "not here")."""
    if not bool(target.any()):
        return logits.new_zeros(())
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + eps) / (p.sum() + target.sum() + eps)


def empty_term(logits: torch.Tensor, target: torch.Tensor, box) -> torch.Tensor:
    """For an empty target: the mean foreground probability inside the box (``(x0, y0, x1, y1)`` on the
    seen grid), 0 for a non-empty one. The cross-entropy alone is a mean over the whole frame, where a
    50 px answer on a 217 x 181 slice weighs 0.1 %: validated on whole heads, the adapted decoder then drew
    more on the empty neighbours than the frozen one (105 -> 146-175 px)."""
    if bool(target.any()):
        return logits.new_zeros(())
    h, w = logits.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)
    if x1 < x0 or y1 < y0:
        return logits.new_zeros(())
    return torch.sigmoid(logits[y0 : y1 + 1, x0 : x1 + 1]).mean()


def iou_term(iou_pred: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of the IoU head against the true IoU of the mask it answers: its score is the
    confidence that orders review, so it must rank answers by their real quality.

    An empty target is taught 0 whatever the answer: there is nothing to find on the slice, and a
    propagation track refuses an answer under the engine's ``min_score`` (0.5) and ends there. Taught 1
    for an empty answer there (0/0 read as a perfect match), the head learned to be sure of the empty
    neighbours, and what the decoder still drew on them was kept by the tracks. Measured on two test
    subjects per whole-head task (``Testing/benchmarks/adapt.py``, N = 2 / 4 training cases), px a track
    keeps per empty neighbour, taught 1 -> taught 0 (frozen model): thalamus 20.5 / 25.0 -> 20.8 / 0.0
    (28.9), caudate 8.6 / 7.0 -> 8.1 / 2.8 (5.9); box-per-slice Dice 0.867 / 0.875 -> 0.865 / 0.870 and
    0.836 / 0.843 -> 0.839 / 0.850; 1-box propagation on the validation cases rose in 3 of the 4 runs."""
    with torch.no_grad():
        m, t = logits > 0, target > 0.5
        union = (m | t).sum()
        if not bool(t.any()) or union == 0:
            true_iou = torch.zeros((), device=logits.device)
        else:
            true_iou = (m & t).sum() / union
    return (iou_pred - true_iou.float()) ** 2


def sample_loss(
    model, embedding: SliceEmbedding, sample: Sample, correct: bool = False
) -> tuple[torch.Tensor, dict]:
    """The loss of one sample (cross-entropy + Dice, or the box's foreground for an empty target, + IoU
    head) and its terms as floats. With ``correct`` (a non-empty target), the decoder first answers the box,
    then is taught the answer to the box plus the click the annotator puts on that answer's largest error:
    the prompt every correction in the product asks (a frozen decoder was never taught it on this task)."""
    box = seen_box(sample)
    seen = seen_target(sample)
    click = None
    if correct and seen.any():
        click = correction_click(model, embedding, box, seen)
    logits, iou = forward(model, embedding, box, click)
    target = torch.as_tensor(seen, dtype=torch.float32, device=logits.device)
    terms = {
        "bce": bce_term(logits, target),
        "dice": dice_term(logits, target),
        "empty": empty_term(logits, target, box),
        "iou": iou_term(iou, logits, target),
    }
    return sum(terms.values()), {k: float(v.detach()) for k, v in terms.items()}
