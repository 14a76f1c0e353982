"""What the generalist's decoder is taught: one prompt on one slice of a labeled case, and its target.

For every axial slice of a case's structure, each connected part (at least :data:`MIN_PART_PX` pixels)
gives a box as a user draws it: the part's tight box with each side moved by up to ``jitter`` of its
length (at least one pixel), since LiteMedSAM was trained on perturbed boxes and users draw loose ones.
The box is taught twice, as the product asks it (:mod:`semisam.generalists.view`): on the whole slice
and through the view around it. Slices just beyond the structure's ends (:data:`EMPTY_NEIGHBOURS` on each
side) are taught with the nearest structure slice's box and an **empty** target: a propagation track
asks exactly that when the structure has ended, and a frozen model answers it with a mask. Given the
slices' intensities, every :data:`LOOKALIKE_EVERY`-th structure slice also gives a **look-alike** box: the
part's box moved off the structure, near it, onto the tissue whose intensities look most like the part's
(:func:`lookalike_box`), with an empty target: where a track slides onto neighbouring tissue, or a
specialist's false positive prompts the generalist, "not here" is the answer.

With ``track_margin_px``, every structure slice with a structure neighbour also gives a **track** box, as a
propagation track asks it: the neighbour's part box (the side drawn from ``rng``) grown by the track's
margin, jittered, on this slice, whose target is this slice's parts that the box reaches. Without them the
decoder is taught "not here" for boxes that do not fit the slice (the ends, the look-alikes) and never a
neighbour's box over a structure that goes on, so its tracks ended early. Whole-head subjects 8-15
(``propagation_whole.py``; adapted on subjects 0-3), 1-box Dice frozen / adapted without / with track boxes:
thalamus 0.540 / 0.497 / 0.599, caudate 0.416 / 0.241 / 0.664; 3 boxes 0.585 / 0.721 / 0.745 and
0.536 / 0.522 / 0.752.
Track boxes are taught on the whole slice only, as tracks ask them (:mod:`semisam.propagation.engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from semisam.generalists.view import View, view_around

#: parts smaller than this are partial-volume specks, not something a user boxes
MIN_PART_PX = 4
#: empty slices taught on each side of the structure
EMPTY_NEIGHBOURS = 2
#: a box side moves by up to this fraction of its length (at least one pixel)
JITTER = 0.1
#: one look-alike box per this many structure slices of a case
LOOKALIKE_EVERY = 2
#: a look-alike box stays this many pixels off the structure
LOOKALIKE_MARGIN = 2
#: and its centre within this many box sizes of the part's (the tissue a track can slide onto)
LOOKALIKE_REACH = 3.0


@dataclass(frozen=True)
class Sample:
    """One prompt on one slice.

    Attributes:
        case: the case's index in the caller's list.
        slice: axial slice index ``k`` (array axis 0).
        box: ``(x0, y0, x1, y1)`` inclusive slice pixels.
        view: the part of the slice the model sees (``None``: the whole slice).
        target: ``(H, W)`` bool target on the whole slice (all False on an empty neighbour or a look-alike).
        kind: ``"structure"`` (a part's box), ``"beyond"`` (an empty slice beyond the structure's end),
            ``"lookalike"`` (a box on look-alike tissue off the structure) or ``"track"`` (a neighbouring
            slice's part box, grown by a track's margin).
    """

    case: int
    slice: int
    box: tuple[int, int, int, int]
    view: View | None
    target: np.ndarray
    kind: str = "structure"

    @property
    def empty(self) -> bool:
        return not self.target.any()


def jitter_box(box, shape: tuple[int, int], rng: np.random.Generator, jitter: float = JITTER):
    """``box`` with each side moved by up to ``jitter`` x its side length (>= 1 px), inside ``shape``."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = shape
    jx, jy = max(1, round(jitter * (x1 - x0 + 1))), max(1, round(jitter * (y1 - y0 + 1)))
    d = rng.integers(-1, 2, 4) * rng.integers(0, [jx, jy, jx, jy], endpoint=True)
    nx0, ny0 = int(np.clip(x0 + d[0], 0, w - 1)), int(np.clip(y0 + d[1], 0, h - 1))
    nx1, ny1 = int(np.clip(x1 + d[2], nx0, w - 1)), int(np.clip(y1 + d[3], ny0, h - 1))
    return nx0, ny0, nx1, ny1


