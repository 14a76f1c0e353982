"""The prompts a key slice asks a 2D generalist: one per box, each with the clicks meant for it.

A key slice may hold several boxes (the left and the right caudate, boxed apart) and clicks. A positive
click goes to the box nearest it (a click meant for the left caudate must not pull the right one's answer
across the ventricles); a negative click goes to every box that holds it (where two boxes overlap, the
spot must leave both answers, since the slice's mask is their union), else to the nearest. With a single
box every click goes to it, outside it too (a click that extends the box).

A slice with clicks and no box is anchored on the mask it already holds (a track's, or the segment's own
slice): one box around each part, parts whose boxes grown by the step's margin touch boxed together (the
rule that groups a key slice's boxes into lanes), so one box never spans the tissue between two parts
and no part is dropped. A positive click outside every such grown box marks a part the mask missed: it
gets a box of the nearest part's size centred on it (the model answers boxes as it was trained to;
LiteMedSAM answers a click alone with next to nothing: 0.00 and 0.01 Dice on two whole-head caudates).
A slice with clicks and nothing to anchor them (a track that stopped short of it; a one-shot run's
slice of clicks) sizes those boxes on the nearest slice that shows the structure.

Measured (real LiteMedSAM, whole-head development subjects 0-5 of the caudate task, one caudate boxed on
its largest slice, then a click with no box on the other caudate three slices away): the other caudate's
Dice on that slice 0.0 before these rules on all six (the click went to the boxed part's box or was
answered alone), 0.25-0.72 (mean 0.51) with them.

Coordinates are slice pixels: boxes ``(x0, y0, x1, y1)`` inclusive, points ``(x, y)`` = (column, row).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from semisam.generalists.base import SlicePrompt
from semisam.propagation.step import expand_box, union_box

Box = tuple[float, float, float, float]


def group_boxes(grown: list[tuple[int, ...]]) -> list[int]:
    """A group id per box: boxes that overlap, directly or through others, share one (the id of the first
    box of the group), whatever their order."""
    group = list(range(len(grown)))
    for i in range(len(grown)):
        for j in range(i):
            if _overlap(grown[i], grown[j]):
                old, new = group[i], group[j]
                group = [new if g == old else g for g in group]
    return group


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


#: at most this many anchor boxes on one slice (its largest parts): a hand-painted mask of scattered specks
#: must not turn one click into hundreds of model calls
MAX_ANCHORS = 16
#: parts smaller than this (pixels) anchor nothing while a larger part is there: a speck is not a structure
MIN_ANCHOR_PX = 3


def anchor_boxes(mask2d: np.ndarray, margin_px: tuple[float, float]) -> list[tuple[int, int, int, int]]:
    """A tight box around each part of ``mask2d`` ``(Y, X)`` (8-connected), parts whose boxes grown by
    ``margin_px`` ``(mx, my)`` touch boxed together, largest first (at most :data:`MAX_ANCHORS`; groups
    under :data:`MIN_ANCHOR_PX` pixels only when nothing larger is there); ``[]`` for an empty mask."""
    comp, n = ndi.label(np.asarray(mask2d) > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    sizes = np.bincount(comp.ravel())[1:]
    # one pass over the slice for every part's box (not one comparison of the whole slice per part)
    boxes = [(sx.start, sy.start, sx.stop - 1, sy.stop - 1) for sy, sx in ndi.find_objects(comp)]
    grown = [expand_box(b, margin_px[0], margin_px[1], comp.shape) for b in boxes]  # type: ignore[arg-type]
    merged: dict[int, tuple[tuple[int, int, int, int], int]] = {}
    for b, size, g in zip(boxes, sizes, group_boxes(grown), strict=True):
        box, area = merged.get(g, (b, 0))
        merged[g] = (union_box(box, b), area + int(size))  # type: ignore[arg-type]
    ranked = sorted(merged.values(), key=lambda ba: -ba[1])
    kept = [b for b, area in ranked if area >= MIN_ANCHOR_PX] or [ranked[0][0]]
    return kept[:MAX_ANCHORS]


def _distances(boxes: list[Box], points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(to the box, to its centre)``, each ``(N, B)`` pixels; 0 to a box for a point inside it."""
    b = np.asarray(boxes, dtype=np.float64)  # (B, 4)
    x, y = points[:, 0:1].astype(np.float64), points[:, 1:2].astype(np.float64)  # (N, 1)
    dx = np.maximum(np.maximum(b[None, :, 0] - x, x - b[None, :, 2]), 0.0)
    dy = np.maximum(np.maximum(b[None, :, 1] - y, y - b[None, :, 3]), 0.0)
    centre = np.hypot(x - (b[None, :, 0] + b[None, :, 2]) / 2, y - (b[None, :, 1] + b[None, :, 3]) / 2)
    return np.hypot(dx, dy), centre


