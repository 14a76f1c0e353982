"""Prompts for a generalist made from the specialist's OWN prediction on a slice (never from a label).

For one slice and one class, :func:`prompts_from_prediction` takes the specialist's foreground
probability ``prob`` ``(H, W)`` and returns one prompt list per round; each round has one
:class:`~semisam.generalists.base.SlicePrompt` per predicted connected component:

* **box**: the component's bounding box grown by ``margin`` (``max(margin_px, margin_frac x size)``
  pixels each side, clipped to the slice): SAM-family models are trained with loose boxes;
* **positive points** (rounds >= 1): ``n_pos`` pixels drawn from the component's confident interior
  (``prob >= hi``), weighted by the distance to the component's border so they sit well inside;
* **negative points** (rounds >= 1): ``n_neg`` pixels drawn inside the box from where the specialist
  is confidently background (``prob <= lo``) within ``ring_px`` of the component, or, when there is
  none, from where it is uncertain (``lo < prob < hi``) outside the thresholded component.

Round 0 is the box alone; later rounds add freshly drawn points, so the spread of the generalist's
answers across rounds measures how much its answer depends on the prompt (a confidence cue). No mask
prompt is ever passed, so nothing of one sample can leak into another's answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from semisam.generalists.base import SlicePrompt


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are drawn from a prediction (pixels are slice pixels on the model grid).

    Attributes:
        threshold: probability above which a pixel is predicted foreground.
        hi, lo: confident foreground / background probability limits.
        min_area: components smaller than this (pixels) get no prompt.
        max_components: at most this many (largest) components per slice and class.
        margin_px, margin_frac: box margin ``max(margin_px, margin_frac * max(box h, box w))``.
        rounds: prompt rounds (round 0: box only; others: box + points).
        n_pos, n_neg: points per component in rounds >= 1.
        ring_px: how far outside the component negative points are looked for.
        max_fg_fraction: a slice where more than this share is predicted foreground gets no prompt (an
            untrained specialist floods slices; such a prediction says nothing about where to look).
        min_voxels_3d, max_components_3d: before slicing, only the ``max_components_3d`` largest 3D
            connected components of the prediction with at least ``min_voxels_3d`` voxels are kept
            (:func:`keep_main_components`): speckle far from the structure prompts nothing and costs no
            encoder run.
        min_rel_volume_3d: a kept 3D component also has at least this share of the largest one's volume
            (a structure and its mirror image, e.g. left/right pallidum, are of similar size; a weak
            specialist's stray blobs are a few per cent of its main answer).
        min_slices_3d: a kept 3D component spans at least this many slices (at most the volume's
            depth): a structure is coherent across slices, a blob on one slice of a weak specialist is not.
        views: a prompt's box is answered as Propagate answers a key slice: on the whole slice, and
            through a closer view around it where that fills the box better
            (:func:`semisam.generalists.view.answer_box`; a structure of 15 px is four cells of the whole
            slice's embedding). ``False``: the whole slice only.
    """

    threshold: float = 0.5
    hi: float = 0.9
    lo: float = 0.1
    min_area: int = 6
    max_components: int = 4
    margin_px: int = 3
    margin_frac: float = 0.1
    rounds: int = 3
    n_pos: int = 2
    n_neg: int = 1
    ring_px: int = 4
    max_fg_fraction: float = 0.3
    min_voxels_3d: int = 30
    max_components_3d: int = 4
    min_rel_volume_3d: float = 0.25
    min_slices_3d: int = 2
    views: bool = True

    def to_json(self) -> dict:
        return dict(self.__dict__)


def main_components_mask(prob: np.ndarray, cfg: PromptConfig) -> np.ndarray:
    """``(Z, Y, X)`` bool: the main 3D components of ``prob >= threshold`` (see :class:`PromptConfig`).

    Kept: at most ``max_components_3d`` largest components with ``>= min_voxels_3d`` voxels,
    ``>= min_rel_volume_3d`` x the largest one's volume and spanning ``>= min(min_slices_3d, Z)`` slices.
    """
    lab, n = ndi.label(prob >= cfg.threshold)
    if n == 0:
        return np.zeros(prob.shape, dtype=bool)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(float)
    # Slices each component spans: its bounding box along axis 0 (one pass over the labels).
    spans = np.array([box[0].stop - box[0].start for box in ndi.find_objects(lab)])
    need_slices = min(int(cfg.min_slices_3d), prob.shape[0])
    big = float(sizes.max())
    order = [
        int(i) + 1
        for i in np.argsort(-sizes, kind="stable")
        if sizes[i] >= cfg.min_voxels_3d
        and sizes[i] >= cfg.min_rel_volume_3d * big
        and spans[i] >= need_slices
    ][: cfg.max_components_3d]
    return np.isin(lab, order)