def parts(label2d: np.ndarray) -> Iterator[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """``(mask, tight box)`` of each connected part of at least :data:`MIN_PART_PX` pixels."""
    lab, n = ndi.label(label2d)
    for i in range(1, n + 1):
        part = lab == i
        if part.sum() < MIN_PART_PX:
            continue
        ys, xs = np.nonzero(part)
        yield part, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def _box_sums(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sum of ``a`` over every ``h x w`` window, indexed by the window's top-left ``(row, column)``."""
    c = np.pad(np.cumsum(np.cumsum(a, axis=0, dtype=np.float64), axis=1), ((1, 0), (1, 0)))
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def lookalike_box(image2d: np.ndarray, label2d: np.ndarray, tight) -> tuple[int, int, int, int] | None:
    """A box of the ``tight`` box's size (``(x0, y0, x1, y1)``, inclusive) at least :data:`LOOKALIKE_MARGIN`
    px off the structure (``label2d``), its centre within :data:`LOOKALIKE_REACH` box sizes of the part's,
    whose pixels' mean and spread of intensity (``image2d``) are nearest the part box's; ``None`` when no
    such place fits in the slice."""
    x0, y0, x1, y1 = (int(v) for v in tight)
    h, w = y1 - y0 + 1, x1 - x0 + 1
    rows, cols = image2d.shape
    if h >= rows or w >= cols:
        return None
    img = np.asarray(image2d, np.float64)
    n = float(h * w)
    mean = _box_sums(img, h, w) / n
    std = np.sqrt(np.maximum(_box_sums(img * img, h, w) / n - mean**2, 0.0))
    near = ndi.binary_dilation(np.asarray(label2d) > 0, iterations=LOOKALIKE_MARGIN)
    free = _box_sums(near.astype(np.float64), h, w) < 0.5
    ty, tx = np.mgrid[0 : rows - h + 1, 0 : cols - w + 1]
    free &= (np.abs(ty - y0) <= LOOKALIKE_REACH * h) & (np.abs(tx - x0) <= LOOKALIKE_REACH * w)
    if not free.any():
        return None
    cost = np.abs(mean - mean[y0, x0]) + np.abs(std - std[y0, x0])
    cost[~free] = np.inf
    r, c = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return int(c), int(r), int(c) + w - 1, int(r) + h - 1


def case_samples(
    case: int,
    label: np.ndarray,
    rng: np.random.Generator,
    jitter: float = JITTER,
    views: bool = True,
    image=None,
    avoid: np.ndarray | None = None,
    track_margin_px: tuple[float, float] | None = None,
) -> list[Sample]:
    """Every sample of one case: ``label`` is the ``(Z, Y, X)`` structure mask (axial slices are ``[k]``);
    ``image(k)``, when given, the ``(Y, X)`` slice in [0, 1] the model sees (for the look-alike boxes);
    ``avoid``, ``(Z, Y, X)``, what no look-alike box may cover besides the structure (another labeled
    structure: the tissue most like one thalamus is often the other one, labeled as another class);
    ``track_margin_px``, ``(x, y)`` pixels, the margin a track adds around a neighbour's mask box (``None``:
    no track boxes).

    The look-alike boxes, then the track boxes, come last, after every other box's jitter is drawn from
    ``rng``: with or without them, the structure's and the ends' boxes are the same."""
    label = np.asarray(label) > 0
    shape = label.shape[1:]
    on = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
    out: list[Sample] = []

    def add(k: int, box, target: np.ndarray, kind: str) -> None:
        out.append(Sample(case, int(k), box, None, target, kind))
        v = view_around(box, shape) if views else None
        if v is not None:
            out.append(Sample(case, int(k), box, v, target, kind))

    found_at = {int(k): list(parts(label[k])) for k in on}
    for k in on:
        for part, tight in found_at[int(k)]:
            add(k, jitter_box(tight, shape, rng, jitter), part, "structure")
    if on.size:
        empty = np.zeros(shape, bool)
        for end, step in ((int(on.min()), -1), (int(on.max()), 1)):
            tight = next(iter(parts(label[end])), (None, None))[1]
            if tight is None:
                continue
            for d in range(1, EMPTY_NEIGHBOURS + 1):
                k = end + step * d
                if 0 <= k < label.shape[0] and not label[k].any():
                    add(k, jitter_box(tight, shape, rng, jitter), empty, "beyond")
    if image is not None:
        for i, k in enumerate(on):
            found = found_at[int(k)]
            if not found or i % LOOKALIKE_EVERY != LOOKALIKE_EVERY // 2:
                continue
            off = label[k] if avoid is None else label[k] | (np.asarray(avoid[k]) > 0)
            alike = lookalike_box(image(int(k)), off, max(found, key=lambda pb: int(pb[0].sum()))[1])
            if alike is None:
                continue
            box = jitter_box(alike, shape, rng, jitter)
            x0, y0, x1, y1 = box
            if off[y0 : y1 + 1, x0 : x1 + 1].any():  # the jitter reached the structure: the box as found
                box = alike
            add(k, box, np.zeros(shape, bool), "lookalike")
    if track_margin_px is not None:
        out += _track_samples(case, label, found_at, track_margin_px, rng, jitter)
    return out


def _track_samples(case, label, found_at, margin_px, rng, jitter) -> list[Sample]:
    """One track box per part of each structure slice that has a structure neighbour (see module doc)."""
    from semisam.propagation.step import expand_box

    shape = label.shape[1:]
    out = []
    for k in sorted(found_at):
        sides = [j for j in (k - 1, k + 1) if found_at.get(j)]
        if not sides:
            continue
        j = sides[int(rng.integers(len(sides)))]
        lab, _ = ndi.label(label[k])
        for _, tight in found_at[j]:
            box = jitter_box(expand_box(tight, margin_px[0], margin_px[1], shape), shape, rng, jitter)
            x0, y0, x1, y1 = box
            reached = np.unique(lab[y0 : y1 + 1, x0 : x1 + 1])
            target = np.isin(lab, reached[reached > 0])
            # A box that reaches no part here is the case the track's carried mask answers (registration).
            if target.sum() >= MIN_PART_PX:
                out.append(Sample(case, int(k), box, None, target, "track"))
    return out
