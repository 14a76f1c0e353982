"""How a propagation is written into a segment that already holds a mask: fix what is wrong, keep the rest.

A user who places a box on one bad slice of a mostly good mask (the specialist's proposal, an earlier
propagation, Segment Editor edits) wants that slice fixed, not the whole structure re-segmented. The
propagation engine answers for every slice of its range, so writing its answer over the whole range
(:func:`semisam.slices.merge_in_range`, rule ``"replace"``) throws away slices that were right and
often lowers the Dice.

Rule ``"keep_agreeing"`` (:func:`merge_keep_agreeing`): along the slice axis, walking outward from each
key slice (a prompted slice) inside the propagated range ``lo..hi``, the new answer replaces the
segment's slice until the first slice where the new answer *agrees* with what is already there; from
that slice on, in that direction, the segment keeps its voxels. A key slice is always replaced (the user
prompted it: that is where they said the mask is wrong). Between two key slices both walks run, and a
slice reached by either is replaced. A segment with nothing in ``lo..hi`` gets the whole propagation,
exactly as ``"replace"`` does.

*Agrees* means: both slices are empty, or their 2D Dice is at least :data:`AGREE_DICE` (0.8). Why 0.8:
two careful manual outlines of the same structure on the same slice by different experts typically reach
a Dice of 0.8-0.9 (deep grey matter, organs, lesions), and Dice > 0.7 is the usual threshold of
"excellent agreement" between segmentations (Zijdenbos et al., IEEE TMI 1994). A new answer that differs
from the existing slice by no more than two experts differ from each other confirms that slice; it
gives no reason to overwrite it. Where they differ by more, the propagation is carrying a real change
(the user's correction spreading to neighbouring slices) and keeps going. The value was fixed from this
reasoning, not fitted on a dataset.

Rule ``"key_slices"`` (:func:`merge_key_slices`) writes the prompted slices only: what a propagation with
*Propagate across slices* off (``propagate(state, across_slices=False)``) answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from semisam.metrics import dice
from semisam.slices import axis_index, merge_in_range, put_slice, take_slice

#: 2D Dice at or above which a propagated slice agrees with the existing one (see the module docstring).
AGREE_DICE = 0.8


class MergeRule(StrEnum):
    """How :func:`write_propagation` writes a propagation into an existing segment."""

    #: Replace from each key slice outward until the new answer agrees with the segment; keep the rest.
    KEEP_AGREEING = "keep_agreeing"
    #: Replace every slice of the propagated range (:func:`semisam.slices.merge_in_range`).
    REPLACE = "replace"
    #: Replace the prompted (key) slices only; every other slice keeps the segment's voxels (what a
    #: propagation with ``across_slices=False`` is written by: it answers nothing else).
    KEY_SLICES = "key_slices"


@dataclass(frozen=True)
class MergeOutcome:
    """What :func:`write_propagation` did.

    Attributes:
        mask: the merged ``(Z, Y, X)`` uint8 (0/1) mask.
        replaced: slice indices along the axis whose voxels were taken from the new answer, ascending.
        kept: slices inside ``lo..hi`` that kept the segment's voxels because the new answer agreed with
            them or lay beyond an agreeing slice, ascending.
    """

    mask: np.ndarray
    replaced: list[int]
    kept: list[int]


def slice_agrees(a: np.ndarray, b: np.ndarray, agree_dice: float = AGREE_DICE) -> bool:
    """``True`` when two 2D masks are both empty or their Dice is at least ``agree_dice``."""
    return dice(a, b) >= agree_dice


def _checked(current, new, axis: str | int, lo: int, hi: int, key_slices: Iterable[int]):
    """``(current, new, sorted key slices inside lo..hi)`` after checking the two masks share a shape and
    ``lo..hi`` is a range of their slices along ``axis`` (``ValueError`` otherwise)."""
    current, new = np.asarray(current), np.asarray(new)
    if current.shape != new.shape:
        raise ValueError(f"the segment {current.shape} and the propagation {new.shape} differ in shape")
    n = current.shape[axis_index(axis)]
    if not 0 <= lo <= hi < n:
        raise ValueError(f"slice range {lo}..{hi} is not inside 0..{n - 1}")
    return current, new, sorted({int(k) for k in key_slices if lo <= int(k) <= hi})


def _write_slices(current: np.ndarray, new: np.ndarray, axis: str | int, slices: Iterable[int]) -> np.ndarray:
    """A uint8 (0/1) copy of ``current`` with ``slices`` along ``axis`` taken from ``new``."""
    out = np.array(current > 0, dtype=np.uint8)
    for s in slices:
        put_slice(out, axis, s, (take_slice(new, axis, s) > 0).astype(np.uint8))
    return out


def merge_keep_agreeing(
    current: np.ndarray,
    new: np.ndarray,
    axis: str | int,
    lo: int,
    hi: int,
    key_slices: Iterable[int],
    agree_dice: float = AGREE_DICE,
) -> MergeOutcome:
    """Write ``new`` into ``current`` inside ``lo..hi`` by the keep-agreeing rule (module docstring).

    Args:
        current: the segment's mask ``(Z, Y, X)`` (> 0 = inside).
        new: the propagation's answer ``(Z, Y, X)`` on the same grid.
        axis: slice axis (``"axial"``/``"coronal"``/``"sagittal"`` or 0/1/2).
        lo, hi: inclusive slice range of the propagation along ``axis``.
        key_slices: the prompted slices (those outside ``lo..hi`` are ignored). With none inside the
            range every slice of it is replaced (there is nowhere to walk from).
        agree_dice: 2D Dice at which a slice agrees.

    Raises:
        ValueError: the two masks differ in shape, or ``lo..hi`` is not a range of slices.
    """
    current, new, keys = _checked(current, new, axis, lo, hi, key_slices)
    everything = list(range(lo, hi + 1))
    if not keys or not any(take_slice(current, axis, s).any() for s in everything):
        return MergeOutcome(merge_in_range(current, new, axis, lo, hi), everything, [])
    key_set = set(keys)
    replace = set(keys)
    for k in keys:
        for step in (-1, 1):
            s = k + step
            while lo <= s <= hi and s not in key_set:
                if slice_agrees(take_slice(current, axis, s), take_slice(new, axis, s), agree_dice):
                    break
                replace.add(s)
                s += step
    replaced = sorted(replace)
    return MergeOutcome(
        _write_slices(current, new, axis, replaced), replaced, [s for s in everything if s not in replace]
    )


def merge_key_slices(
    current: np.ndarray, new: np.ndarray, axis: str | int, lo: int, hi: int, key_slices: Iterable[int]
) -> MergeOutcome:
    """Write ``new`` into ``current`` on the key slices inside ``lo..hi`` only (rule ``key_slices``).

    Raises:
        ValueError: the two masks differ in shape, or ``lo..hi`` is not a range of slices.
    """
    current, new, keys = _checked(current, new, axis, lo, hi, key_slices)
    key_set = set(keys)
    kept = [s for s in range(lo, hi + 1) if s not in key_set]
    return MergeOutcome(_write_slices(current, new, axis, keys), keys, kept)


def propagated_range(
    slices: Iterable[int], key_slices: Iterable[int], previous: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Inclusive ``(lo, hi)`` slice range a propagation is written into: from the first to the last slice
    that the new mask (``slices``: where it is non-empty), a key slice, or this session's previous
    propagation into the same segment (``previous``: its range) touched. Raises ``ValueError`` when
    all are empty."""
    touched = {int(s) for s in slices} | {int(k) for k in key_slices}
    if previous is not None:
        touched |= {int(previous[0]), int(previous[1])}
    if not touched:
        raise ValueError("a propagation with no key slice and no mask has no range to write")
    return min(touched), max(touched)


def write_propagation(
    current: np.ndarray,
    new: np.ndarray,
    axis: str | int,
    lo: int,
    hi: int,
    key_slices: Iterable[int],
    rule: MergeRule | str = MergeRule.KEEP_AGREEING,
    agree_dice: float = AGREE_DICE,
) -> MergeOutcome:
    """Write a propagation's answer ``new`` into the segment ``current`` inside ``lo..hi`` by ``rule``.

    The one place that decides it, for SemiSAMSegment's Propagate and the simulated annotator alike.
    """
    rule = MergeRule(rule)
    if rule is MergeRule.REPLACE:
        return MergeOutcome(merge_in_range(current, new, axis, lo, hi), list(range(lo, hi + 1)), [])
    if rule is MergeRule.KEY_SLICES:
        return merge_key_slices(current, new, axis, lo, hi, key_slices)
    return merge_keep_agreeing(current, new, axis, lo, hi, key_slices, agree_dice)
