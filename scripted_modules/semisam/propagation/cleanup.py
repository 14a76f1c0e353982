"""3D connectivity clean-up: keep the parts of a propagated mask that the prompts support."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: 18-connectivity (faces and edges): with thick slices a lesion's masks on neighbouring slices overlap
#: in-plane, so corner-only contacts (26-connectivity) would join unrelated blobs.
STRUCTURE = ndi.generate_binary_structure(3, 2)


def keep_supported(mask: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Keep the 3D connected components of ``mask`` that touch ``support``.

    Args:
        mask: ``(Z, Y, X)`` binary.
        support: ``(Z, Y, X)`` bool; the key slices' masks (what the user's prompts produced directly).

    Returns:
        ``(Z, Y, X)`` uint8. When ``support`` is empty the mask is returned unchanged.
    """
    m = np.asarray(mask) > 0
    sup = np.asarray(support, bool)
    if not sup.any() or not m.any():
        return m.astype(np.uint8)
    labels, n = ndi.label(m, structure=STRUCTURE)
    keep = np.unique(labels[sup & m])
    keep = keep[keep > 0]
    return np.isin(labels, keep).astype(np.uint8)