def points_per_box(
    boxes: list[Box], points: np.ndarray | None, labels: np.ndarray | None
) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    """``(points (n, 2), labels (n,))`` for each of ``boxes`` (``(None, None)`` where none), by the rule
    in the module docstring."""
    if points is None or labels is None or not len(points):
        return [(None, None)] * len(boxes)
    to_box, to_centre = _distances(boxes, points)
    nearest = np.lexsort((to_centre, to_box), axis=1)[:, 0]  # (N,): nearest box, ties to the nearer centre
    out: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    for i in range(len(boxes)):
        mine = (nearest == i) | ((labels == 0) & (to_box[:, i] == 0))
        out.append((points[mine], labels[mine]) if mine.any() else (None, None))
    return out


def _click_boxes(
    anchors: list[Box],
    points: np.ndarray,
    labels: np.ndarray,
    margin_px: tuple[float, float],
    shape,
    outside_only: bool = True,
    room: int = MAX_ANCHORS,
) -> list[Box]:
    """A box of the nearest anchor's size centred on each positive click (only those outside every anchor
    grown by ``margin_px`` if ``outside_only``), inside a slice of ``shape`` ``(H, W)``. A click inside a
    box already made joins it, and at most ``room`` boxes are made (the clicks beyond go to the nearest
    box): many clicks on one part make one box, and no number of clicks makes unbounded model calls."""
    grown = [expand_box(tuple(int(round(v)) for v in b), margin_px[0], margin_px[1], shape) for b in anchors]
    to_grown, _ = _distances([tuple(float(v) for v in g) for g in grown], points)
    _, to_centre = _distances(anchors, points)
    h, w = shape
    out: list[Box] = []
    outside = to_grown.min(axis=1) > 0 if outside_only else np.ones(len(points), bool)
    for i in np.flatnonzero((labels == 1) & outside):
        x, y = float(points[i, 0]), float(points[i, 1])
        if len(out) >= room or any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in out):
            continue
        x0, y0, x1, y1 = anchors[int(np.argmin(to_centre[i]))]
        hx, hy = (x1 - x0) / 2, (y1 - y0) / 2
        out.append((max(0.0, x - hx), max(0.0, y - hy), min(w - 1.0, x + hx), min(h - 1.0, y + hy)))
    return out


def key_prompts(
    boxes: list[Box],
    points: np.ndarray | None,
    labels: np.ndarray | None,
    previous: np.ndarray | None,
    margin_px: tuple[float, float],
    sizes: list[Box] | None = None,
    shape: tuple[int, int] | None = None,
) -> list[SlicePrompt]:
    """The prompts to ask on a key slice (module docstring).

    Args:
        boxes: the user's boxes on the slice.
        points: ``(N, 2)`` clicks ``(x, y)``, or ``None``; ``labels`` ``(N,)`` 1 positive, 0 negative.
        previous: ``(H, W)`` the slice's mask so far, anchoring clicks on a slice without a box; or ``None``.
        margin_px: ``(mx, my)``, the step's box margin in pixels (what groups parts).
        sizes: boxes of the structure on the nearest slice that shows it, when ``previous`` holds
            nothing: each positive click gets a box of the size of the nearest of them, centred on it.
        shape: ``(H, W)`` of the slice (needed with ``sizes``).

    Returns:
        One :class:`SlicePrompt` per box; clicks alone where there is neither box nor mask to anchor them;
        ``[]`` for negative clicks alone on an empty slice (the structure is absent there).
    """
    if not boxes and previous is not None:
        boxes = [tuple(float(v) for v in b) for b in anchor_boxes(previous, margin_px)]  # type: ignore[misc]
        if boxes and points is not None and labels is not None:
            room = MAX_ANCHORS - len(boxes)
            boxes = boxes + _click_boxes(boxes, points, labels, margin_px, np.shape(previous), room=room)
    if not boxes and sizes and points is not None and labels is not None and shape is not None:
        boxes = _click_boxes(sizes, points, labels, margin_px, shape, outside_only=False)
    if boxes:
        return [
            SlicePrompt(box=b, points=bp, point_labels=bl)
            for b, (bp, bl) in zip(boxes, points_per_box(boxes, points, labels), strict=True)
        ]
    if labels is not None and labels.any():
        return [SlicePrompt(points=points, point_labels=labels)]
    return []