def keep_main_components(prob: np.ndarray, cfg: PromptConfig) -> np.ndarray:
    """``prob`` ``(Z, Y, X)`` with everything outside :func:`main_components_mask` set to 0."""
    return np.where(main_components_mask(prob, cfg), prob, 0.0).astype(prob.dtype)


def coherence(prob: np.ndarray, cfg: PromptConfig, main: np.ndarray | None = None) -> float:
    """Share of the predicted foreground voxels (``prob >= threshold``) inside the main 3D components.

    1.0 for a specialist that localises (one or a few solid structures); low for one that still
    predicts scattered specks. 1.0 when nothing is predicted (there is then nothing to prompt anyway).
    ``main``: :func:`main_components_mask` of ``prob`` when the caller has it (the 3D labelling is the
    costly part).
    """
    fg = prob >= cfg.threshold
    total = int(fg.sum())
    if total == 0:
        return 1.0
    if main is None:
        main = main_components_mask(prob, cfg)
    return float(main.sum()) / total


def _draw(rng: np.random.Generator, mask: np.ndarray, n: int, weight: np.ndarray | None = None) -> np.ndarray:
    """``n`` distinct ``(x, y)`` pixels of ``mask`` (fewer when it has fewer), optionally weighted."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0 or n <= 0:
        return np.zeros((0, 2), dtype=np.float64)
    p = None
    if weight is not None:
        w = weight[ys, xs].astype(np.float64)
        if w.sum() > 0:
            p = w / w.sum()
    idx = rng.choice(len(ys), size=min(n, len(ys)), replace=False, p=p)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float64)


def components(prob: np.ndarray, cfg: PromptConfig) -> list[np.ndarray]:
    """Boolean masks of the predicted components (largest first) that are big enough to prompt."""
    fg = prob >= cfg.threshold
    lab, n = ndi.label(fg)
    if n == 0:
        return []
    areas = ndi.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    order = [int(i) + 1 for i in np.argsort(-areas) if areas[i] >= cfg.min_area]
    return [lab == i for i in order[: cfg.max_components]]


def _box(comp: np.ndarray, shape: tuple[int, int], cfg: PromptConfig) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(comp)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    m = max(cfg.margin_px, int(round(cfg.margin_frac * max(y1 - y0 + 1, x1 - x0 + 1))))
    h, w = shape
    return (
        float(max(0, x0 - m)),
        float(max(0, y0 - m)),
        float(min(w - 1, x1 + m)),
        float(min(h - 1, y1 + m)),
    )


def prompts_from_prediction(
    prob: np.ndarray, cfg: PromptConfig, rng: np.random.Generator
) -> list[list[SlicePrompt]]:
    """Prompt rounds for one slice: ``[round][component] -> SlicePrompt`` (``[]`` when nothing is predicted).

    Args:
        prob: ``(H, W)`` the specialist's probability of this class.
        cfg: sampling settings.
        rng: the generator drawing the points (seed it per case/slice for reproducible prompts).
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"prob must be one slice (H, W), got shape {prob.shape}")
    if float((prob >= cfg.threshold).mean()) > cfg.max_fg_fraction:
        return []
    comps = components(prob, cfg)
    if not comps:
        return []
    shape = prob.shape
    boxes = [_box(c, shape, cfg) for c in comps]
    fg_any = prob >= cfg.threshold
    out: list[list[SlicePrompt]] = []
    for r in range(max(1, cfg.rounds)):
        this_round = []
        for comp, box in zip(comps, boxes, strict=True):
            if r == 0:
                this_round.append(SlicePrompt(box=box))
                continue
            inner = comp & (prob >= cfg.hi)
            if not inner.any():
                inner = comp
            depth = ndi.distance_transform_edt(comp)
            pos = _draw(rng, inner, cfg.n_pos, depth)
            x0, y0, x1, y1 = (int(v) for v in box)
            in_box = np.zeros(shape, dtype=bool)
            in_box[y0 : y1 + 1, x0 : x1 + 1] = True
            ring = ndi.binary_dilation(comp, iterations=cfg.ring_px) & ~fg_any & in_box
            neg_pool = ring & (prob <= cfg.lo)
            if not neg_pool.any():
                neg_pool = ring & (prob < cfg.hi)
            neg = _draw(rng, neg_pool, cfg.n_neg)
            pts = np.concatenate([pos, neg]) if len(neg) else pos
            labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64)
            this_round.append(
                SlicePrompt(
                    box=box, points=pts if len(pts) else None, point_labels=labels if len(pts) else None
                )
            )
        out.append(this_round)
    return out
