"""One propagation step that keeps to the target, for slices thin against the structure.

When neighbouring slices cut the structure at nearly the same place, the previous slice's mask carried
onto the next slice by registering the two images (:func:`semisam.propagation.track.carry_mask`) is a good
guess of the next mask that does not come from the model. It is used three ways:

* **prompt**: the carried mask's box (plus ``box_margin_mm``), alone and with points: a positive point
  where the carried mask is deepest, negative points on pixels just outside it that look like the
  structure (a neighbour of similar intensity, the side a leak would go);
* **refusal**: an answer whose Dice with the carried mask is below ``min_agreement`` is not the structure
  the track follows (a neighbour, a leak, a rim); when every answer is refused, the carried mask itself
  stands for the slice, with a confidence that says so, for at most ``max_carried`` slices in a row;
* **end**: the track stops when the carried region no longer looks like the structure (key-slice
  intensity model) or the images no longer match (NCC), i.e. the structure has ended.

When is a slice "thin"? Two equal discs of radius ``r`` offset by ``d`` overlap with Dice 0.68 at
``d = r / 2`` and 0.39 at ``d = r``; a surface meeting the slice plane at 45 degrees moves in-plane by one
slice spacing per slice. So with ``slice_mm <= r / 2`` (``r``: the key slice's equivalent radius)
neighbouring cross-sections overlap by more than two thirds and carrying is meaningful: the 1 mm AAL
structures are at 0.09-0.2, the lesion cases are not (lung1 0.9, brain1 0.6, breast1 0.85: 5-6.5 mm
slices), and keep the lesion step of :mod:`semisam.propagation.step`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from semisam.generalists.base import PromptableModel, SliceEmbedding, SlicePrompt
from semisam.propagation.lesion import LesionModel, candidate_region
from semisam.propagation.params import PropagationParams
from semisam.propagation.step import expand_box
from semisam.propagation.track import Carried, agreement, carry_mask
from semisam.slices import box_from_mask

#: Largest slice spacing, as a fraction of the structure's equivalent radius, for which the tracked step
#: is used (see the module docstring: discs offset by r/2 still overlap with Dice 0.68).
THIN_FRACTION = 0.5


def is_thin(lesion: LesionModel | None, pixel_mm: tuple[float, float], slice_mm: float) -> bool:
    """Whether slices ``slice_mm`` apart are thin against the key slice's structure."""
    if lesion is None:
        return False
    radius_mm = float(np.sqrt(lesion.area_px * pixel_mm[0] * pixel_mm[1] / np.pi))
    return slice_mm <= THIN_FRACTION * radius_mm


