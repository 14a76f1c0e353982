"""Where a radiologist clicks to correct a slice: the deepest pixel of the largest error.

One rule for every simulated click: the annotator's correction points (:mod:`semisam.loop.annotator`),
the clicks an adapted generalist is taught to answer (:mod:`semisam.adapt`) and the one-click Dice it is
validated on, so what adaptation learns is what the loop and the user ask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def error_point(mask2d: np.ndarray, truth2d: np.ndarray) -> tuple[tuple[int, int], bool] | None:
    """Where a radiologist clicks on a wrong slice: ``((column, row), positive)`` or ``None`` if right.

    The largest connected region (8-connectivity) of missed pixels (a positive point) or of extra
    pixels (a negative point); the point is the region's pixel farthest from its border.
    """
    m, t = np.asarray(mask2d, bool), np.asarray(truth2d, bool)
    best: tuple[int, np.ndarray, bool] | None = None
    for region, positive in ((t & ~m, True), (m & ~t, False)):
        if not region.any():
            continue
        comp, n = ndimage.label(region, structure=np.ones((3, 3), bool))
        sizes = np.bincount(comp.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        if best is None or sizes[k - 1] > best[0]:
            best = (int(sizes[k - 1]), comp == k, positive)
    if best is None:
        return None
    inside = np.pad(best[1], 1)  # a region touching the slice edge still has a border there
    depth = ndimage.distance_transform_edt(inside)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return (int(col), int(row)), best[2]
