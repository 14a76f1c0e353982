"""A key slice's answer that sits on a brighter rim instead of the structure the box was drawn around.

Next to an enhancing border (dura, a capsule, a vessel wall) a box prompt can return the bright border
rather than the darker lesion it surrounds. The box itself tells which is meant: a user centres the box on
the structure, so for a compact structure its centre is structure. An answer is *rim-like* when both

* it misses the box's centre (the 3 x 3 pixels there), and
* it is brighter than the rest of the box: its median intensity is above the 75th percentile of the box's
  pixels outside it (the bright quarter of the box: the rim, not the tissue it borders).

Deep grey matter in T1 is darker than the white matter around it, so elongated structures whose box
centre falls outside them (caudate) do not pass the second test. A rim-like answer is asked again with
a positive point at the box centre and a negative point on the rim; the new answer replaces it when it
covers the centre and is not itself rim-like.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: The bright quarter of the box: a mask whose median lies above this percentile of the box's other
#: pixels sits on the brightest tissue in the box.
RIM_PERCENTILE = 75.0


def box_centre(box) -> tuple[int, int]:
    """``(x, y)`` integer centre of an inclusive ``(x0, y0, x1, y1)`` box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2))


def rim_like(image: np.ndarray, mask: np.ndarray, box) -> bool:
    """Whether ``mask`` ``(H, W)`` on ``image`` ``(H, W)`` in [0, 1] sits on a brighter rim inside ``box``
    (see the module docstring)."""
    m = np.asarray(mask, bool)
    if not m.any():
        return False
    h, w = m.shape
    cx, cy = box_centre(box)
    centre = m[max(0, cy - 1) : min(h, cy + 2), max(0, cx - 1) : min(w, cx + 2)]
    if centre.any():
        return False
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    inside = np.zeros_like(m)
    inside[max(0, y0) : min(h, y1 + 1), max(0, x0) : min(w, x1 + 1)] = True
    rest = image[inside & ~m]
    if rest.size == 0:
        return False
    return float(np.median(image[m])) > float(np.percentile(rest, RIM_PERCENTILE))


def rim_points(mask: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """``(points (2, 2) as (x, y), labels (2,))``: positive at the box centre, negative at the rim
    mask's deepest pixel."""
    cx, cy = box_centre(box)
    d = ndi.distance_transform_edt(np.asarray(mask, bool))
    ry, rx = np.unravel_index(int(np.argmax(d)), d.shape)
    return np.array([(cx, cy), (rx, ry)], np.float32), np.array([1, 0], np.int64)