def prompt_points(
    carried: np.ndarray, image: np.ndarray, lesion: LesionModel | None, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(points (N, 2) as (x, y), labels (N,))``: one positive point at the carried mask's deepest pixel,
    and up to two negative points at the centres of the largest structure-like regions inside ``box`` that
    lie clearly outside the carried mask (>= 2 px away): where a leak into a look-alike neighbour would go.
    """
    dist = ndi.distance_transform_edt(carried)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    pts, labels = [(float(x), float(y))], [1]
    if lesion is not None:
        x0, y0, x1, y1 = box
        crop = (slice(y0, y1 + 1), slice(x0, x1 + 1))
        outside = ~ndi.binary_dilation(carried, iterations=2)[crop]
        alike = (lesion.posterior(image[crop]) > 0.5) & outside
        alike = ndi.binary_opening(alike)
        lab, n = ndi.label(alike)
        if n:
            sizes = ndi.sum(alike, lab, index=np.arange(1, n + 1))
            for i in np.argsort(sizes)[::-1][:2]:
                if sizes[i] < 4:  # a few pixels are noise, not a neighbour
                    break
                comp = lab == i + 1
                d = ndi.distance_transform_edt(comp)
                cy, cx = np.unravel_index(int(np.argmax(d)), d.shape)
                pts.append((float(cx + x0), float(cy + y0)))
                labels.append(0)
    return np.array(pts, np.float32), np.array(labels, np.int64)


def follow_one(
    model: PromptableModel | Any,
    embedding: SliceEmbedding,
    image: np.ndarray,
    prev_image: np.ndarray,
    prev,
    lesion: LesionModel | None,
    params: PropagationParams,
    pixel_mm: tuple[float, float],
    slice_mm: float,
    slice_index: int,
    trace: list | None = None,
    outward: bool = False,
):
    """Segment slice ``slice_index`` from the previous slice's result by carrying it (see module doc).

    ``outward``: the track runs beyond the outermost key slice (no key slice ahead bounds it). Then the
    answer must also look like the *key slice's* structure (key-slice intensity model, nearest-mean
    boundary): the neighbour-to-neighbour model alone follows any tissue that changes gradually (on 1 mm
    T1 a track from the thalamus ran 115 slices through the brainstem with it, 40 with the key model).

    Args are those of :func:`semisam.propagation.step.propagate_one`, plus ``prev_image``: the previous
    slice's ``(H, W)`` windowed image. Returns a :class:`~semisam.propagation.step.StepOutcome`.
    """
    # Long: one slice step of a thin-slice track (register, place the prompt, ask, refuse or accept); its branches share the step's state and read best together.
    from semisam.propagation.step import SliceResult, StepOutcome

    prev_mask = prev.mask
    if not prev_mask.any():
        return StepOutcome(None, "previous slice empty")
    max_shift = max(1, int(round(params.search_mm(slice_mm) / min(pixel_mm))))
    carried: Carried = carry_mask(prev_image, image, prev_mask, max_shift)
    if not carried.mask.any():
        return StepOutcome(None, "the carried mask left the slice")
    my, mx = params.box_margin_mm / pixel_mm[0], params.box_margin_mm / pixel_mm[1]
    cbox = expand_box(box_from_mask(carried.mask), mx, my, image.shape)
    pbox = expand_box(box_from_mask(prev_mask), mx, my, image.shape)
    points, labels = prompt_points(carried.mask, image, lesion, cbox)
    prompts = {
        "carried": SlicePrompt(box=tuple(float(v) for v in cbox)),  # type: ignore[arg-type]
        "carried+points": SlicePrompt(box=tuple(float(v) for v in cbox), points=points, point_labels=labels),  # type: ignore[arg-type]
    }
    if pbox != cbox:
        prompts["prev"] = SlicePrompt(box=tuple(float(v) for v in pbox))  # type: ignore[arg-type]
    if lesion is not None:
        # The structure-like region grown from the carried footprint: lets the box grow back when the
        # model's previous answer was smaller than the structure (boxes from masks only ever shrink).
        sy, sx = max_shift * pixel_mm[1] / pixel_mm[0], max_shift
        region = candidate_region(lesion, image, carried.mask, expand_box(cbox, sx, sy, image.shape))
        rbox = box_from_mask(region)
        if rbox is not None and tuple(rbox) not in (cbox, pbox):
            prompts["region"] = SlicePrompt(box=tuple(float(v) for v in rbox))  # type: ignore[arg-type]
    if lesion is not None:
        # Appearance drifts along a long structure (bias field, partial volume, the structure itself):
        # on a 1 mm caudate the key slice's model gives its own track 0.7 near the key slice and 0.49
        # seventeen slices away. Judge each slice against its neighbour instead: the previous slice's
        # mask and image (the carried-mask agreement keeps this local model on the target).
        key_lesion = lesion
        lesion = LesionModel.fit(prev_image, prev_mask) or lesion
    carried_like = lesion.likeness(image, carried.mask) if lesion is not None else 1.0
    # On thin slices the intensity test compares with the key slice's own structure and surroundings
    # (nearest mean, LesionModel.boundary) but never asks for more than min_likeness.
    min_like = min(params.min_likeness, lesion.boundary) if lesion is not None else 0.0
    best, best_q = None, -np.inf
    for name, prompt in prompts.items():
        pred = model.predict(embedding, prompt)
        m = pred.mask
        like = lesion.likeness(image, m) if lesion is not None else 1.0
        agree = agreement(m, carried.mask, max_shift)
        if trace is not None:
            trace.append((name, prompt.box, pred.score, like, m, agree))
        # Among the answers the carried mask vouches for (agreement >= min_agreement) and that look like
        # the structure, the model's own predicted IoU decides; agreement breaks near-ties.
        q = pred.score + 0.05 * agree
        if agree < params.min_agreement or like < min_like:
            q -= 2.0
        if q > best_q:
            best_q = q
            best = SliceResult(
                slice_index, pred.logits.astype(np.float32), pred.score, like, prev.key, prompt, name, agree
            )
    assert best is not None
    carried_run = prev.carried_run if getattr(prev, "candidate", "") == "carried-only" else 0
    if best.agreement < params.min_agreement or best.likeness < min_like:
        # Every answer is refused: the model segments something else here. The carried mask stands for
        # the slice while the images still show the structure; its confidence is that of the refused
        # answer (score x agreement < min_agreement), so the review order shows it early.
        if carried_like < min_like:
            return StepOutcome(best, f"structure ends: carried region likeness {carried_like:.2f}")
        if outward and lesion is not None:
            key_like = key_lesion.likeness(image, carried.mask)
            if key_like < min(params.min_likeness, key_lesion.boundary):
                return StepOutcome(best, f"structure ends: unlike the key slice's structure ({key_like:.2f})")
        if carried.ncc < params.min_ncc:
            return StepOutcome(best, f"structure ends: images no longer match (NCC {carried.ncc:.2f})")
        if carried_run >= params.max_carried(slice_mm):
            return StepOutcome(best, f"{carried_run} slices in a row without an answer that agrees")
        logits = np.where(carried.mask, 4.0, -4.0).astype(np.float32)
        res = SliceResult(
            slice_index,
            logits,
            float(best.score * best.agreement),
            carried_like,
            prev.key,
            best.prompt,
            "carried-only",
            best.agreement,
        )
        res.carried_run = carried_run + 1
        return StepOutcome(res, None)
    if outward and lesion is not None:
        key_like = key_lesion.likeness(image, best.mask)
        if key_like < min(params.min_likeness, key_lesion.boundary):
            return StepOutcome(best, f"structure ends: unlike the key slice's structure ({key_like:.2f})")
    return StepOutcome(best, _end_reason(best, prev, params, carried_like))


def _end_reason(res, prev, params: PropagationParams, carried_like: float) -> str | None:
    area = int(res.mask.sum())
    if area == 0:
        return "empty mask"
    if res.score < params.min_score:
        return f"predicted IoU {res.score:.2f} < {params.min_score}"
    prev_area = max(1, prev.area)
    grow_ref = prev_area
    if getattr(prev, "candidate", "") == "key" and prev.prompt.box is not None:
        # Growth out of the key slice is judged against what the user's box says the structure is: the
        # ellipse inscribed in the box, when the model's answer covers less (on a 1 mm pallidum the key
        # answer covered 54 of 174 label pixels and the right answer on the next slice "grew 4x").
        # Shrinking is judged against the key answer itself, the mask the track follows: a model that
        # answers the box with a small part of the structure answers the next slices alike, and judged
        # against the box those answers "shrank 4-6x" on the first step (1 mm AAL caudate, insula,
        # pallidum: 5 of 14 one-box tracks looked at ended there, on their first slice). Over 3 jitter
        # draws of the 7 benchmark structures the one-box median ratio to the oracle moved 0.52 -> 0.53
        # and its worst 0.02 -> 0.08 on the structures not developed on; one draw alone showed 0.41 -> 0.51.
        x0, y0, x1, y1 = prev.prompt.box
        grow_ref = max(prev_area, int(np.pi / 4 * (x1 - x0 + 1) * (y1 - y0 + 1)))
    if area > params.max_area_ratio * grow_ref:
        return f"area grew {area / grow_ref:.1f}x > {params.max_area_ratio}x"
    if area * params.max_area_ratio < prev_area:
        return f"area shrank {prev_area / area:.1f}x > {params.max_area_ratio}x"
    return None
