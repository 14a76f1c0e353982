"""What a generalist sees of a slice: the whole slice, or a square view around the structure.

A generalist resizes what it is given to its input (256 px for LiteMedSAM). On a 181 x 217 whole-head
slice a 15 px structure is then four cells of LiteMedSAM's 64 x 64 embedding, too coarse to draw it. A
:class:`View` is a square window of the slice around a box, encoded at the model's full input size, with
prompts mapped into it and the answer mapped back exactly onto the slice grid (outside the view: no
structure).

Which one answers is decided per box by :func:`choose`: both are asked, and the answer whose mask fills
the user's box better (the IoU of the mask's bounding box with the prompt box) is kept. A box is what the
user says the structure spans; an answer that leaks out of it or covers only part of it contradicts that.
Measured with ``Testing/benchmarks/field_of_view.py`` (a ground-truth box on every slice, LiteMedSAM,
median of 3 subjects; whole slice -> this rule): whole heads thalamus 0.625 -> 0.781, caudate 0.633 ->
0.710, amygdala 0.576 -> 0.707; the lesion samples lung1 0.852 -> 0.852, brain1 0.886 -> 0.886, breast1
0.504 -> 0.620. The model's own predicted IoU as the chooser lost 0.08 on breast1 (it prefers the whole
slice's worse answer), and a rule from the box size alone kept only part of the gain (the brain1 lesion
and a whole-head thalamus are both ~30 px at the model's input, and only one gains from a closer look).

The view's side is 2.5 x the box's longer side (a 4 x view kept more context and less of the gain:
thalamus 0.77 vs 0.81), at least :data:`MIN_SIDE` px, rounded up to a quarter-octave ladder of sides, and
its origin snapped to a grid of a quarter side, so that nearby boxes (a box the user nudges, the same
structure on neighbouring slices) share one view and its cached embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import SliceEmbedding, SlicePrediction, SlicePrompt

#: the view's side as a multiple of the box's longer side
FACTOR = 2.5
#: the smallest view side in slice pixels (an 8 x 8 px box still gets some context)
MIN_SIDE = 32
#: a view must be smaller than this fraction of the slice's longer side: a 2x closer look or less buys
#: little and gives up context. Set after looking at the brain1 lesion (a 128 px view in its 256 px slice):
#: with one box on each of its 7 slices in turn, views there lowered the mean 3D Dice from 0.669 to 0.633
#: (key slices 12 and 16: 0.84 -> 0.76, 0.77 -> 0.60), while the key-slice answers themselves were as good;
#: on 64 x 80 px crops a 64 px view of the thalamus gained 0.02. It also keeps the view off the largest
#: cross-sections of a whole-head thalamus (47 px boxes in a 217 px slice), where it would have helped.
MAX_FRACTION = 0.5
#: logit given outside the view: clearly background (sigmoid 2e-9), never near the 0 threshold
OUTSIDE_LOGIT = -20.0
#: where the embedding remembers its view
EXTRAS_KEY = "view"


@dataclass(frozen=True)
class View:
    """A ``(side, side)`` window of a slice whose top-left pixel is ``(y0, x0)`` (slice pixels, row and
    column). It may reach beyond the slice (small slices): those pixels read 0, the floor of the windowed
    intensities, as the model's own zero padding does."""

    y0: int
    x0: int
    side: int

    def crop(self, image: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``(side, side)`` float32 window of the ``(H, W)`` ``image``; ``fill`` outside the slice."""
        h, w = image.shape
        out = np.full((self.side, self.side), fill, np.float32)
        ys, ye = max(0, self.y0), min(h, self.y0 + self.side)
        xs, xe = max(0, self.x0), min(w, self.x0 + self.side)
        if ys < ye and xs < xe:
            out[ys - self.y0 : ye - self.y0, xs - self.x0 : xe - self.x0] = image[ys:ye, xs:xe]
        return out

    def paste(self, logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``(side, side)`` logits of the view -> ``(H, W)`` slice logits, :data:`OUTSIDE_LOGIT` elsewhere."""
        h, w = shape
        out = np.full((h, w), OUTSIDE_LOGIT, np.float32)
        ys, ye = max(0, self.y0), min(h, self.y0 + self.side)
        xs, xe = max(0, self.x0), min(w, self.x0 + self.side)
        if ys < ye and xs < xe:
            out[ys:ye, xs:xe] = logits[ys - self.y0 : ye - self.y0, xs - self.x0 : xe - self.x0]
        return out

    def prompt_in(self, prompt: SlicePrompt) -> SlicePrompt:
        """``prompt`` (slice pixels) in the view's pixels. Points outside the view are left out: the view's
        answer is background there whatever they say (a negative point on a false positive elsewhere on
        the slice would otherwise be a point outside the model's input)."""
        box = None
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            box = (x0 - self.x0, y0 - self.y0, x1 - self.x0, y1 - self.y0)
        points, labels = None, prompt.point_labels
        if prompt.points is not None:
            points = np.asarray(prompt.points, np.float32).reshape(-1, 2) - np.array(
                [self.x0, self.y0], np.float32
            )
            inside = np.all((points >= 0) & (points <= self.side - 1), axis=1)
            if not inside.all():
                labels = None if labels is None else np.asarray(labels).reshape(-1)[inside]
                points = points[inside] if inside.any() else None
                labels = labels if points is not None else None
        mask = None
        if prompt.mask is not None:
            m = np.asarray(prompt.mask, np.float32)
            # A binary mask reads 0 outside; logits read clearly-background.
            mask = self.crop(m, fill=0.0 if m.min() >= 0 else OUTSIDE_LOGIT)
        return SlicePrompt(box=box, points=points, point_labels=labels, mask=mask)

    def key(self) -> tuple[int, int, int]:
        return (self.y0, self.x0, self.side)


def _ladder(side: float) -> int:
    """The smallest side of the ladder ``MIN_SIDE * 2^(k/4)`` (32, 39, 46, 54, 64, 77, ...) that is
    >= ``side``: a quarter octave, so the view is 2.5-3 x the box."""
    k = max(0, math.ceil(4 * math.log2(max(side, 1) / MIN_SIDE) - 1e-9))
    return int(math.ceil(MIN_SIDE * 2 ** (k / 4)))


def _origin(lo: float, hi: float, side: int, size: int) -> int:
    """First pixel of a ``side`` window around ``lo..hi`` (inclusive), snapped to a quarter side and
    moved inside ``0..size-1`` when it fits, else centred on the slice."""
    if side >= size:
        return -((side - size) // 2)
    step = max(1, side // 4)
    start = int(round(((lo + hi + 1) / 2 - side / 2) / step)) * step
    return min(max(start, 0), size - side)


def view_around(
    box: tuple[float, float, float, float], slice_shape: tuple[int, int], factor: float = FACTOR
) -> View | None:
    """The view for a box ``(x0, y0, x1, y1)`` (inclusive slice pixels) on an ``(H, W)`` slice, or ``None``
    when it would not be under half the slice's longer side (not more than a 2x closer look)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    longer = max(x1 - x0 + 1, y1 - y0 + 1, 1.0)
    side = _ladder(max(MIN_SIDE, factor * longer))
    h, w = slice_shape
    if side >= MAX_FRACTION * max(h, w):
        return None
    return View(_origin(y0, y1, side, h), _origin(x0, x1, side, w), side)


def encode_view(model, image: np.ndarray, view: View | None) -> SliceEmbedding:
    """``model``'s embedding of ``view`` of the ``(H, W)`` slice ``image`` (the whole slice when ``None``).
    The embedding remembers the view and the slice's shape, for :func:`predict`."""
    if view is None:
        return model.encode(image)
    return mark(model.encode(view.crop(image)), view, image.shape)


def mark(embedding: SliceEmbedding, view: View, slice_shape) -> SliceEmbedding:
    """Record on an embedding of ``view.crop(slice)`` which view of an ``(H, W)`` slice it holds, so that
    :func:`predict` maps prompts in and answers out; returns it."""
    # Plain numbers (not the View): embeddings saved to disk are read back with weights_only=True.
    embedding.extras[EXTRAS_KEY] = (view.key(), tuple(int(v) for v in slice_shape))
    return embedding


def predict(model, embedding: SliceEmbedding, prompt: SlicePrompt) -> SlicePrediction:
    """``model.predict`` for a prompt in slice pixels, on a whole-slice or a view embedding; the logits are
    always ``(H, W)`` of the slice."""
    seen = embedding.extras.get(EXTRAS_KEY)
    if seen is None:
        return model.predict(embedding, prompt)
    (y0, x0, side), shape = seen
    view = View(int(y0), int(x0), int(side))
    pred = model.predict(embedding, view.prompt_in(prompt))
    return SlicePrediction(view.paste(pred.logits, shape), pred.score)


def box_agreement(mask: np.ndarray, box: tuple[float, float, float, float], tolerance: float = 1.0) -> float:
    """IoU of the ``(H, W)`` mask's bounding box with ``box`` ``(x0, y0, x1, y1)`` (inclusive); 0 when empty.

    A mask edge within ``tolerance`` px of the box's edge counts as on it: one pixel is a boundary pixel's
    partial volume (a disc of radius 7 has one-pixel tips), not another answer.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    x0, y0, x1, y1 = (float(v) for v in box)

    def snap(edge: float, target: float) -> float:
        return target if abs(edge - target) <= tolerance else edge

    mx0, my0 = snap(float(xs.min()), x0), snap(float(ys.min()), y0)
    mx1, my1 = snap(float(xs.max()), x1), snap(float(ys.max()), y1)
    iw = max(0.0, min(x1, mx1) - max(x0, mx0) + 1)
    ih = max(0.0, min(y1, my1) - max(y0, my0) + 1)
    inter = iw * ih
    union = (x1 - x0 + 1) * (y1 - y0 + 1) + (mx1 - mx0 + 1) * (my1 - my0 + 1) - inter
    return float(inter / union) if union > 0 else 0.0


def choose(whole: SlicePrediction, closer: SlicePrediction, box) -> bool:
    """True when the view's answer ``closer`` fills ``box`` better than the whole slice's ``whole``.

    Where both fill it alike (a coarse blob and a precise disc span the same box) the view's answer is
    kept: it was drawn from more embedding cells across the structure.
    """
    return box_agreement(closer.mask, box) >= box_agreement(whole.mask, box)


def answer_box(
    model, whole: SliceEmbedding, view_embedding, prompt: SlicePrompt, slice_shape
) -> SlicePrediction:
    """The answer to a box ``prompt`` (slice pixels) as a key slice of Propagate gets it: from the whole
    slice's embedding ``whole``, or from the view around the box when that answer fills the box better
    (:func:`choose`). ``view_embedding(view)`` returns the view's embedding (encoded or cached; marked
    with :func:`mark`) and is called only when the box has a view. Logits are ``(H, W)`` of the slice."""
    first = predict(model, whole, prompt)
    v = view_around(prompt.box, slice_shape) if prompt.box is not None else None
    if v is None:
        return first
    closer = predict(model, view_embedding(v), prompt)
    return closer if choose(first, closer, prompt.box) else first


def views_along(mask: np.ndarray, indices) -> dict[int, View]:
    """The views a propagation through a ``(Z, Y, X)`` mask (e.g. the specialist's proposal) would look
    through on axial slices ``indices``: around each slice's mask, where there is one and a view helps."""
    out: dict[int, View] = {}
    for k in indices:
        k = int(k)
        if not 0 <= k < mask.shape[0]:
            continue
        ys, xs = np.nonzero(mask[k])
        if ys.size:
            v = view_around((xs.min(), ys.min(), xs.max(), ys.max()), mask.shape[1:])
            if v is not None:
                out[k] = v
    return out
