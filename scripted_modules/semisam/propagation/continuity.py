"""Area continuity along a track beyond the outermost key slice: a structure that was ending does not grow
again.

For a convex body the square root of its cross-section area is a concave function of the slice position
(Brunn-Minkowski), so along a track leaving the key slice the area may first rise, then falls for good:
once it has fallen, a marked rise means the track has reached *another* structure through a neck (on 1 mm
T1 a single-box thalamus track fell from 599 to 445 px at the thalamus' last slice, then rose to 719 px in
the midbrain and followed it for 44 slices, every step passing the agreement and intensity tests). Deep
grey-matter structures and most lesions are roughly convex; the rule only looks at the area, in a
three-slice running median, so a single odd answer does not trigger it. Beyond the outermost of several
key slices spread over the structure its largest cross-section is already behind the track, so there a
rise without a fall first ends it too (two whole-head thalamus subjects, 3 boxes: a lane grew from the
key slice's 213 px to 1,139 px in four slices below the thalamus, whose own last slice held 117 px).
"""

from __future__ import annotations

import numpy as np

#: The rebound factor (``PropagationParams.rebound_ratio``, on by default; 0 turns the rule off). A rise of
#: the running-median area to this many times its lowest value since the track's largest one ends the
#: track: the equivalent radius grew by 22 % (sqrt 1.5) after shrinking, far above the 5-10 %
#: slice-to-slice noise of the model's masks on the development structures.
REBOUND_RATIO = 1.5


def rebound_cut(
    areas: list[int] | np.ndarray, ratio: float = REBOUND_RATIO, past_peak: bool = False
) -> int | None:
    """Where a track's area profile rebounds: ``None``, or the index (into ``areas``) of the slice with
    the smallest area between the track's largest area and the rebound; the slices after it belong to
    another structure.

    Args:
        areas: mask areas (px) along the track, key slice first, in propagation order.
        ratio: rebound factor (:data:`REBOUND_RATIO`).
        past_peak: the key slice lies at or beyond the structure's largest cross-section in the track's
            direction (the outermost of several key slices spread over it), so the area may only fall
            from there: a rise without a fall first is a rebound too.
    """
    a = np.asarray(areas, dtype=float)
    if len(a) < 4:
        return None
    med = np.array([np.median(a[max(0, i - 2) : i + 1]) for i in range(len(a))])
    peak = 0
    low = 0
    for i in range(1, len(med)):
        if med[i] >= med[peak] and low == peak and not past_peak:  # still rising: no fall yet
            peak = low = i
            continue
        if med[i] < med[low]:
            low = i
        if (low != peak or past_peak) and med[i] >= ratio * max(med[low], 1.0):
            lo = max(peak, low - 2)
            if low == peak:  # past the peak, no fall to cut at: keep every slice not yet grown
                return int(max(j for j in range(lo, i) if j == lo or a[j] < ratio * max(med[low], 1.0)))
            return int(lo + np.argmin(a[lo : low + 1]))  # the raw minimum near the median's minimum
    return None
